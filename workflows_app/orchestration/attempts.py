"""What every attempt of a step handler produces, built in one place: its log record,
the check that its result can be stored, and its error with the location it ran at.

The orchestrator and the ``for_each`` loop (one record per iteration) both use these.
"""

from __future__ import annotations

from typing import Any

from . import serialization
from .definition import StepNode
from .error_detail import ErrorDetail
from .errors import NonSerializableCheckpointError, PayloadTooLargeError, serialize_error
from .runtime import runtime
from .storage import AttemptRecord


def build_record(
    node: StepNode,
    handler_type: str,
    attempt: int,
    status: str,
    input: Any,
    started: float,
    ended: float,
    *,
    output: Any = None,
    compensate_input: Any = None,
    error: dict | None = None,
    operation: str | None = None,
    iteration: int = 0,
    total_items: int | None = None,
) -> AttemptRecord:
    """The log record of one attempt; ``started``/``ended`` are clock seconds (0: unknown)."""
    return AttemptRecord(
        step_index=node.index,
        step_id=node.action,
        step_path=node.id,
        handler_type=handler_type,
        attempt=attempt,
        status=status,
        input=input,
        output=output,
        compensate_input=compensate_input,
        error=error,
        started_at=int(started * 1000) if started else None,
        ended_at=int(ended * 1000) if ended else None,
        operation=node.operation if operation is None else operation,
        iteration=iteration,
        total_items=total_items,
    )


def check_storable(what: str, *values: Any) -> Exception | None:
    """The error that refuses (for good) values a stored run could not keep, or ``None``.

    ``what`` names them in the message, e.g. ``"The output of step charge"``; values
    that are the same object are measured once.
    """
    size = 0
    seen: list[Any] = []
    try:
        for value in values:
            if any(value is other for other in seen):
                continue
            seen.append(value)
            size += len(serialization.dumps(value).encode())
    except (TypeError, ValueError) as exc:
        return NonSerializableCheckpointError(
            f"{what} cannot be stored as JSON: {exc}. Workflow inputs and step outputs "
            "must be JSON-serialisable."
        )
    limit = runtime.max_payload_bytes
    if limit and size > limit:
        return PayloadTooLargeError(
            f"{what} is {size} bytes, more than WORKFLOWS['MAX_PAYLOAD_BYTES'] ({limit})."
        )
    return None


def locate_error(error: Any, where: str) -> dict:
    """``error`` serialised, with ``where`` (workflow -> step ...) added to its stack."""
    data = serialize_error(error)
    location = f"\n    at [{where}]"
    if isinstance(data, ErrorDetail):
        data.append_to_stack(location)  # keeps the traceback unformatted
    else:
        data["stack"] = (data.get("stack") or "") + location
    return data
