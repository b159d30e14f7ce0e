"""The judge of the fault scenarios on made-up side effects and rows: what it must
count as a defect, and what a fault explains (runs on every database)."""

from __future__ import annotations

import datetime

import pytest

from tests.fault.ledger import Effect, Fault, audit, in_flight
from workflows_app.models import StepExecution, WorkflowExecution

pytestmark = pytest.mark.django_db

T0 = 1_800_000_000.0


def body(tx: str, step: str, pid: int, start: float, end: float | None, kind: str = "invoke"):
    lines = [Effect(tx, step, kind, "start", 1, pid, T0 + start)]
    if end is not None:
        lines.append(Effect(tx, step, kind, "end", 1, pid, T0 + end))
    return lines


def stored(tx: str, state: str, steps: dict[tuple[str, str], float]) -> None:
    """A finished execution of workflow ``w`` whose (step, kind) attempts completed at
    the given offsets."""
    execution = WorkflowExecution.objects.create(
        workflow_id="w", transaction_id=tx, run_id="r", state=state, status="COMPLETED"
    )
    for (step, kind), ended in steps.items():
        StepExecution.objects.create(
            execution=execution,
            step_id=f"w-{step}",
            step_path=f"_root.w-{step}",
            step_name=step,
            handler_type=kind,
            status="COMPLETED",
            ended_at=datetime.datetime.fromtimestamp(T0 + ended, tz=datetime.UTC),
        )


def test_bodies_in_flight_are_told_apart_per_thread_of_one_process():
    effects = [*body("t", "busy", 7, 0, None), *body("t", "ask", 7, 1, 2)]
    assert [(e.step, e.event) for e in in_flight(effects)] == [("busy", "start")]


def test_a_clean_run_passes():
    stored("t", "done", {("a", "invoke"): 1.5, ("b", "invoke"): 3.5})
    effects = [*body("t", "a", 7, 0, 1), *body("t", "b", 7, 2, 3)]
    verdict = audit("clean", "w", ["t"], effects, [], 1.0)
    assert verdict.finished == 1
    assert verdict.states == {"done/COMPLETED": 1}
    assert (verdict.completed_reruns, verdict.unexplained, verdict.duplicate_effects) == ([], [], 0)


def test_missing_and_unfinished_runs_are_lost_and_stuck():
    WorkflowExecution.objects.create(workflow_id="w", transaction_id="t", run_id="r")
    verdict = audit("stuck", "w", ["t", "gone"], [], [], 1.0)
    assert verdict.lost == ["gone"]
    assert [s.split()[0] for s in verdict.stuck] == ["t"]
    assert verdict.finished == 0


def test_a_body_started_after_its_completion_was_stored_is_a_completed_rerun():
    stored("t", "done", {("a", "invoke"): 1.5})
    effects = [*body("t", "a", 7, 0, 1), *body("t", "a", 8, 2, 3)]
    verdict = audit("rerun", "w", ["t"], effects, [Fault(T0 + 1.8, "kill", frozenset({7}))], 1.0)
    assert verdict.completed_reruns == [("t", "a", "invoke")]
    assert verdict.duplicate_effects == 1


def test_a_second_end_is_explained_only_by_a_fault_on_that_process_in_between():
    stored("t", "done", {("a", "invoke"): 3.5})
    effects = [*body("t", "a", 7, 0, 1), *body("t", "a", 8, 2, 3)]
    unexplained = audit("dup", "w", ["t"], effects, [], 1.0)
    elsewhere = audit("dup", "w", ["t"], effects, [Fault(T0 + 1.5, "kill", frozenset({9}))], 1.0)
    too_late = audit("dup", "w", ["t"], effects, [Fault(T0 + 2.5, "kill", None)], 1.0)
    explained = audit("dup", "w", ["t"], effects, [Fault(T0 + 1.5, "kill", frozenset({7}))], 1.0)
    assert unexplained.unexplained == elsewhere.unexplained == too_late.unexplained
    assert unexplained.unexplained == [("t", "a", "invoke")]
    assert explained.unexplained == []
    assert explained.duplicate_effects == 1


def test_a_killed_body_run_again_is_interrupted_not_duplicated():
    stored("t", "done", {("a", "invoke"): 3.5})
    effects = [*body("t", "a", 7, 0, None), *body("t", "a", 8, 2, 3)]
    verdict = audit("kill", "w", ["t"], effects, [Fault(T0 + 1, "kill", frozenset({7}))], 1.0)
    assert verdict.interrupted == 1
    assert (verdict.duplicate_effects, verdict.unexplained, verdict.completed_reruns) == (0, [], [])


def test_compensations_are_checked_against_the_final_state():
    stored("rev", "reverted", {("a", "invoke"): 1.5, ("b", "invoke"): 2.5})
    stored("ok", "done", {("a", "invoke"): 1.5})
    effects = [
        *body("rev", "a", 7, 0, 1),
        *body("rev", "b", 7, 2, 2.2),
        *body("rev", "b", 7, 3, 3.1, kind="compensate"),
        *body("ok", "a", 7, 0, 1),
        *body("ok", "a", 7, 2, 2.1, kind="compensate"),
    ]
    verdict = audit("comp", "w", ["rev", "ok"], effects, [], 1.0)
    assert verdict.uncompensated == [("rev", "a")]
    assert verdict.stray_compensations == [("ok", "a")]
