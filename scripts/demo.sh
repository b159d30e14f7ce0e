#!/usr/bin/env bash
# The demo: install, migrate an SQLite database, create the `admin` superuser with a
# fresh random password, create the django-q2 schedules, run the example workflows
# (the first time), print the login, then serve the admin at 127.0.0.1:8000 with one
# django-q2 worker beside it (Ctrl-C stops both).
#
#   DEMO_NO_SERVE=1 scripts/demo.sh   # prepare everything, print the login, do not serve
#   WORKFLOWS_VENV=/path/to/venv scripts/demo.sh
#                                     # use that virtualenv as it is (no install into it)
set -euo pipefail

# shellcheck source=scripts/_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
if [[ -n "${WORKFLOWS_VENV:-}" ]]; then
    # An existing virtualenv with the dependencies (the demo's test passes its own, to
    # skip a reinstall). The code itself is always this checkout's: manage.py's
    # directory comes first on sys.path, before any editable install.
    # shellcheck disable=SC1091
    source "$WORKFLOWS_VENV/bin/activate"
else
    ensure_venv
fi

# The demo always uses the default SQLite file (db.sqlite3 at the repository root),
# whatever DATABASE_URL the shell may hold.
unset DATABASE_URL

DEMO_HOST="127.0.0.1"
DEMO_PORT="8000"
DEMO_USER="admin"

migrate() {
    echo "==> Migrating the SQLite database (db.sqlite3)"
    python manage.py migrate --noinput
}

# Creates the superuser, or resets its password when it already exists, and prints
# the new password on stdout (nothing else).
create_admin() {
    DEMO_USER="$DEMO_USER" python - <<'PY'
import os
import secrets

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402

User = get_user_model()
username = os.environ["DEMO_USER"]
password = secrets.token_urlsafe(12)
user, _ = User.objects.get_or_create(
    username=username, defaults={"email": f"{username}@example.com"}
)
user.is_staff = True
user.is_superuser = True
user.is_active = True
user.set_password(password)
user.save()
print(password)
PY
}

# The django-q2 schedules (retention cleanup, recovery, and the scheduled example
# workflow, every minute), then the example runs, only into a database that has none
# yet. The examples run with the immediate backend: what would go to a worker runs
# here at once, so the runs are recorded before the worker starts.
prepare_demo_content() {
    echo "==> Creating the django-q2 schedules (manage.py workflows setup)"
    python manage.py workflows setup
    echo "==> Running the example workflows (manage.py run_examples --once)"
    WORKFLOWS_BACKGROUND=immediate python manage.py run_examples --once
}

# One worker beside the web server: enough for the demo, and SQLite with the ORM
# broker serialises writers anyway. Bash starts a script's background jobs with
# SIGINT ignored, so Ctrl-C cannot be relied on to reach the worker: the EXIT trap
# stops it, however the server ended (Ctrl-C, an error, or its own exit).
serve() {
    export Q_WORKERS=1
    echo "==> Starting a django-q2 worker (manage.py qcluster)"
    python manage.py qcluster &
    QCLUSTER_PID=$!
    trap stop_worker EXIT
    trap 'exit 130' INT TERM
    echo "==> Serving on http://${DEMO_HOST}:${DEMO_PORT}/ (Ctrl-C stops the server and the worker)"
    python manage.py runserver "${DEMO_HOST}:${DEMO_PORT}"
}

stop_worker() {
    if [[ -n "${QCLUSTER_PID:-}" ]] && kill -0 "$QCLUSTER_PID" 2>/dev/null; then
        echo "==> Stopping the django-q2 worker"
        kill -TERM "$QCLUSTER_PID" 2>/dev/null || true
        wait "$QCLUSTER_PID" 2>/dev/null || true
    fi
}

print_login() {
    local password="$1"
    cat <<MSG

==================================================================
  workflows_app demo is ready

  Admin:     http://${DEMO_HOST}:${DEMO_PORT}/admin/
  User:      ${DEMO_USER}
  Password:  ${password}

  Runs:      http://${DEMO_HOST}:${DEMO_PORT}/admin/workflows_app/workflowexecution/
  API docs:  http://${DEMO_HOST}:${DEMO_PORT}/api/docs/

  (a new password is set each time the demo starts)
==================================================================

MSG
}

migrate
password="$(create_admin)"
prepare_demo_content
print_login "$password"

if [[ "${DEMO_NO_SERVE:-}" == "1" ]]; then
    echo "DEMO_NO_SERVE=1: not starting the server."
    exit 0
fi

serve
