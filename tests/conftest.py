"""Fixtures and markers shared by the whole test suite."""

import pytest
from django.db import connection


def database_is_postgres() -> bool:
    """True when the tests run on PostgreSQL (DATABASE_URL=postgres://...)."""
    return connection.vendor == "postgresql"


@pytest.fixture
def is_postgres() -> bool:
    return database_is_postgres()


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``@pytest.mark.postgres`` unless the database is PostgreSQL."""
    if database_is_postgres():
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://...")
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(skip)


@pytest.fixture
def django_q_backend(settings):
    """Runs started by this test process are queued for django-q2 workers; yields the
    django-q2 scheduler now in use."""
    from workflows_app.background import DjangoQScheduler
    from workflows_app.orchestration import runtime

    settings.WORKFLOWS = {**settings.WORKFLOWS, "BACKGROUND": "django_q"}
    assert isinstance(runtime.scheduler, DjangoQScheduler)
    yield runtime.scheduler


@pytest.fixture(autouse=True)
def _fresh_background_clock():
    """Each test starts with no pending timers and the clock at wall time."""
    from workflows_app.testing import reset

    reset()
    yield
    reset()
