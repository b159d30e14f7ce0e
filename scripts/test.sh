#!/usr/bin/env bash
# Lint, format check and the whole test suite. Extra arguments go to pytest,
# e.g. `scripts/test.sh -k settings -x`. Set DATABASE_URL to run on PostgreSQL.
set -euo pipefail

# shellcheck source=scripts/_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv
ensure_chromium

echo "==> ruff check"
ruff check .
echo "==> ruff format --check"
ruff format --check .
echo "==> pytest (database: ${DATABASE_URL:-sqlite, the default})"
# exec: pytest's exit status (including 5, "no tests collected") is the script's.
exec python -m pytest "$@" </dev/null
