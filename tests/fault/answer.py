"""Answer waiting steps from a process of its own, at planned moments.

Usage: ``python -m tests.fault.answer <name> <plan.json> <out.txt>`` with
``DJANGO_SETTINGS_MODULE``, ``DATABASE_URL`` and ``PYTHONPATH`` set by the test. The
process waits (at most a minute) for the plan, a JSON list of ``[time, workflow_id,
transaction_id, step_id]``; at each time it calls ``set_step_success`` with
``{"by": <name>}`` and appends ``<transaction_id> <ok|recorded|ErrorClass> <time>`` to
the out file ("recorded": another process held the run, the answer waits on its row).
Two such processes given the same plan answer every step at the same moment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import django

PLAN_WAIT_SECONDS = 60.0


def main() -> int:
    name, plan_path, out_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    django.setup()
    from workflows_app.engine import workflow_engine

    out_path.with_suffix(".ready").write_text("ready")
    deadline = time.monotonic() + PLAN_WAIT_SECONDS
    while not plan_path.exists():
        if time.monotonic() > deadline:
            return 2
        time.sleep(0.05)
    for moment, workflow_id, transaction_id, step_id in json.loads(plan_path.read_text()):
        time.sleep(max(0.0, moment - time.time()))
        try:
            result = workflow_engine.set_step_success(
                workflow_id=workflow_id,
                transaction_id=transaction_id,
                step_id=step_id,
                response={"by": name},
            )
            outcome = "recorded" if result.acknowledgement.get("answer_recorded") else "ok"
        except Exception as exc:
            outcome = type(exc).__name__
        with out_path.open("a") as out:
            out.write(f"{transaction_id} {outcome} {time.time():.6f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
