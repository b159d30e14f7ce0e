#!/usr/bin/env bash
# The demo: install, migrate an SQLite database, create the `admin` superuser with a
# fresh random password, print the login and serve the admin at 127.0.0.1:8000.
#
#   DEMO_NO_SERVE=1 scripts/demo.sh   # prepare everything, print the login, do not serve
set -euo pipefail

# shellcheck source=scripts/_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv

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

# ---------------------------------------------------------------------------
# DEMO CONTENT: the place for everything the demo shows besides a bare admin.
# Later work adds here: `python manage.py workflows setup`, a few example
# workflow runs, and starting a qcluster worker in the background (stopped by a
# trap when the server exits).
# ---------------------------------------------------------------------------
prepare_demo_content() {
    :
}

print_login() {
    local password="$1"
    cat <<MSG

==================================================================
  workflows_app demo is ready

  Admin:     http://${DEMO_HOST}:${DEMO_PORT}/admin/
  User:      ${DEMO_USER}
  Password:  ${password}

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

echo "==> Serving on http://${DEMO_HOST}:${DEMO_PORT}/ (Ctrl-C to stop)"
exec python manage.py runserver "${DEMO_HOST}:${DEMO_PORT}"
