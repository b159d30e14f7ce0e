"""Server-Sent Events of one execution: ``GET /api/workflow-executions/<id>/events/``.

A stream holds a server thread for as long as it lasts (at most ``timeout`` seconds),
so the number of streams a user may keep open at once is capped
(``WORKFLOWS["API_EVENT_STREAMS_PER_USER"]``, per process; more answer 429). Under a
WSGI server a closed connection is only noticed when the next write fails, so the
stream writes a keep-alive comment every few seconds. Deployment advice is in the
API documentation: serve the API under ASGI, or give event streams their own worker
pool.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

from django.utils.translation import gettext as _
from rest_framework.exceptions import Throttled
from rest_framework.renderers import BaseRenderer

from ..conf import workflows_settings
from ..engine import workflow_engine
from ..models import WorkflowExecution
from ..presentation import context_errors
from ..status import FINISHED_STATES
from .serializers import jsonable, redacted


class StreamSlots:
    """How many event streams each user has open in this process."""

    def __init__(self) -> None:
        self._open: dict[Any, int] = {}
        self._lock = threading.Lock()

    def take(self, user_key: Any) -> None:
        """Count one more stream for ``user_key``, or raise ``Throttled`` (429)."""
        limit = workflows_settings.API_EVENT_STREAMS_PER_USER
        with self._lock:
            current = self._open.get(user_key, 0)
            if current >= limit:
                raise Throttled(
                    detail=_(
                        "Too many event streams open (at most %(limit)d per user); close one "
                        "and try again."
                    )
                    % {"limit": limit}
                )
            self._open[user_key] = current + 1

    def give_back(self, user_key: Any) -> None:
        with self._lock:
            left = self._open.get(user_key, 0) - 1
            if left > 0:
                self._open[user_key] = left
            else:
                self._open.pop(user_key, None)

    def count(self, user_key: Any) -> int:
        with self._lock:
            return self._open.get(user_key, 0)


#: The process's stream counter.
stream_slots = StreamSlots()


class EventStreamRenderer(BaseRenderer):
    """Lets clients ask for ``text/event-stream``; errors become one ``error`` event."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return sse("error", data).encode()


def sse(event: str, data: Any) -> str:
    """One Server-Sent Events message."""
    return f"event: {event}\ndata: {json.dumps(jsonable(data), separators=(',', ':'))}\n\n"


class ExecutionEventStream:
    """The events of one execution's transaction, as ``text/event-stream`` chunks.

    Subscribes at creation (so nothing between the state check and the first read is
    lost) and unsubscribes when the stream ends or the response is closed. The stored
    row is polled as well, so a run finished by another process also ends the stream.
    """

    def __init__(
        self,
        execution: WorkflowExecution,
        *,
        max_seconds: float,
        keepalive_seconds: float,
        poll_seconds: float,
        user_key: Any = None,
    ) -> None:
        """Takes one of ``user_key``'s stream slots (429 when none is left) until
        :meth:`close`, which the response calls however the stream ends."""
        stream_slots.take(user_key)
        self.user_key = user_key
        self.holds_slot = True
        self.execution_id = execution.pk
        self.workflow_id = execution.workflow_id
        self.transaction_id = execution.transaction_id
        self.max_seconds = max_seconds
        self.keepalive_seconds = keepalive_seconds
        self.poll_seconds = poll_seconds
        self.events: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self.subscriber_id = f"workflows-api-events-{uuid4().hex}"
        self.subscribed = True
        workflow_engine.subscribe(
            self.workflow_id,
            self.events.put,
            transaction_id=self.transaction_id,
            subscriber_id=self.subscriber_id,
        )
        try:
            self.initial_state = self._state()
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[str]:
        return self._generate()

    def close(self) -> None:
        if self.subscribed:
            self.subscribed = False
            workflow_engine.unsubscribe(self.workflow_id, self.subscriber_id)
        if self.holds_slot:
            self.holds_slot = False
            stream_slots.give_back(self.user_key)

    def _state(self) -> str | None:
        return (
            workflow_engine.list_workflow_executions(filters={"id": self.execution_id})
            .values_list("state", flat=True)
            .first()
        )

    def _live(self, payload: dict) -> str:
        return sse(payload.get("event_type") or "message", redacted(self._with_id(payload)))

    def _with_id(self, payload: dict) -> dict:
        return {**payload, "execution_id": self.execution_id}

    def _final(self) -> str:
        """An ``on_finish`` event built from the stored row."""
        row = (
            workflow_engine.list_workflow_executions(filters={"id": self.execution_id})
            .values("state", "status", "output_payload", "error", "context")
            .first()
        )
        context = (row or {}).get("context")
        payload = {
            "event_type": "on_finish",
            "workflow_id": self.workflow_id,
            "transaction_id": self.transaction_id,
            "state": row["state"] if row else None,
            "status": row["status"] if row else None,
            "step": None,
            "response": None,
            "result": row["output_payload"] if row else None,
            "errors": context_errors(context),
            "error": row["error"] if row else None,
            "stored": True,
        }
        return sse("on_finish", redacted(self._with_id(payload)))

    def _drain(self, grace: float) -> Iterator[str]:
        """Send queued events; stop after ``on_finish``. Sets ``self.finished``."""
        while True:
            try:
                payload = self.events.get(timeout=grace) if grace else self.events.get_nowait()
            except queue.Empty:
                return
            yield self._live(payload)
            if payload.get("event_type") == "on_finish":
                self.finished = True
                return

    def _generate(self) -> Iterator[str]:
        self.finished = False
        try:
            yield f": events of {self.execution_id}\n\n"
            if self.initial_state is None or self.initial_state in FINISHED_STATES:
                yield from self._drain(0)
                if not self.finished:
                    yield self._final()
                return
            start = time.monotonic()
            deadline = start + self.max_seconds
            next_keepalive = start + self.keepalive_seconds
            next_poll = start + self.poll_seconds
            while True:
                now = time.monotonic()
                if now >= deadline:
                    yield sse(
                        "stream_timeout",
                        {"execution_id": self.execution_id, "seconds": self.max_seconds},
                    )
                    return
                wait = max(0.01, min(deadline, next_keepalive, next_poll) - now)
                try:
                    payload = self.events.get(timeout=wait)
                except queue.Empty:
                    payload = None
                if payload is not None:
                    yield self._live(payload)
                    if payload.get("event_type") == "on_finish":
                        return
                    continue
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + self.poll_seconds
                    state = self._state()
                    if state is None or state in FINISHED_STATES:
                        # Let an in-process on_finish that is on its way arrive first.
                        yield from self._drain(0.25)
                        if not self.finished:
                            yield self._final()
                        return
                if now >= next_keepalive:
                    next_keepalive = now + self.keepalive_seconds
                    yield ": keep-alive\n\n"
        finally:
            self.close()
