"""A nested child answered while its parent is busy with another branch (issue 16,
fault injection): the parent must take the child's outcome once it is free."""

from __future__ import annotations

import time

from tests.fault.faultapp.workflows import NESTED_CHILD, NESTED_PARENT
from tests.fault.ledger import ends, in_flight
from workflows_app.engine import workflow_engine
from workflows_app.models import WorkflowExecution
from workflows_app.orchestration import InvalidStepStateError, TransactionAlreadyStarted

from .scenario import SCENARIO_MARKS, Scenario, runs_per_scenario

pytestmark = SCENARIO_MARKS

BUSY_SECONDS = 4.0


def child_of(parent_transaction_id: str) -> str:
    return f"{NESTED_CHILD}-as-step-{parent_transaction_id}"


def test_a_nested_child_answered_while_its_parent_is_busy(fault_cluster, effects_dir):
    runs = runs_per_scenario()
    cluster = fault_cluster(Q_WORKERS="4")
    scenario = Scenario("nested-busy", NESTED_PARENT, effects_dir)
    parents = scenario.start(runs, long_step="busy", long=BUSY_SECONDS)
    answered: dict[str, float] = {}

    def answer_children_of_busy_parents() -> None:
        effects = scenario.effects()
        asked = {e.tx for e in effects if e.step == "ask" and e.event == "end"}
        for busy in in_flight(effects):
            parent = busy.tx
            if busy.step != "busy" or parent in answered or child_of(parent) not in asked:
                continue
            try:
                workflow_engine.set_step_success(
                    workflow_id=NESTED_CHILD,
                    transaction_id=child_of(parent),
                    step_id=f"{NESTED_CHILD}-ask",
                    response={"answered": parent},
                )
            except (InvalidStepStateError, TransactionAlreadyStarted):
                # The worker is still storing the child's wait: answer on the next poll.
                continue
            answered[parent] = time.time()

    verdict = scenario.finish(
        {"done/COMPLETED": runs}, answer_children_of_busy_parents, live=[cluster]
    )
    assert sorted(answered) == parents, verdict.line()
    effects = scenario.effects()
    busy_ended = {e.tx: e.at for e in effects if e.step == "busy" and e.event == "end"}
    # Every child was answered while its parent's other branch still ran.
    assert [p for p in parents if answered[p] >= busy_ended[p]] == [], verdict.line()
    counts = ends(effects)
    for parent in parents:
        assert counts[(child_of(parent), "ask", "invoke")] == 1
        assert counts[(parent, "busy", "invoke")] == 1
        assert counts[(parent, "join", "invoke")] == 1
    children = WorkflowExecution.objects.filter(
        workflow_id=NESTED_CHILD, transaction_id__in=[child_of(p) for p in parents]
    )
    assert sorted(children.values_list("state", flat=True)) == ["done"] * runs
    outputs = WorkflowExecution.objects.filter(
        workflow_id=NESTED_PARENT, transaction_id__in=parents
    ).values_list("transaction_id", "output_payload")
    assert {tx: out["answer"] for tx, out in outputs} == {p: {"answered": p} for p in parents}
