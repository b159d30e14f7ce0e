"""DRF's browsable API, offered to logged-in staff only."""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer


class StaffBrowsableNegotiation(DefaultContentNegotiation):
    """Offers the browsable API (HTML) to authenticated staff; everyone else, and
    every client that does not ask for HTML, gets JSON."""

    def select_renderer(self, request: Any, renderers: list, format_suffix: str | None = None):
        user = getattr(request, "user", None)
        if not (user is not None and user.is_authenticated and user.is_staff):
            renderers = [r for r in renderers if not isinstance(r, BrowsableAPIRenderer)]
        return super().select_renderer(request, renderers, format_suffix)
