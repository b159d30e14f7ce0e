"""System checks for the ``WORKFLOWS`` setting and the django-q2 configuration.

Registered when the app is ready (``apps.py`` imports this module). Settings are read
through :data:`django.conf.settings` on every run, so ``override_settings`` applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.utils.functional import Promise
from django.utils.module_loading import import_string

from .conf import DEFAULTS

TAG = "workflows_app"

BACKGROUND_CHOICES = ("django_q", "immediate")
DURABILITY_CHOICES = ("step", "boundary")
STEP_COMMIT_CHOICES = ("async", "sync")

# Q_CLUSTER keys that select a broker other than Redis (django-q2's get_broker order).
NON_REDIS_BROKER_KEYS = ("broker_class", "iron_mq", "sqs", "orm", "mongo")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and value > 0


def _background() -> Any:
    value = getattr(settings, "WORKFLOWS", None)
    if isinstance(value, Mapping):
        return value.get("BACKGROUND", DEFAULTS["BACKGROUND"])
    return DEFAULTS["BACKGROUND"]


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
    elif key == "PARALLEL_THREADS":
        if not (_is_int(value) and value >= 1):
            return "an integer of at least 1"
    elif key == "MAX_PAYLOAD_BYTES":
        if not (_is_int(value) and value > 0):
            return "a positive integer (bytes)"
    elif key in ("LEASE_SECONDS", "RECOVERY_INTERVAL_SECONDS", "CLEANUP_INTERVAL_MINUTES"):
        if not _is_positive_number(value):
            return "a positive number"
    elif key == "SCHEDULER_TICK_SECONDS":
        if not (isinstance(value, Real) and not isinstance(value, bool) and value >= 0):
            return "a number of seconds, 0 or more"
    elif key == "REDACT_KEYS":
        if not (isinstance(value, list | tuple) and all(isinstance(k, str) for k in value)):
            return "a list or tuple of strings"
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


@register(Tags.compatibility, TAG)
def check_q_cluster(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``workflows_app.W001`` (retry not above timeout) and ``W002`` (Redis broker)."""
    q_cluster = getattr(settings, "Q_CLUSTER", None)
    uses_django_q = _background() == "django_q"
    if q_cluster is None and not uses_django_q:
        return []
    if not isinstance(q_cluster, Mapping):
        q_cluster = {}

    messages: list[CheckMessage] = []

    timeout = q_cluster.get("timeout")
    retry = q_cluster.get("retry", 60)  # django-q2's default
    if not (_is_positive_number(timeout) and _is_positive_number(retry) and retry > timeout):
        messages.append(
            CheckWarning(
                f"Q_CLUSTER 'retry' ({retry!r}) is not greater than 'timeout' ({timeout!r}).",
                hint=(
                    "django-q2 hands a task to another worker once 'retry' seconds pass "
                    "without an acknowledgement, so a workflow task still running then is "
                    "executed twice. Set 'timeout' to the longest task duration and "
                    "'retry' above it (plus the longest queue wait), e.g. "
                    "{'timeout': 300, 'retry': 420}."
                ),
                obj="settings.Q_CLUSTER",
                id="workflows_app.W001",
            )
        )

    if uses_django_q and not any(q_cluster.get(key) for key in NON_REDIS_BROKER_KEYS):
        messages.append(
            CheckWarning(
                "Q_CLUSTER uses the Redis broker, which has no delivery receipts.",
                hint=(
                    "If a worker or the cluster dies, Redis loses the tasks it was "
                    "running. workflows_app's recovery sweep ('manage.py workflows "
                    "recover', also run by the recovery schedule every "
                    "WORKFLOWS['RECOVERY_INTERVAL_SECONDS']) resumes those executions "
                    "once their lease expires; keep that schedule enabled, or use the "
                    "ORM broker ({'orm': 'default'}) for redelivery by django-q2 itself."
                ),
                obj="settings.Q_CLUSTER",
                id="workflows_app.W002",
            )
        )
    return messages
