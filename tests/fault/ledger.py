"""The verdict of a fault-injection scenario, from the side-effect lines the step bodies
wrote and from the stored executions.

A *fault* is what the test did to the system (a kill, terminated connections, a broker
stopped), with the time it happened and the processes it hit (``None``: all of them).
A step body may run again only when a fault interrupted its earlier run before its
outcome was stored; the verdict counts everything else as a defect:

- ``stuck``: runs not finished by the deadline; ``lost``: runs with no stored row;
- ``completed_reruns``: a body that started again after its attempt was stored
  COMPLETED (invoke or compensation);
- ``uncompensated``: a step of a reverted run whose invoke completed and whose
  compensation never ran to its end; ``stray_compensations``: a compensation in a run
  that ended ``done``;
- ``duplicate_effects``: bodies that ran to their end more than once for one
  (transaction, step, invoke|compensate); ``unexplained`` are those with no fault in
  between, which a test asserts to be none.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from django.db.models import Count

from tests.fault.faultapp.workflows import EFFECTS_FILE
from workflows_app.models import StepExecution, WorkflowExecution
from workflows_app.status import FINISHED_STATES

REPORT_ENV = "FAULT_REPORT"
# Stored attempt times come from a millisecond clock: a body that starts and ends
# within one millisecond may start "after" its stored end by less than this.
CLOCK_SLACK = 0.005


@dataclass(frozen=True)
class Effect:
    """One line of ``effects.txt``."""

    tx: str
    step: str
    kind: str
    event: str
    attempt: int
    pid: int
    at: float


@dataclass(frozen=True)
class Fault:
    """Something the test did to the running system."""

    at: float
    what: str
    pids: frozenset[int] | None = None

    def hits(self, pid: int) -> bool:
        return self.pids is None or pid in self.pids


def read_effects(directory: Path) -> list[Effect]:
    path = directory / EFFECTS_FILE
    if not path.exists():
        return []
    effects = []
    for line in path.read_text().splitlines():
        tx, step, kind, event, attempt, pid, at = line.split()
        effects.append(Effect(tx, step, kind, event, int(attempt), int(pid), float(at)))
    return effects


def ends(effects: list[Effect]) -> Counter:
    """How often each (transaction, step, invoke|compensate) body ran to its end."""
    return Counter((e.tx, e.step, e.kind) for e in effects if e.event == "end")


def in_flight(effects: list[Effect]) -> list[Effect]:
    """The bodies that started and have not ended: per body and process, the last line
    is a start (a body whose process was killed stays in this list)."""
    last: dict[tuple[str, str, str, int], Effect] = {}
    for effect in effects:
        last[(effect.tx, effect.step, effect.kind, effect.pid)] = effect
    return [effect for effect in last.values() if effect.event == "start"]


@dataclass
class Verdict:
    scenario: str
    runs: int
    states: dict[str, int] = field(default_factory=dict)
    stuck: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    completed_reruns: list[tuple[str, str, str]] = field(default_factory=list)
    stored_twice: list[dict] = field(default_factory=list)
    uncompensated: list[tuple[str, str]] = field(default_factory=list)
    stray_compensations: list[tuple[str, str]] = field(default_factory=list)
    duplicate_effects: int = 0
    unexplained: list[tuple[str, str, str]] = field(default_factory=list)
    interrupted: int = 0
    faults: int = 0
    seconds: float = 0.0

    @property
    def finished(self) -> int:
        return self.runs - len(self.stuck) - len(self.lost)

    def line(self) -> str:
        return (
            f"{self.scenario}: runs={self.runs} finished={self.finished} "
            f"stuck={len(self.stuck)} lost={len(self.lost)} states={self.states} "
            f"completed_steps_rerun={len(self.completed_reruns)} "
            f"stored_twice={len(self.stored_twice)} "
            f"uncompensated={len(self.uncompensated)} "
            f"stray_compensations={len(self.stray_compensations)} "
            f"duplicate_side_effects={self.duplicate_effects} "
            f"(unexplained={len(self.unexplained)}) interrupted_bodies={self.interrupted} "
            f"faults={self.faults} seconds={self.seconds:.0f}"
        )

    def publish(self) -> None:
        """Print the verdict (pytest shows it with -s or on failure) and append it to
        the file named by ``FAULT_REPORT``, if set."""
        print(self.line())
        target = os.environ.get(REPORT_ENV)
        if target:
            with open(target, "a") as handle:
                handle.write(json.dumps({"line": self.line(), **self.__dict__}) + "\n")


def _short(step_id: str) -> str:
    return step_id.rsplit("-", 1)[-1]


def audit(
    scenario: str,
    workflow_id: str,
    transaction_ids: list[str],
    effects: list[Effect],
    faults: list[Fault],
    seconds: float,
) -> Verdict:
    """Judge the runs ``transaction_ids`` of ``workflow_id`` (and their nested children)."""
    verdict = Verdict(scenario, len(transaction_ids), faults=len(faults), seconds=seconds)
    rows = {
        row.transaction_id: row
        for row in WorkflowExecution.objects.filter(
            workflow_id=workflow_id, transaction_id__in=transaction_ids
        )
    }
    for tx in transaction_ids:
        row = rows.get(tx)
        if row is None:
            verdict.lost.append(tx)
        elif row.state not in FINISHED_STATES:
            verdict.stuck.append(f"{tx} ({row.state}, owner {row.owner or '-'})")
        else:
            key = f"{row.state}/{row.status}"
            verdict.states[key] = verdict.states.get(key, 0) + 1

    mine = {effect.tx for effect in effects}
    steps = StepExecution.objects.filter(execution__transaction_id__in=mine)
    completed_at: dict[tuple[str, str, str], float] = {}
    for tx, step_id, kind, ended in steps.filter(status="COMPLETED").values_list(
        "execution__transaction_id", "step_id", "handler_type", "ended_at"
    ):
        if ended is not None:
            completed_at[(tx, _short(step_id), kind)] = ended.timestamp()
    _check_compensations(verdict, rows, bodies_of(effects), completed_at)
    verdict.stored_twice = list(
        steps.filter(status="COMPLETED")
        .values("execution__transaction_id", "step_id", "handler_type", "iteration")
        .annotate(rows=Count("id"))
        .filter(rows__gt=1)
    )

    for key, lines in bodies_of(effects).items():
        lines.sort(key=lambda e: e.at)
        starts = [e for e in lines if e.event == "start"]
        ends = [e for e in lines if e.event == "end"]
        done = completed_at.get(key)
        if done is not None and any(start.at > done + CLOCK_SLACK for start in starts):
            verdict.completed_reruns.append(key)
        verdict.interrupted += _interrupted(starts, ends)
        if len(ends) > 1:
            verdict.duplicate_effects += len(ends) - 1
            for end in ends[:-1]:
                if not _explained(end, starts, faults):
                    verdict.unexplained.append(key)
    return verdict


def bodies_of(effects: list[Effect]) -> dict[tuple[str, str, str], list[Effect]]:
    """The lines of each (transaction, step, invoke|compensate)."""
    bodies: dict[tuple[str, str, str], list[Effect]] = defaultdict(list)
    for effect in effects:
        bodies[(effect.tx, effect.step, effect.kind)].append(effect)
    return bodies


def _check_compensations(
    verdict: Verdict,
    rows: dict[str, WorkflowExecution],
    bodies: dict[tuple[str, str, str], list[Effect]],
    completed_at: dict[tuple[str, str, str], float],
) -> None:
    for tx, step, kind in list(bodies):
        row = rows.get(tx)
        if row is None or kind != "invoke" or (tx, step, "invoke") not in completed_at:
            continue
        compensated = any(e.event == "end" for e in bodies.get((tx, step, "compensate"), []))
        if row.state == "reverted" and not compensated:
            verdict.uncompensated.append((tx, step))
        if row.state == "done" and (tx, step, "compensate") in bodies:
            verdict.stray_compensations.append((tx, step))


def _interrupted(starts: list[Effect], ends: list[Effect]) -> int:
    """Starts that no end of the same process follows before that process starts again."""
    count = 0
    for start in starts:
        later = [e for e in (*starts, *ends) if e.pid == start.pid and e.at > start.at]
        nxt = min(later, key=lambda e: e.at, default=None)
        if nxt is None or nxt.event == "start":
            count += 1
    return count


def _explained(end: Effect, starts: list[Effect], faults: list[Fault]) -> bool:
    """A body that ended and ran again is explained by a fault that hit its process
    between the start of that body and the start of the next one."""
    began = max((s.at for s in starts if s.pid == end.pid and s.at <= end.at), default=end.at)
    rerun = min((s.at for s in starts if s.at > end.at), default=float("inf"))
    return any(began <= fault.at <= rerun and fault.hits(end.pid) for fault in faults)
