"""System checks for the ``WORKFLOWS`` setting, the django-q2 configuration and extras.

Registered when the app is ready (``apps.py`` imports this module). Settings are read
through :data:`django.conf.settings` on every run, so ``override_settings`` applies.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from numbers import Real
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import DatabaseError, connection
from django.utils.functional import Promise
from django.utils.module_loading import import_string

from . import brokers
from .conf import DEFAULTS

TAG = "workflows_app"

BACKGROUND_CHOICES = ("django_q", "immediate")
DURABILITY_CHOICES = ("step", "boundary")
STEP_COMMIT_CHOICES = ("async", "sync")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and value > 0


def _workflows_value(key: str) -> Any:
    """``WORKFLOWS[key]`` as the project set it, else its default (read on every run)."""
    value = getattr(settings, "WORKFLOWS", None)
    if isinstance(value, Mapping):
        return value.get(key, DEFAULTS[key])
    return DEFAULTS[key]


def _background() -> Any:
    return _workflows_value("BACKGROUND")


def _invalid(key: str, value: Any, expected: str) -> Error:
    return Error(
        f"settings.WORKFLOWS[{key!r}] is invalid: {value!r}.",
        hint=f"{key} must be {expected}.",
        obj="settings.WORKFLOWS",
        id="workflows_app.E002",
    )


def _value_problem(key: str, value: Any) -> str | None:
    """What ``value`` should have been for ``key``, or None when it is valid."""
    if key == "BACKGROUND":
        if value not in BACKGROUND_CHOICES:
            return "one of " + ", ".join(repr(choice) for choice in BACKGROUND_CHOICES)
    elif key == "DURABILITY":
        if value not in DURABILITY_CHOICES:
            return "one of " + ", ".join(repr(choice) for choice in DURABILITY_CHOICES)
    elif key == "STEP_COMMIT":
        if value not in STEP_COMMIT_CHOICES:
            return "one of " + ", ".join(repr(choice) for choice in STEP_COMMIT_CHOICES)
    elif key in ("PARALLEL_THREADS", "MAX_RECOVERY_FAILURES", "API_EVENT_STREAMS_PER_USER"):
        if not (_is_int(value) and value >= 1):
            return "an integer of at least 1"
    elif key == "MAX_PAYLOAD_BYTES":
        if not (_is_int(value) and value > 0):
            return "a positive integer (bytes)"
    elif key in ("LEASE_SECONDS", "RECOVERY_INTERVAL_SECONDS", "CLEANUP_INTERVAL_MINUTES"):
        if not _is_positive_number(value):
            return "a positive number"
    elif key == "TASK_RESULT_RETENTION_DAYS":
        if value is not None and not _is_positive_number(value):
            return "a positive number of days, or None (keep them)"
    elif key == "SCHEDULER_TICK_SECONDS":
        if not (isinstance(value, Real) and not isinstance(value, bool) and value >= 0):
            return "a number of seconds, 0 or more"
    elif key == "REDACT_KEYS":
        if not (isinstance(value, list | tuple) and all(isinstance(k, str) for k in value)):
            return "a list or tuple of strings"
    elif key in ("RESPONSES_IN_BACKGROUND", "SAVE_TASK_RESULTS"):
        if not isinstance(value, bool):
            return "True or False"
    elif key == "ADMIN_SECTION_LABEL":
        if not isinstance(value, str | Promise):
            return "a string"
    elif key == "API_PERMISSION_CLASSES":
        if not isinstance(value, list | tuple):
            return "a list or tuple of import strings of permission classes"
        for item in value:
            if isinstance(item, str):
                try:
                    import_string(item)
                except ImportError:
                    return f"a list or tuple of importable classes ({item!r} cannot be imported)"
            elif not isinstance(item, type):
                return "a list or tuple of import strings of permission classes"
    return None


@register(Tags.compatibility, TAG)
def check_workflows_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``workflows_app.E001`` (unknown keys) and ``workflows_app.E002`` (invalid values)."""
    value = getattr(settings, "WORKFLOWS", None)
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [
            Error(
                f"settings.WORKFLOWS must be a dict, not {type(value).__name__}.",
                obj="settings.WORKFLOWS",
                id="workflows_app.E002",
            )
        ]

    messages: list[CheckMessage] = []
    unknown = sorted(str(key) for key in value if key not in DEFAULTS)
    if unknown:
        messages.append(
            Error(
                "Unknown key(s) in settings.WORKFLOWS: " + ", ".join(unknown) + ".",
                hint="Valid keys are: " + ", ".join(sorted(DEFAULTS)) + ".",
                obj="settings.WORKFLOWS",
                id="workflows_app.E001",
            )
        )
    for key in DEFAULTS:
        if key in value:
            expected = _value_problem(key, value[key])
            if expected is not None:
                messages.append(_invalid(key, value[key], expected))
    return messages


