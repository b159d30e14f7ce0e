"""Cursor pagination of the executions list: stable, no COUNT, cheap on large tables."""

from __future__ import annotations

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination

from .filters import to_utc


class ExecutionCursorPagination(CursorPagination):
    """Newest first on ``(created_at, id)``, served by the ``(created_at, id)`` index."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request) -> Cursor | None:
        cursor = super().decode_cursor(request)
        # The position is compared with created_at: refuse one that is not a date-time
        # instead of letting the database query fail.
        if cursor is not None and cursor.position is not None:
            try:
                position = parse_datetime(cursor.position)
            except ValueError:
                position = None
            if position is None:
                raise NotFound(self.invalid_cursor_message)
            # As UTC: PostgreSQL refuses UTC offsets beyond 15:59 that ISO 8601 accepts.
            cursor = cursor._replace(position=to_utc(position).isoformat())
        return cursor
