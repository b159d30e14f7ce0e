"""Small utilities shared by the SDK tests (unique names, flow lookups, recording steps)."""

from __future__ import annotations

import threading
import time

from tests.support import uname as uname
from workflows_app.sdk import StepResponse, create_step


def flow_steps(transaction) -> dict[str, dict]:
    """Map the last segment of each step id to its flow entry (the root excluded)."""
    steps = transaction.get_flow()["steps"]
    return {sid.rsplit(".", 1)[-1]: data for sid, data in steps.items() if sid != "_root"}


def invoke_state(transaction, name: str) -> tuple[str, str]:
    step = flow_steps(transaction)[name]
    return step["invoke"]["state"], step["invoke"]["status"]


def compensate_state(transaction, name: str) -> tuple[str, str]:
    step = flow_steps(transaction)[name]
    return step["compensate"]["state"], step["compensate"]["status"]


def error_names(errors) -> list[str]:
    return [e.error["name"] for e in errors]


class Recorder:
    """Thread-safe log of (kind, step, payload) tuples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple] = []

    def add(self, *entry) -> None:
        with self._lock:
            self.entries.append(entry)

    def names(self, kind: str) -> list[str]:
        return [e[1] for e in self.entries if e[0] == kind]

    def payloads(self, kind: str) -> dict[str, object]:
        return {e[1]: e[2] for e in self.entries if e[0] == kind}

    def most_at_once(self, began: str = "start", ended: str = "end") -> int:
        """The most steps that were running at one moment, from their logged start
        and end times: concurrency shown without timing the whole run (which a
        loaded machine slows)."""
        starts, ends = self.payloads(began), self.payloads(ended)
        spans = [(starts[name], ends[name]) for name in starts]
        return max(sum(1 for s, e in spans if s <= moment < e) for moment, _ in spans)


def recording_step(
    name: str,
    log: Recorder,
    *,
    fail: bool = False,
    output=None,
    compensate_input=None,
    compensate: bool = True,
    sleep: float = 0.0,
    compensate_sleep: float = 0.0,
    **options,
):
    """A step that logs its invoke/compensate calls; fails with ValueError when asked."""

    def invoke(inp, ctx):
        log.add("invoke", name, inp)
        if sleep:
            time.sleep(sleep)
        if fail:
            raise ValueError(f"{name} failed")
        out = name if output is None else output
        if compensate_input is not None:
            return StepResponse(out, compensate_input)
        return StepResponse(out)

    def undo(cinput, ctx):
        log.add("compensate", name, cinput)
        if compensate_sleep:
            log.add("compensate began", name, time.perf_counter())
            time.sleep(compensate_sleep)
            log.add("compensate ended", name, time.perf_counter())

    return create_step(name, invoke, undo if compensate else None, **options)
