"""Settings of workflows_app, read from the ``WORKFLOWS`` dict over :data:`DEFAULTS`.

Use the module-level :data:`workflows_settings` object::

    from workflows_app.conf import workflows_settings

    workflows_settings.PARALLEL_THREADS

Values are cached on first access and dropped whenever Django's ``setting_changed``
signal fires for ``WORKFLOWS`` (``override_settings`` in tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

SETTING_NAME = "WORKFLOWS"

DEFAULTS: dict[str, Any] = {
    # "django_q": async and background steps go through django-q2;
    # "immediate": they run in the calling process.
    "BACKGROUND": "django_q",
    # "step": a stored run checkpoints after every step attempt;
    # "boundary": step rows are written in bulk at hand-over points and at the end.
    "DURABILITY": "step",
    # PostgreSQL only: "async" commits step checkpoints without waiting for the WAL
    # flush (a worker crash loses nothing; a database crash may re-run steps finished
    # in its last ~0.6 s); "sync" waits for every checkpoint. "async" also covers the
    # final write (or delete) of a run and a worker's lease claim. The start of a run
    # is synchronous, or committed by the synchronous hand-over of a run queued
    # before its first step.
    "STEP_COMMIT": "async",
    # False: whoever answers a waiting step (set_step_success/failure) runs the steps
    # that follow, as in Medusa; True: a worker runs them and the answer returns at once.
    "RESPONSES_IN_BACKGROUND": False,
    # Threads used to run the branches of a parallel group.
    "PARALLEL_THREADS": 4,
    # Period of the django-q2 schedule that deletes expired executions.
    "CLEANUP_INTERVAL_MINUTES": 30,
    # False: django-q2 saves no success of a task the app queues (resumes, recovery
    # sweeps), which spares its monitor a select and an insert per task; the step log
    # records each attempt already. Failures are saved either way. Tasks started by
    # django-q2 schedules (delays, retry intervals, cleanup) follow its own save_limit.
    # True: successes are saved too, and the admin links an attempt to its result.
    "SAVE_TASK_RESULTS": False,
    # The cleanup schedule also deletes django-q2's saved task successes older than
    # this many days, in one statement (with Q_CLUSTER["save_limit"] 0, django-q2 itself
    # prunes nothing); None keeps them.
    "TASK_RESULT_RETENTION_DAYS": 7,
    # Period of the django-q2 schedule that resumes executions whose worker died.
    "RECOVERY_INTERVAL_SECONDS": 60,
    # django-q2 turns due schedules into tasks only every ~30 s; each qcluster worker
    # also checks them this often (seconds), so retry intervals and timeouts fire on
    # time. 0 leaves it to django-q2.
    "SCHEDULER_TICK_SECONDS": 1,
    # A run whose recovery fails this many times in a row with the same error is
    # marked failed with that error instead of being retried by every sweep.
    "MAX_RECOVERY_FAILURES": 5,
    # How long a worker's claim on a running execution lasts without renewal.
    "LEASE_SECONDS": 30,
    # Keys masked as "[REDACTED]" (case-insensitive, at any depth) before storing.
    "REDACT_KEYS": ("password", "secret", "token", "authorization", "card_number", "cvv"),
    # Inputs and outputs larger than this, once serialised, are refused.
    "MAX_PAYLOAD_BYTES": 1_048_576,
    # Admin section under which the workflow entries are listed.
    "ADMIN_SECTION_LABEL": "Settings",
    # Permission classes of the REST API, as import strings. The default applies the
    # admin's rule (staff and the model permission of the action).
    "API_PERMISSION_CLASSES": ("workflows_app.api.permissions.WorkflowsAdminPermissions",),
    # Event streams (SSE) one user may keep open at once, per server process.
    "API_EVENT_STREAMS_PER_USER": 4,
}


class WorkflowsSettings:
    """Attribute access to the ``WORKFLOWS`` setting, falling back to defaults.

    Unknown names raise :class:`AttributeError`; the system check
    ``workflows_app.E001`` reports unknown keys in the setting itself.
    """

    def __init__(
        self, defaults: Mapping[str, Any] | None = None, setting_name: str = SETTING_NAME
    ) -> None:
        self._defaults = dict(DEFAULTS if defaults is None else defaults)
        self._setting_name = setting_name
        self._cached: set[str] = set()
        self._reload_callbacks: list[Callable[[], Any]] = []

    @property
    def user_settings(self) -> dict[str, Any]:
        """The project's own ``WORKFLOWS`` dict (empty when unset)."""
        value = getattr(settings, self._setting_name, None)
        return dict(value) if isinstance(value, Mapping) else {}

    @property
    def defaults(self) -> dict[str, Any]:
        """A copy of the default values."""
        return dict(self._defaults)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for uncached setting names.
        if name.startswith("_") or name not in self._defaults:
            raise AttributeError(f"Invalid workflows_app setting: {name!r}")
        value = self.user_settings.get(name, self._defaults[name])
        self._cached.add(name)
        setattr(self, name, value)
        return value

    def as_dict(self) -> dict[str, Any]:
        """Every setting with its effective value."""
        return {name: getattr(self, name) for name in self._defaults}

    def api_permission_classes(self) -> list[type]:
        """The classes named by ``API_PERMISSION_CLASSES``, imported."""
        return [
            import_string(item) if isinstance(item, str) else item
            for item in self.API_PERMISSION_CLASSES
        ]

    def on_reload(self, callback: Callable[[], Any]) -> Callable[[], Any]:
        """Call ``callback()`` (no arguments) after every reload.

        Returns the callback, so this also works as a decorator. Registering the
        same callable twice has no effect.
        """
        if callback not in self._reload_callbacks:
            self._reload_callbacks.append(callback)
        return callback

    def remove_reload_callback(self, callback: Callable[[], Any]) -> None:
        """Forget a callback registered with :meth:`on_reload` (no error if absent)."""
        if callback in self._reload_callbacks:
            self._reload_callbacks.remove(callback)

    def reload(self) -> None:
        """Drop cached values, then run the reload callbacks in registration order."""
        for name in self._cached:
            self.__dict__.pop(name, None)
        self._cached.clear()
        for callback in list(self._reload_callbacks):
            callback()


workflows_settings = WorkflowsSettings()


def _reload_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        workflows_settings.reload()


setting_changed.connect(_reload_on_setting_changed, dispatch_uid="workflows_app.conf.reload")
