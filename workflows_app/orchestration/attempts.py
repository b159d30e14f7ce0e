"""What every attempt of a step handler produces, built in one place: its log record,
the stored form of its result (or the refusal), and its error with the location it
ran at.

The orchestrator and the ``for_each`` loop (one record per iteration) both use these.
"""

from __future__ import annotations

from typing import Any

from . import codec
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
        step_id=node.step_id,
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


def storable(what: str, *values: Any) -> list[Any]:
    """The stored forms of ``values`` (see ``codec``), or the error that refuses them.

    Raises ``NonSerializableCheckpointError`` (naming ``what`` and the path of the bad
    value) or ``PayloadTooLargeError``; ``what`` names the values, e.g. ``"The output
    of step charge"``. The same object given twice is converted and counted once.
    """
    out: list[Any] = []
    size = 0
    for value in values:
        earlier = next((i for i, other in enumerate(values[: len(out)]) if other is value), None)
        if earlier is not None:
            out.append(out[earlier])
            continue
        try:
            stored = codec.to_json(value)
        except codec.UnstorableValueError as exc:
            raise NonSerializableCheckpointError(f"{what} cannot be stored: {exc}") from None
        out.append(stored)
        if runtime.max_payload_bytes:
            size += len(codec.dumps(stored).encode())
    limit = runtime.max_payload_bytes
    if limit and size > limit:
        raise PayloadTooLargeError(
            f"{what} is {size} bytes, more than WORKFLOWS['MAX_PAYLOAD_BYTES'] ({limit})."
        )
    return out


def locate_error(error: Any, where: str) -> dict:
    """``error`` serialised, with ``where`` (workflow -> step ...) added to its stack."""
    data = serialize_error(error)
    location = f"\n    at [{where}]"
    if isinstance(data, ErrorDetail):
        data.append_to_stack(location)  # keeps the traceback unformatted
    else:
        data["stack"] = (data.get("stack") or "") + location
    return data
