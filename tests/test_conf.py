"""The settings object: defaults, overrides, unknown names and reload callbacks."""

import pytest
from django.test import override_settings
from rest_framework.permissions import AllowAny, IsAdminUser

from workflows_app.api.permissions import WorkflowsAdminPermissions
from workflows_app.conf import DEFAULTS, WorkflowsSettings, workflows_settings

DOCUMENTED_KEYS = {
    "BACKGROUND",
    "DURABILITY",
    "STEP_COMMIT",
    "PARALLEL_THREADS",
    "RESPONSES_IN_BACKGROUND",
    "CLEANUP_INTERVAL_MINUTES",
    "RECOVERY_INTERVAL_SECONDS",
    "SCHEDULER_TICK_SECONDS",
    "LEASE_SECONDS",
    "MAX_RECOVERY_FAILURES",
    "REDACT_KEYS",
    "MAX_PAYLOAD_BYTES",
    "ADMIN_SECTION_LABEL",
    "API_PERMISSION_CLASSES",
    "API_EVENT_STREAMS_PER_USER",
    "SAVE_TASK_RESULTS",
    "TASK_RESULT_RETENTION_DAYS",
}


def test_defaults_cover_every_documented_key():
    assert set(DEFAULTS) == DOCUMENTED_KEYS


@override_settings(WORKFLOWS={})
def test_defaults_apply_when_the_setting_is_empty():
    assert workflows_settings.BACKGROUND == "django_q"
    assert workflows_settings.DURABILITY == "step"
    assert workflows_settings.STEP_COMMIT == "async"
    assert workflows_settings.PARALLEL_THREADS == 4
    assert workflows_settings.CLEANUP_INTERVAL_MINUTES == 30
    assert workflows_settings.RECOVERY_INTERVAL_SECONDS == 60
    assert workflows_settings.LEASE_SECONDS == 30
    assert workflows_settings.MAX_PAYLOAD_BYTES == 1_048_576
    assert workflows_settings.ADMIN_SECTION_LABEL == "Settings"
    assert workflows_settings.SAVE_TASK_RESULTS is False
    assert "password" in workflows_settings.REDACT_KEYS
    assert "cvv" in workflows_settings.REDACT_KEYS
    assert workflows_settings.as_dict() == DEFAULTS


def test_missing_setting_falls_back_to_defaults(settings):
    del settings.WORKFLOWS
    conf = WorkflowsSettings()
    assert conf.user_settings == {}
    assert conf.as_dict() == DEFAULTS


def test_override_settings_reloads_values():
    with override_settings(WORKFLOWS={"PARALLEL_THREADS": 9, "DURABILITY": "boundary"}):
        assert workflows_settings.PARALLEL_THREADS == 9
        assert workflows_settings.DURABILITY == "boundary"
        assert DEFAULTS["LEASE_SECONDS"] == workflows_settings.LEASE_SECONDS
        with override_settings(WORKFLOWS={"PARALLEL_THREADS": 2}):
            assert workflows_settings.PARALLEL_THREADS == 2
            assert workflows_settings.DURABILITY == "step"
        assert workflows_settings.PARALLEL_THREADS == 9
    assert DEFAULTS["PARALLEL_THREADS"] == workflows_settings.PARALLEL_THREADS


def test_pytest_django_settings_fixture_reloads(settings):
    settings.WORKFLOWS = {"LEASE_SECONDS": 5}
    assert workflows_settings.LEASE_SECONDS == 5


def test_values_are_cached_until_reload():
    conf = WorkflowsSettings()
    with override_settings(WORKFLOWS={"LEASE_SECONDS": 7}):
        assert conf.LEASE_SECONDS == 7
    # A separate instance is not wired to setting_changed: it keeps its cached value.
    assert conf.LEASE_SECONDS == 7
    conf.reload()
    assert DEFAULTS["LEASE_SECONDS"] == conf.LEASE_SECONDS


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="NOT_A_SETTING"):
        workflows_settings.NOT_A_SETTING  # noqa: B018
    with pytest.raises(AttributeError):
        workflows_settings._private  # noqa: B018
    assert not hasattr(workflows_settings, "lease_seconds")


def test_on_reload_callbacks_run_after_each_reload():
    seen = []

    def callback():
        seen.append(workflows_settings.PARALLEL_THREADS)

    assert workflows_settings.on_reload(callback) is callback
    workflows_settings.on_reload(callback)  # registering twice is a no-op
    try:
        with override_settings(WORKFLOWS={"PARALLEL_THREADS": 3}):
            assert seen == [3]
        assert seen == [3, DEFAULTS["PARALLEL_THREADS"]]
        with override_settings(DEBUG=True):  # another setting: no reload
            pass
        assert len(seen) == 2
    finally:
        workflows_settings.remove_reload_callback(callback)
    with override_settings(WORKFLOWS={"PARALLEL_THREADS": 5}):
        pass
    assert len(seen) == 2


def test_api_permission_classes_are_imported():
    assert workflows_settings.api_permission_classes() == [WorkflowsAdminPermissions]
    with override_settings(
        WORKFLOWS={"API_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny", IsAdminUser]}
    ):
        assert workflows_settings.api_permission_classes() == [AllowAny, IsAdminUser]
