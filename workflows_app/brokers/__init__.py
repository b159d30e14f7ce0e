"""Which django-q2 broker carries the tasks of workflows_app, and the app's default.

A host whose ``Q_CLUSTER`` names no broker gets one from the app (applied when the app
is ready, before any task is queued): :class:`~workflows_app.brokers.postgres.PostgresBroker`
when the ``default`` database is PostgreSQL through psycopg2, django-q2's ORM broker
otherwise (SQLite, MySQL, psycopg 3). A ``Q_CLUSTER`` that names a broker (``orm``,
``redis``, ``broker_class``, ...) is left as it is. Without this default django-q2 would
fall back to Redis on localhost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

POSTGRES_BROKER = "workflows_app.brokers.postgres.PostgresBroker"
DEFAULT_ALIAS = "default"

# Q_CLUSTER keys that select a broker, in django-q2's get_broker order (Redis last: it
# is also what django-q2 uses when none is named).
BROKER_KEYS = ("broker_class", "iron_mq", "sqs", "orm", "mongo", "redis", "django_redis")


def q_cluster() -> Mapping[str, Any]:
    """The host's ``Q_CLUSTER`` (empty when unset or not a dict)."""
    value = getattr(settings, "Q_CLUSTER", None)
    return value if isinstance(value, Mapping) else {}


def supports_postgres_broker(alias: str = DEFAULT_ALIAS) -> bool:
    """Whether database ``alias`` can carry :class:`PostgresBroker` (PostgreSQL on psycopg2)."""
    database = settings.DATABASES.get(alias) or {}
    if database.get("ENGINE") != "django.db.backends.postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return not is_psycopg3


def default_broker(conf: Mapping[str, Any] | None = None) -> dict[str, str]:
    """What the app adds to a ``Q_CLUSTER`` that names no broker (``{}`` if it names one)."""
    conf = q_cluster() if conf is None else conf
    if any(conf.get(key) for key in BROKER_KEYS):
        return {}
    if supports_postgres_broker(DEFAULT_ALIAS):
        return {"broker_class": POSTGRES_BROKER, "orm": DEFAULT_ALIAS}
    return {"orm": DEFAULT_ALIAS}


def effective_q_cluster() -> dict[str, Any]:
    """``Q_CLUSTER`` with the app's default broker applied."""
    conf = dict(q_cluster())
    conf.update(default_broker(conf))
    return conf


def broker_name() -> str:
    """``"postgres"``, ``"orm"``, ``"redis"`` or another django-q2 broker key: where the
    tasks go with the current settings."""
    conf = effective_q_cluster()
    if conf.get("broker_class") == POSTGRES_BROKER:
        return "postgres"
    for key in BROKER_KEYS:
        if conf.get(key):
            return "redis" if key == "django_redis" else key
    return "redis"


def uses_redis() -> bool:
    """Whether django-q2 sends the tasks to Redis (outside the database transaction)."""
    return broker_name() == "redis"


def apply_default_broker() -> dict[str, str]:
    """Point django-q2 at the app's default broker when ``Q_CLUSTER`` names none.

    django-q2 reads ``Q_CLUSTER`` once, into ``django_q.conf.Conf``; this sets the same
    attributes that the keys would have set. Returns what was applied.
    """
    applied = default_broker()
    if applied:
        from django_q.conf import Conf

        Conf.BROKER_CLASS = applied.get("broker_class")
        Conf.ORM = applied["orm"]
        _register_queue_admin()
    return applied


def _register_queue_admin() -> None:
    """django-q2's "Queued tasks" admin page, which it registers only when ``orm`` was
    in ``Q_CLUSTER`` as its admin module loaded (before this default applied)."""
    from django.apps import apps

    if not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib import admin
    from django_q.admin import QueueAdmin
    from django_q.models import OrmQ

    if not admin.site.is_registered(OrmQ):
        admin.site.register(OrmQ, QueueAdmin)
