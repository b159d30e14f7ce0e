# Entry points. The work is done by the scripts in scripts/; lint and format reuse
# the virtualenv set-up of scripts/_env.sh.
.PHONY: demo test lint format

WITH_ENV = bash -c 'set -euo pipefail; source scripts/_env.sh; ensure_venv; "$$@"' with-env

# Install, migrate SQLite, print the admin login and serve on 127.0.0.1:8000.
demo:
	bash scripts/demo.sh

# Install, ruff check, ruff format --check, pytest. Pass pytest arguments with
# ARGS, e.g. make test ARGS="-k settings -x". CELL picks another cell of the test
# matrix in its own virtualenv, e.g. make test CELL=py313-dj61 (see scripts/_env.sh).
export CELL

test:
	bash scripts/test.sh $(ARGS)

# ruff check and ruff format --check, changing nothing.
lint:
	$(WITH_ENV) sh -c 'ruff check . && ruff format --check .'

# Apply ruff's safe fixes and reformat in place.
format:
	$(WITH_ENV) sh -c 'ruff check --fix . && ruff format .'
