"""System checks: each id fires on bad settings and stays silent on good ones."""

import sys

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework.permissions import IsAdminUser

from workflows_app import brokers
from workflows_app import checks as checks_module
from workflows_app.background import DjangoQScheduler
from workflows_app.checks import (
    check_django_q_setup,
    check_extras,
    check_q_cluster,
    check_task_results,
    check_workflows_settings,
)
from workflows_app.conf import DEFAULTS
from workflows_app.sdk import create_workflow

GOOD_Q_CLUSTER = {"name": "t", "orm": "default", "timeout": 300, "retry": 420, "save_limit": 0}
REDIS_Q_CLUSTER = {
    "name": "t",
    "redis": "redis://localhost:6379/0",
    "timeout": 300,
    "retry": 420,
    "save_limit": 0,
}


def ids(messages):
    return [message.id for message in messages]


@override_settings(WORKFLOWS={"BACKGROUND": "django_q"}, Q_CLUSTER=GOOD_Q_CLUSTER)
def test_good_configuration_is_silent():
    assert check_workflows_settings() == []
    assert check_q_cluster() == []


def test_checks_are_registered_under_the_app_tag():
    assert checks.registry.registry.tag_exists("workflows_app")
    registered = checks.registry.registry.get_checks()
    assert check_workflows_settings in registered
    assert check_q_cluster in registered
    with override_settings(WORKFLOWS={"NOPE": 1}, Q_CLUSTER=GOOD_Q_CLUSTER):
        messages = checks.run_checks(tags=["workflows_app"])
    assert ids(messages) == ["workflows_app.E001"]


def test_missing_workflows_setting_is_silent(settings):
    del settings.WORKFLOWS
    assert check_workflows_settings() == []


@override_settings(WORKFLOWS=dict(DEFAULTS))
def test_every_default_value_is_valid():
    assert check_workflows_settings() == []


@override_settings(WORKFLOWS={"PARALLEL": 8, "BACKGROUND": "django_q", "retention": 1})
def test_e001_unknown_keys_are_named_with_the_valid_ones_in_the_hint():
    messages = check_workflows_settings()
    assert ids(messages) == ["workflows_app.E001"]
    [error] = messages
    assert error.level == checks.ERROR
    assert "PARALLEL" in error.msg
    assert "retention" in error.msg
    for key in DEFAULTS:
        assert key in error.hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BACKGROUND", "celery"),
        ("BACKGROUND", None),
        ("DURABILITY", "always"),
        ("PARALLEL_THREADS", 0),
        ("PARALLEL_THREADS", "4"),
        ("PARALLEL_THREADS", 2.5),
        ("PARALLEL_THREADS", True),
        ("MAX_RECOVERY_FAILURES", 0),
        ("MAX_RECOVERY_FAILURES", "5"),
        ("MAX_PAYLOAD_BYTES", 0),
        ("MAX_PAYLOAD_BYTES", -1),
        ("MAX_PAYLOAD_BYTES", 1024.0),
        ("REDACT_KEYS", "password"),
        ("REDACT_KEYS", ["password", 3]),
        ("LEASE_SECONDS", 0),
        ("LEASE_SECONDS", "30"),
        ("RECOVERY_INTERVAL_SECONDS", -5),
        ("CLEANUP_INTERVAL_MINUTES", None),
        ("ADMIN_SECTION_LABEL", 3),
        ("SAVE_TASK_RESULTS", "yes"),
        ("SAVE_TASK_RESULTS", 1),
        ("SAVE_TASK_RESULTS", None),
        ("API_PERMISSION_CLASSES", "rest_framework.permissions.IsAdminUser"),
        ("API_PERMISSION_CLASSES", ["no.such.module.Permission"]),
        ("API_PERMISSION_CLASSES", [42]),
    ],
)
def test_e002_invalid_values(key, value):
    with override_settings(WORKFLOWS={key: value}):
        messages = check_workflows_settings()
    assert ids(messages) == ["workflows_app.E002"]
    assert key in messages[0].msg
    assert messages[0].hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BACKGROUND", "immediate"),
        ("DURABILITY", "boundary"),
        ("PARALLEL_THREADS", 1),
        ("MAX_PAYLOAD_BYTES", 10),
        ("REDACT_KEYS", []),
        ("REDACT_KEYS", ["pin"]),
        ("LEASE_SECONDS", 0.5),
        ("RECOVERY_INTERVAL_SECONDS", 5),
        ("CLEANUP_INTERVAL_MINUTES", 1),
        ("ADMIN_SECTION_LABEL", "Workflows"),
        ("SAVE_TASK_RESULTS", True),
        ("SAVE_TASK_RESULTS", False),
        ("API_PERMISSION_CLASSES", [IsAdminUser, "rest_framework.permissions.AllowAny"]),
        ("API_PERMISSION_CLASSES", ()),
    ],
)
def test_e002_silent_on_valid_values(key, value):
    with override_settings(WORKFLOWS={key: value}):
        assert check_workflows_settings() == []