# The smallest Q_CLUSTER that works everywhere: no broker named (the app picks a
# database broker, see workflows_app.brokers), 'retry' above 'timeout' (see W001),
# no pruning by django-q2's monitor (see W003).
Q_CLUSTER_EXAMPLE = (
    'Q_CLUSTER = {"name": "workflows", "timeout": 300, "retry": 420, "save_limit": 0}'
)


def _missing_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return True
    return False


@register(Tags.compatibility, TAG)
def check_django_q_setup(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``workflows_app.E003`` (``django_q`` not installed) and ``E004`` (no ``Q_CLUSTER``)
    when background work goes to django-q2: without them runs never leave ``invoking``."""
    if _background() != "django_q":
        return []
    immediate = "or, in tests only, WORKFLOWS = {'BACKGROUND': 'immediate'}"
    messages: list[CheckMessage] = []
    if not apps.is_installed("django_q"):
        messages.append(
            Error(
                "workflows_app hands async and background steps to django-q2, but 'django_q' "
                "is not in INSTALLED_APPS.",
                hint=f"Add 'django_q' to INSTALLED_APPS and run migrate ({immediate}).",
                obj="settings.INSTALLED_APPS",
                id="workflows_app.E003",
            )
        )
    if getattr(settings, "Q_CLUSTER", None) is None:
        messages.append(
            Error(
                "workflows_app hands async and background steps to django-q2, but "
                "settings.Q_CLUSTER is not set.",
                hint=f"Add to your settings: {Q_CLUSTER_EXAMPLE} ({immediate}).",
                obj="settings.Q_CLUSTER",
                id="workflows_app.E004",
            )
        )
    return messages


@register(Tags.compatibility, TAG)
def check_extras(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``workflows_app.E005``: a feature in use needs an extra that is not installed."""
    from .sdk import list_workflows

    needs: dict[str, str] = {}
    q_cluster = getattr(settings, "Q_CLUSTER", None)
    if (
        _background() == "django_q"
        and isinstance(q_cluster, Mapping)
        and brokers.uses_redis()
        and _missing_module("redis")
    ):
        needs["redis"] = "Q_CLUSTER uses django-q2's Redis broker (it sets no other broker)"
    cron = sorted(
        workflow.name
        for workflow in list_workflows()
        if _cron_expression(workflow.options.get("schedule"))
    )
    if cron and _missing_module("croniter"):
        needs["cron"] = "a cron schedule is set on " + ", ".join(cron)
    return [
        Error(
            f"{reason}, but the package it needs is not installed.",
            hint=f"pip install 'workflows-app[{extra}]'",
            obj=f"workflows-app[{extra}]",
            id="workflows_app.E005",
        )
        for extra, reason in needs.items()
    ]


def _cron_expression(schedule: Any) -> str | None:
    if isinstance(schedule, str):
        return schedule
    if isinstance(schedule, Mapping):
        return schedule.get("cron")
    return None


@register(Tags.compatibility, TAG)
def check_q_cluster(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``workflows_app.W001`` (retry not above timeout), ``W002`` (Redis broker) and
    ``E006`` (the PostgreSQL broker on a database that cannot carry it), for a
    ``Q_CLUSTER`` that is set (``E004`` reports a missing one)."""
    q_cluster = getattr(settings, "Q_CLUSTER", None)
    if not isinstance(q_cluster, Mapping):
        return []
    uses_django_q = _background() == "django_q"

    messages: list[CheckMessage] = []
    timeout = q_cluster.get("timeout")
    retry = q_cluster.get("retry", 60)  # django-q2's default
    why = (
        "django-q2 hands a task to another worker once 'retry' seconds pass without an "
        "acknowledgement, so a workflow task still running then is executed twice. Set "
        "'timeout' to the longest task duration and 'retry' above it (plus the longest "
        "queue wait), e.g. {'timeout': 300, 'retry': 420}."
    )
    problem = None
    if not _is_positive_number(timeout):
        problem = (
            f"Q_CLUSTER sets no 'timeout' (a task may run for ever), while 'retry' "
            f"re-delivers a task after {retry!r} seconds."
        )
    elif not _is_positive_number(retry):
        problem = f"Q_CLUSTER 'retry' must be a positive number of seconds, not {retry!r}."
    elif retry <= timeout:
        problem = f"Q_CLUSTER 'retry' ({retry!r} s) is not greater than 'timeout' ({timeout!r} s)."
    if problem is not None:
        messages.append(
            CheckWarning(problem, hint=why, obj="settings.Q_CLUSTER", id="workflows_app.W001")
        )

    if uses_django_q and brokers.uses_redis():
        messages.append(
            CheckWarning(
                "Q_CLUSTER selects django-q2's Redis broker, which has no delivery receipts.",
                hint=(
                    "If a worker or the cluster dies, Redis loses the tasks it was "
                    "running. workflows_app's recovery sweep ('manage.py workflows "
                    "recover', also run by the recovery schedule every "
                    "WORKFLOWS['RECOVERY_INTERVAL_SECONDS']) resumes those executions "
                    "once their lease expires; keep that schedule enabled, or name no "
                    "broker in Q_CLUSTER (a database broker) for redelivery by "
                    "django-q2 itself."
                ),
                obj="settings.Q_CLUSTER",
                id="workflows_app.W002",
            )
        )

    alias = q_cluster.get("orm") or brokers.DEFAULT_ALIAS
    if q_cluster.get("broker_class") == brokers.POSTGRES_BROKER and not (
        brokers.supports_postgres_broker(alias)
    ):
        messages.append(
            Error(
                f"Q_CLUSTER names the PostgreSQL broker, but database {alias!r} is not "
                "PostgreSQL reached through psycopg2.",
                hint=(
                    "Remove 'broker_class' (the app then picks the ORM broker for this "
                    "database), or point Q_CLUSTER['orm'] at a PostgreSQL database."
                ),
                obj="settings.Q_CLUSTER",
                id="workflows_app.E006",
            )
        )
    return messages


# django-q2's default Q_CLUSTER["save_limit"].
DJANGO_Q_SAVE_LIMIT = 250


@register(Tags.compatibility, TAG)
def check_task_results(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``workflows_app.W003``: django-q2 prunes saved results per task (``save_limit``
    above 0) while the app's tasks save their successes (``SAVE_TASK_RESULTS``).

    Without ``SAVE_TASK_RESULTS`` django-q2's monitor returns before its pruning for
    every success of the app's queued tasks, so the limit costs them nothing."""
    q_cluster = getattr(settings, "Q_CLUSTER", None)
    if not isinstance(q_cluster, Mapping) or _background() != "django_q":
        return []
    if not _workflows_value("SAVE_TASK_RESULTS"):
        return []
    save_limit = q_cluster.get("save_limit", DJANGO_Q_SAVE_LIMIT)
    if not (_is_int(save_limit) and save_limit > 0):
        return []
    return [
        CheckWarning(
            f"WORKFLOWS['SAVE_TASK_RESULTS'] saves the app's task successes and "
            f"Q_CLUSTER 'save_limit' is {save_limit} (django-q2's default is "
            f"{DJANGO_Q_SAVE_LIMIT}): django-q2's monitor reads and locks every kept "
            "success after each task to delete the oldest one.",
            hint=(
                "That costs the single monitor process milliseconds per task, growing "
                "with the limit, and caps the task rate. Set 'save_limit': 0 (no pruning "
                "by django-q2): workflows_app's cleanup schedule deletes successes older "
                "than WORKFLOWS['TASK_RESULT_RETENTION_DAYS'] in one statement. Or leave "
                "SAVE_TASK_RESULTS False (the default): failures are still saved."
            ),
            obj="settings.Q_CLUSTER",
            id="workflows_app.W003",
        )
    ]


def missing_tables() -> list[str]:
    """The tables of this app, and of django-q2 when it is installed, that the
    database lacks: a command run before ``migrate`` says so instead of failing on
    its first query. Empty when the database cannot tell (the error stands)."""
    labels = ["workflows_app"] + (["django_q"] if apps.is_installed("django_q") else [])
    wanted = [
        model._meta.db_table
        for label in labels
        for model in apps.get_app_config(label).get_models()
        if model._meta.managed and not model._meta.proxy
    ]
    try:
        present = set(connection.introspection.table_names())
    except DatabaseError:
        return []
    return [table for table in wanted if table not in present]
