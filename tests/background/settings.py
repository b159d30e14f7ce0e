"""Settings of the qcluster workers started by tests/background (and of the bench's
workers when pointed here): the project settings plus the test app that defines the
``bg-*`` workflows, with short django-q2 timings so that a test's failures show fast.

Extra environment variables: ``BG_Q_TIMEOUT`` / ``BG_Q_RETRY`` / ``BG_Q_BULK`` (django-q2
``timeout`` and ``retry`` in seconds, ``bulk``), ``BG_Q_ORM=1`` (django-q2's ORM broker
instead of the app's default), ``BG_LEASE_SECONDS`` (``WORKFLOWS["LEASE_SECONDS"]``) and
``BG_SAVE_TASK_RESULTS=1`` (``WORKFLOWS["SAVE_TASK_RESULTS"]`` True for the tasks the
workers queue; the test process sets its own for the runs it hands over).
"""

import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, Q_CLUSTER, WORKFLOWS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.background.bgapp"]

Q_CLUSTER = {
    **Q_CLUSTER,
    "timeout": int(os.environ.get("BG_Q_TIMEOUT", "20")),
    "retry": int(os.environ.get("BG_Q_RETRY", "30")),
    "bulk": int(os.environ.get("BG_Q_BULK", "1")),
}
if os.environ.get("BG_Q_ORM") == "1":
    Q_CLUSTER["orm"] = "default"

WORKFLOWS = {
    **WORKFLOWS,
    "LEASE_SECONDS": float(os.environ.get("BG_LEASE_SECONDS", "30")),
    "SAVE_TASK_RESULTS": os.environ.get("BG_SAVE_TASK_RESULTS") == "1",
}