@override_settings(WORKFLOWS=["BACKGROUND"])
def test_e002_when_the_setting_is_not_a_dict():
    assert ids(check_workflows_settings()) == ["workflows_app.E002"]


@override_settings(WORKFLOWS={"UNKNOWN": 1, "PARALLEL_THREADS": 0, "DURABILITY": "x"})
def test_unknown_and_invalid_are_reported_together():
    assert sorted(ids(check_workflows_settings())) == [
        "workflows_app.E001",
        "workflows_app.E002",
        "workflows_app.E002",
    ]


@pytest.mark.parametrize(
    "q_cluster",
    [
        {"orm": "default", "timeout": 300, "retry": 300},
        {"orm": "default", "timeout": 300, "retry": 60},
        {"orm": "default", "retry": 420},
        {"orm": "default"},
        {"orm": "default", "timeout": 300, "retry": None},
    ],
)
def test_w001_retry_not_above_timeout(q_cluster):
    with override_settings(WORKFLOWS={"BACKGROUND": "django_q"}, Q_CLUSTER=q_cluster):
        messages = check_q_cluster()
    assert ids(messages) == ["workflows_app.W001"]
    assert messages[0].level == checks.WARNING
    assert "twice" in messages[0].hint


@override_settings(WORKFLOWS={"BACKGROUND": "immediate"})
def test_w001_applies_to_an_explicit_q_cluster_even_without_background_tasks():
    with override_settings(Q_CLUSTER={"orm": "default", "timeout": 60, "retry": 30}):
        assert ids(check_q_cluster()) == ["workflows_app.W001"]


def test_w001_silent_without_q_cluster_when_background_is_immediate(settings):
    settings.WORKFLOWS = {"BACKGROUND": "immediate"}
    del settings.Q_CLUSTER
    assert check_q_cluster() == []


def test_a_missing_q_cluster_is_e004_only(settings):
    settings.WORKFLOWS = {"BACKGROUND": "django_q"}
    del settings.Q_CLUSTER
    assert check_q_cluster() == []
    [error] = check_django_q_setup()
    assert (error.id, error.level) == ("workflows_app.E004", checks.ERROR)
    assert "Q_CLUSTER is not set" in error.msg
    assert (
        'Q_CLUSTER = {"name": "workflows", "timeout": 300, "retry": 420, "save_limit": 0}'
        in error.hint
    )


def test_e003_when_django_q_is_not_installed(settings):
    settings.WORKFLOWS = {"BACKGROUND": "django_q"}
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    messages = checks.run_checks(tags=["workflows_app"])
    [error] = [m for m in messages if m.level >= checks.ERROR]
    assert error.id == "workflows_app.E003"
    assert "'django_q' is not in INSTALLED_APPS" in error.msg
    assert error.hint.startswith("Add 'django_q' to INSTALLED_APPS and run migrate")


