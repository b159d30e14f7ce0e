"""Cancel of a run while a worker executes its long step (issue 16, fault injection):
the request is recorded, the worker stops at the next step boundary and compensates."""

from __future__ import annotations

import time

from tests.fault.faultapp.workflows import CANCEL
from tests.fault.ledger import ends, in_flight
from workflows_app.engine import workflow_engine

from .scenario import SCENARIO_MARKS, Scenario, runs_per_scenario

pytestmark = SCENARIO_MARKS

LONG_STEP_SECONDS = 3.0


def test_cancel_during_a_long_step(fault_cluster, effects_dir):
    runs = runs_per_scenario()
    cluster = fault_cluster(Q_WORKERS="4")
    scenario = Scenario("cancel-long-step", CANCEL, effects_dir)
    transaction_ids = scenario.start(runs, sleep=0.05, long_step="c2", long=LONG_STEP_SECONDS)
    asked: dict[str, float] = {}

    def cancel_during_the_long_step() -> None:
        for body in in_flight(scenario.effects()):
            if body.step != "c2" or body.kind != "invoke" or body.tx in asked:
                continue
            asked[body.tx] = time.time()
            # A run executed by a worker: the cancel is recorded and the call returns.
            workflow_engine.cancel(CANCEL, body.tx)
            scenario.fault(f"cancel of {body.tx}", [body.pid])

    scenario.finish({"reverted/CANCELED": runs}, cancel_during_the_long_step, live=[cluster])
    assert sorted(asked) == transaction_ids
    effects = scenario.effects()
    counts = ends(effects)
    for tx in transaction_ids:
        c2_end = next(e.at for e in effects if (e.tx, e.step, e.event) == (tx, "c2", "end"))
        # The cancel came while c2 ran; c3 never started; c2 then c1 compensated once.
        assert asked[tx] < c2_end
        assert not [e for e in effects if e.tx == tx and e.step == "c3"]
        assert counts[(tx, "c1", "invoke")] == counts[(tx, "c2", "invoke")] == 1
        undo = [e.step for e in effects if (e.tx, e.kind, e.event) == (tx, "compensate", "end")]
        assert undo == ["c2", "c1"], (tx, undo)
