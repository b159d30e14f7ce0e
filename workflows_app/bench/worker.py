"""The django-q2 cluster of the ``background`` benchmark (``python -m workflows_app.bench.worker``).

:func:`workflows_app.bench.background.measure_background` starts it; it is not meant to be run by
hand. It sets Django up with the bench process's settings module, points the default
database at the bench's own (which may be a test database the settings do not name),
keeps database connections open between tasks unless the project sets ``CONN_MAX_AGE``
itself, turns ``DEBUG`` off and applies the bench's durability, defines the bench
workflows so that the forked workers know them, and then runs ``qcluster`` with the
requested number of workers.
"""

from __future__ import annotations

import os
import sys

DATABASE_NAME_ENV = "WORKFLOWS_BENCH_DATABASE_NAME"
WORKERS_ENV = "WORKFLOWS_BENCH_WORKERS"
PERSISTENT_CONNECTIONS_ENV = "WORKFLOWS_BENCH_PERSISTENT_CONNECTIONS"
DURABILITY_ENV = "WORKFLOWS_BENCH_DURABILITY"


def main() -> int:
    import django
    from django.conf import settings

    # Before django.setup(): nothing has connected or read these yet.
    database = settings.DATABASES["default"]
    name = os.environ.get(DATABASE_NAME_ENV)
    if name:
        database["NAME"] = name
    if os.environ.get(PERSISTENT_CONNECTIONS_ENV) == "1" and not database.get("CONN_MAX_AGE"):
        # django-q2 calls close_old_connections() around every task and every poll of
        # the ORM broker: with CONN_MAX_AGE = 0 each is a new PostgreSQL connection.
        database["CONN_MAX_AGE"] = None
    settings.DEBUG = False
    workflows = {**getattr(settings, "WORKFLOWS", {}), "BACKGROUND": "django_q"}
    if os.environ.get(DURABILITY_ENV):
        workflows["DURABILITY"] = os.environ[DURABILITY_ENV]
    settings.WORKFLOWS = workflows
    django.setup()

    from django.core.management import call_command
    from django_q.conf import Conf

    from workflows_app.bench.workloads import BACKGROUND_KEY, workload

    workers = os.environ.get(WORKERS_ENV)
    if workers:
        Conf.WORKERS = int(workers)
    # Registered here, before the cluster forks its workers, which inherit it.
    workload(BACKGROUND_KEY)
    call_command("qcluster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