def test_without_django_q_a_run_fails_loudly_instead_of_pushing_to_redis(settings):
    settings.WORKFLOWS = {"BACKGROUND": "django_q"}
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    with pytest.raises(ImproperlyConfigured, match="'django_q' is not in INSTALLED_APPS"):
        DjangoQScheduler().enqueue_task("workflows_app.tasks.recover")


def test_checks_of_django_q_are_silent_with_the_immediate_backend(settings):
    settings.WORKFLOWS = {"BACKGROUND": "immediate"}
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_q"]
    del settings.Q_CLUSTER
    assert check_django_q_setup() == []


def test_w001_without_timeout_does_not_compare_with_none():
    with override_settings(WORKFLOWS={"BACKGROUND": "django_q"}, Q_CLUSTER={"orm": "default"}):
        [warning] = check_q_cluster()
    assert warning.id == "workflows_app.W001"
    assert warning.msg == (
        "Q_CLUSTER sets no 'timeout' (a task may run for ever), while 'retry' re-delivers "
        "a task after 60 seconds."
    )
    assert "None" not in warning.msg


def test_e005_names_the_missing_extra(settings, monkeypatch):
    real_import = checks_module.importlib.import_module

    def without(name, *args):
        if name in ("croniter", "redis"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(checks_module.importlib, "import_module", without)
    create_workflow("checks-cron", lambda input: None, schedule="0 2 * * *")
    settings.WORKFLOWS = {"BACKGROUND": "django_q"}
    settings.Q_CLUSTER = REDIS_Q_CLUSTER
    messages = check_extras()
    assert [(m.id, m.hint) for m in messages] == [
        ("workflows_app.E005", "pip install 'workflows-app[redis]'"),
        ("workflows_app.E005", "pip install 'workflows-app[cron]'"),
    ]
    assert "checks-cron" in messages[1].msg
    settings.Q_CLUSTER = GOOD_Q_CLUSTER
    assert [m.hint for m in check_extras()] == ["pip install 'workflows-app[cron]'"]


@override_settings(WORKFLOWS={"BACKGROUND": "django_q"}, Q_CLUSTER=REDIS_Q_CLUSTER)
def test_w002_redis_broker():
    messages = check_q_cluster()
    assert ids(messages) == ["workflows_app.W002"]
    assert messages[0].level == checks.WARNING
    assert "workflows recover" in messages[0].hint


@override_settings(WORKFLOWS={"BACKGROUND": "immediate"}, Q_CLUSTER=REDIS_Q_CLUSTER)
def test_w002_silent_when_background_is_immediate():
    assert check_q_cluster() == []


@pytest.mark.parametrize(
    "broker",
    [
        {"orm": "default"},
        {"broker_class": "myapp.brokers.Custom"},
        {"sqs": {"aws_region": "eu-west-1"}},
        {"mongo": {"host": "localhost"}},
        {"iron_mq": {"token": "x"}},
    ],
)
def test_w002_silent_for_brokers_with_receipts(broker):
    q_cluster = {"timeout": 300, "retry": 420, **broker}
    with override_settings(WORKFLOWS={"BACKGROUND": "django_q"}, Q_CLUSTER=q_cluster):
        assert check_q_cluster() == []


def test_a_cron_schedule_without_croniter_names_the_extra(monkeypatch):
    import datetime

    from workflows_app.background import next_cron_time

    monkeypatch.setitem(sys.modules, "croniter", None)  # import croniter -> ImportError
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'workflows-app\[cron\]'"):
        next_cron_time("0 2 * * *", datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))


@pytest.mark.parametrize("broker", [{}, {"name": "workflows"}])
def test_w002_silent_when_no_broker_is_named(broker):
    # The app then picks a database broker, not django-q2's Redis default.
    q_cluster = {"timeout": 300, "retry": 420, **broker}
    with override_settings(WORKFLOWS={"BACKGROUND": "django_q"}, Q_CLUSTER=q_cluster):
        assert check_q_cluster() == []
        assert not brokers.uses_redis()


