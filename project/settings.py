"""Settings of the demo/host project.

The database comes from ``DATABASE_URL`` (default: an SQLite file beside this
project, so the demo needs no services); ``REDIS_URL`` switches django-q2 from the
database broker to Redis.
"""

import os
import secrets
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import django

BASE_DIR = Path(__file__).resolve().parent.parent


def checkout_secret_key(path: Path) -> str:
    """The key kept in ``path`` (ignored by git), generated the first time it is needed.

    Written under a temporary name and linked into place, so processes starting
    together (the server and its workers) agree on one key.
    """
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(secrets.token_urlsafe(50))
    os.chmod(temporary, 0o600)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_text().strip()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or checkout_secret_key(
    Path(__file__).resolve().parent / ".secret_key"
)
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
# Local hosts only; DJANGO_ALLOWED_HOSTS (comma-separated) opens others deliberately.
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if host.strip()
]


def database_from_url(url: str) -> dict:
    """Turn ``postgres://user:pw@host:port/name`` or ``sqlite:///path`` into a DATABASES entry."""
    parsed = urlparse(url)
    if parsed.scheme in ("sqlite", "sqlite3"):
        path = unquote(parsed.path[1:] if parsed.path.startswith("//") else parsed.path)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path or str(BASE_DIR / "db.sqlite3"),
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    if parsed.scheme in ("postgres", "postgresql", "pgsql"):
        options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "OPTIONS": options,
            "TEST": {"NAME": "test_" + (unquote(parsed.path.lstrip("/")) or "postgres")},
        }
    raise ValueError(f"Unsupported DATABASE_URL scheme: {parsed.scheme!r}")


DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
    )
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular_sidecar",
    "django_q",
    "workflows_app",
    "project.examples",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"

AUTH_PASSWORD_VALIDATORS = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_EMAIL_BACKEND = os.environ.get(
    "DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"
)
# Django 6.1 configures email through MAILERS and deprecates EMAIL_BACKEND.
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": _EMAIL_BACKEND}}
else:
    EMAIL_BACKEND = _EMAIL_BACKEND

REDIS_URL = os.environ.get("REDIS_URL", "")

Q_CLUSTER = {
    "name": "workflows",
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    "timeout": 300,
    "retry": 420,
    "max_attempts": 1,
    "ack_failures": True,
    # No pruning per task by django-q2 (system check workflows_app.W003): the
    # cleanup schedule deletes old successes (WORKFLOWS["TASK_RESULT_RETENTION_DAYS"]).
    "save_limit": 0,
    "catch_up": False,
    "poll": 0.05,
    "label": "Task queue",
}
# No broker named: workflows_app picks its PostgreSQL broker on PostgreSQL and
# django-q2's ORM broker on SQLite (workflows_app.brokers).
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL

# Under pytest, background work runs in-process on a virtual clock
# (workflows_app.testing.advance); the tests that start real qcluster workers set
# WORKFLOWS_BACKGROUND=django_q for them.
TESTING = "pytest" in sys.modules
WORKFLOWS = {
    "BACKGROUND": os.environ.get("WORKFLOWS_BACKGROUND", "immediate" if TESTING else "django_q"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"workflows_app": {"handlers": ["console"], "level": "WARNING"}},
}
