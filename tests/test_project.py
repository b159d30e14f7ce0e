"""The demo/host project: settings, system checks, admin wiring."""

import os
import subprocess
import sys

import pytest
from django.core.management import call_command

from project.settings import BASE_DIR, checkout_secret_key, database_from_url


def test_postgres_url_becomes_a_postgresql_database():
    db = database_from_url("postgres://alice:s%40cret@db.example:6543/shop?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert db["NAME"] == "shop"
    assert db["USER"] == "alice"
    assert db["PASSWORD"] == "s@cret"
    assert db["HOST"] == "db.example"
    assert db["PORT"] == "6543"
    assert db["OPTIONS"] == {"sslmode": "require"}
    assert db["TEST"]["NAME"] == "test_shop"


def test_postgres_url_without_password_or_port():
    db = database_from_url("postgresql://postgres@127.0.0.1/workflows_app")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == ("postgres", "", "127.0.0.1", "")
    assert db["NAME"] == "workflows_app"


def test_sqlite_url_with_absolute_path(tmp_path):
    path = tmp_path / "other.sqlite3"
    db = database_from_url(f"sqlite:///{path}")
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(path)


def test_sqlite_url_without_path_uses_the_default_file():
    db = database_from_url("sqlite://")
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(BASE_DIR / "db.sqlite3")


@pytest.mark.parametrize("url", ["mysql://root@localhost/db", "redis://127.0.0.1:6379/0", ""])
def test_unsupported_database_url_raises(url):
    with pytest.raises(ValueError, match="Unsupported DATABASE_URL scheme"):
        database_from_url(url)


@pytest.mark.django_db
def test_system_checks_pass():
    # Database access allowed: JSONField's check asks the connection whether it
    # supports JSON, which opens it unless an earlier test already did.
    call_command("check")


@pytest.mark.django_db
def test_admin_login_page_answers(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content


@pytest.mark.django_db
def test_admin_index_redirects_anonymous_users_to_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_admin_index_answers_for_a_superuser(admin_client):
    assert admin_client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_the_demo_brands_the_admin_from_its_own_templates(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert '<div id="site-name"><a href="/admin/">Demo administration</a></div>' in page
    assert "| Demo administration</title>" in page


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgres_marker_runs_on_postgresql(is_postgres):
    assert is_postgres


@pytest.mark.django_db
def test_workflows_modules_of_installed_apps_are_discovered():
    from workflows_app.engine import workflow_engine
    from workflows_app.sdk import get_workflow

    assert get_workflow("hello-workflow").options["retention_time"] == 99999
    res = workflow_engine.run("hello-workflow", input={"name": "Ada"})
    assert res.result == {"message": "Hello, Ada!"}
    execution = workflow_engine.list_workflow_executions(
        filters={"workflow_id": "hello-workflow", "transaction_id": res.transaction.transaction_id}
    ).get()
    assert execution.state == "done"
    assert [row["stepId"] for row in execution.steps_log()] == ["say-hello"]


def test_the_secret_key_is_generated_per_checkout_and_kept_out_of_git(tmp_path, settings):
    key_file = tmp_path / ".secret_key"
    first = checkout_secret_key(key_file)
    assert len(first) >= 50
    assert checkout_secret_key(key_file) == first
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert checkout_secret_key(tmp_path / "other") != first
    assert "not-for-production" not in settings.SECRET_KEY
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "project/.secret_key"], cwd=BASE_DIR, check=False
    )
    assert ignored.returncode == 0


def test_allowed_hosts_are_local_unless_the_environment_says_otherwise():
    script = "import project.settings as s; print(','.join(s.ALLOWED_HOSTS))"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOWED_HOSTS"}
    local = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )
    assert local.stdout.strip() == "localhost,127.0.0.1,[::1]"
    opened = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BASE_DIR,
        env={**env, "DJANGO_ALLOWED_HOSTS": "shop.example, api.example"},
        capture_output=True,
        text=True,
    )
    assert opened.stdout.strip() == "shop.example,api.example"