def test_e006_postgres_broker_on_a_database_that_cannot_carry_it():
    q_cluster = {
        "timeout": 300,
        "retry": 420,
        "broker_class": brokers.POSTGRES_BROKER,
        "orm": "not-a-database",
    }
    with override_settings(WORKFLOWS={"BACKGROUND": "django_q"}, Q_CLUSTER=q_cluster):
        messages = check_q_cluster()
    assert ids(messages) == ["workflows_app.E006"]
    assert messages[0].level == checks.ERROR


def test_default_broker_follows_the_database(is_postgres):
    expected = {"orm": "default"}
    if is_postgres:
        expected["broker_class"] = brokers.POSTGRES_BROKER
    assert brokers.default_broker({"timeout": 300}) == expected
    assert brokers.default_broker({"redis": "redis://localhost:6379/0"}) == {}
    q_cluster = {"timeout": 300, "retry": 420, **expected}
    with override_settings(WORKFLOWS={"BACKGROUND": "django_q"}, Q_CLUSTER=q_cluster):
        assert check_q_cluster() == []


SAVING = {"BACKGROUND": "django_q", "SAVE_TASK_RESULTS": True}


@pytest.mark.parametrize("save_limit", [None, 1000, 1])
def test_w003_django_q_prunes_saved_results_per_task(save_limit):
    q_cluster = {**GOOD_Q_CLUSTER}
    del q_cluster["save_limit"]
    if save_limit is not None:
        q_cluster["save_limit"] = save_limit
    with override_settings(WORKFLOWS=SAVING, Q_CLUSTER=q_cluster):
        [warning] = check_task_results()
    assert (warning.id, warning.level) == ("workflows_app.W003", checks.WARNING)
    assert f"'save_limit' is {save_limit or 250}" in warning.msg
    assert "SAVE_TASK_RESULTS" in warning.msg
    assert "TASK_RESULT_RETENTION_DAYS" in warning.hint


def test_w003_only_when_the_app_saves_its_task_results():
    # django-q2 returns before its pruning for a success it does not save.
    q_cluster = {**GOOD_Q_CLUSTER, "save_limit": 250}
    with override_settings(WORKFLOWS={"BACKGROUND": "django_q"}, Q_CLUSTER=q_cluster):
        assert check_task_results() == []
    off = {"BACKGROUND": "django_q", "SAVE_TASK_RESULTS": False}
    with override_settings(WORKFLOWS=off, Q_CLUSTER=q_cluster):
        assert check_task_results() == []
    with override_settings(WORKFLOWS=SAVING, Q_CLUSTER=q_cluster):
        assert ids(check_task_results()) == ["workflows_app.W003"]


@pytest.mark.parametrize("save_limit", [0, -1])
def test_w003_silent_without_pruning_by_django_q(save_limit):
    q_cluster = {**GOOD_Q_CLUSTER, "save_limit": save_limit}
    with override_settings(WORKFLOWS=SAVING, Q_CLUSTER=q_cluster):
        assert check_task_results() == []
    immediate = {"BACKGROUND": "immediate", "SAVE_TASK_RESULTS": True}
    with override_settings(WORKFLOWS=immediate, Q_CLUSTER={"name": "t"}):
        assert check_task_results() == []


@pytest.mark.parametrize("value", [0, -1, "7", True])
def test_task_result_retention_must_be_positive_or_none(value):
    with override_settings(WORKFLOWS={"TASK_RESULT_RETENTION_DAYS": value}):
        assert ids(check_workflows_settings()) == ["workflows_app.E002"]
    with override_settings(WORKFLOWS={"TASK_RESULT_RETENTION_DAYS": None}):
        assert check_workflows_settings() == []
