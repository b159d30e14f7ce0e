"""What a step handler may return: an output with its compensation input, or a skip."""

from __future__ import annotations

from typing import Any

from .errors import PermanentStepFailureError

_UNSET: Any = object()


class StepResponse:
    """A step's output and the input its compensation will receive (default: the output)."""

    __slots__ = ("compensate_input", "output")

    def __init__(self, output: Any = None, compensate_input: Any = _UNSET):
        self.output = output
        self.compensate_input = output if compensate_input is _UNSET else compensate_input

    @staticmethod
    def permanent_failure(message: str = "Permanent failure", compensate_input: Any = None):
        """Fail the step now, skipping retries; compensation receives ``compensate_input``."""
        raise PermanentStepFailureError(message, compensate_input)

    @staticmethod
    def skip() -> SkipStepResponse:
        """Mark the step skipped: nothing is stored and the steps after it run."""
        return SKIP

    def __repr__(self) -> str:
        return f"StepResponse({self.output!r}, compensate_input={self.compensate_input!r})"


class SkipStepResponse:
    """Returned by ``StepResponse.skip()``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "StepResponse.skip()"


SKIP = SkipStepResponse()
