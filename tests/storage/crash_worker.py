"""Run the crash-recovery workflow once, in its own process (killed by the test).

Usage: ``python tests/storage/crash_worker.py <transaction_id>`` with
``DJANGO_SETTINGS_MODULE``, ``DATABASE_URL``, ``PYTHONPATH`` (the repository root),
``CRASH_SIDE_EFFECTS`` and ``CRASH_MARKER`` set by the test.
"""

from __future__ import annotations

import sys

import django


def main() -> int:
    django.setup()
    from tests.storage.crash_workflow import WORKFLOW_NAME
    from workflows_app.engine import workflow_engine

    workflow_engine.run(WORKFLOW_NAME, input=0, transaction_id=sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
