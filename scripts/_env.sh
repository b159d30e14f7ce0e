# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/demo.sh: source it, do not run it.
#
# After sourcing, the current directory is the repository root and the project's
# virtualenv exists, has the package installed in editable mode with its test
# extras, and is activated.
#
# CELL picks one cell of the test matrix, as pyXY-djAB (Python X.Y, Django A.B):
#   unset          .venv with python3 (the primary cell: Python 3.11, Django 5.2)
#   py313-dj61     .venv-py313-dj61 with pyenv's (or PATH's) python3.13 and Django 6.1.x
# .ci/run runs every supported cell (its CELLS list).
#
# The install is skipped when pyproject.toml has not changed since the last
# successful install: <venv>/.install-stamp holds the sha256 of pyproject.toml and
# the cell, and is written only after pip succeeded. Delete it (or the virtualenv)
# to force a reinstall.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

CELL="${CELL:-}"

# find_python X.Y: the interpreter for Python X.Y (pyenv's, else pythonX.Y on PATH).
find_python() {
    local version="$1" candidate
    if command -v pyenv >/dev/null 2>&1; then
        # shellcheck disable=SC2012
        candidate="$(ls -d "$(pyenv root)/versions/$version".* 2>/dev/null | sort -V | tail -n 1)"
        if [[ -n "$candidate" && -x "$candidate/bin/python$version" ]]; then
            echo "$candidate/bin/python$version"
            return 0
        fi
    fi
    command -v "python$version" 2>/dev/null
}

if [[ -z "$CELL" ]]; then
    VENV_DIR="$REPO_ROOT/.venv"
    PYTHON_BIN="${PYTHON:-python3}"
    DJANGO_SPEC="Django>=5.2,<5.3"
elif [[ "$CELL" =~ ^py([0-9])([0-9]+)-dj([0-9])([0-9]+)$ ]]; then
    VENV_DIR="$REPO_ROOT/.venv-$CELL"
    PY_VERSION="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
    PYTHON_BIN="$(find_python "$PY_VERSION")" || {
        echo "!!! CELL=$CELL: no Python $PY_VERSION found (pyenv or python$PY_VERSION)" >&2
        return 1
    }
    DJANGO_SPEC="Django~=${BASH_REMATCH[3]}.${BASH_REMATCH[4]}.0"
else
    echo "!!! CELL=$CELL: expected pyXY-djAB, e.g. py313-dj61" >&2
    return 1
fi
INSTALL_STAMP="$VENV_DIR/.install-stamp"

# pip must never wait for an answer: CI has no standard input.
export PIP_NO_INPUT=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

_sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

ensure_venv() {
    if [[ ! -x "$VENV_DIR/bin/python" ]]; then
        echo "==> Creating virtualenv in ${VENV_DIR#"$REPO_ROOT/"} ($("$PYTHON_BIN" --version 2>&1))"
        "$PYTHON_BIN" -m venv "$VENV_DIR"
        rm -f "$INSTALL_STAMP"
    fi
    # shellcheck disable=SC1091
    source "$VENV_DIR/bin/activate"

    local wanted
    wanted="$(_sha256 pyproject.toml) $DJANGO_SPEC"
    if [[ -f "$INSTALL_STAMP" && "$(cat "$INSTALL_STAMP")" == "$wanted" ]]; then
        return 0
    fi
    echo "==> Installing workflows_app, its extras and test dependencies, $DJANGO_SPEC"
    # The output goes to a log, shown only when pip fails (build back-ends print
    # warnings even under --quiet).
    local log="$VENV_DIR/install.log"
    if ! { python -m pip install --quiet --upgrade pip &&
        python -m pip install --quiet -e '.[postgres,redis,cron,sidecar,test]' "$DJANGO_SPEC"; } \
        >"$log" 2>&1; then
        cat "$log" >&2
        echo "!!! pip install failed (log: $log)" >&2
        return 1
    fi
    echo "$wanted" >"$INSTALL_STAMP"
}

# The admin's browser tests drive Debian's Chromium through Playwright (never a
# browser downloaded by Playwright). Install it when it is missing and we may.
ensure_chromium() {
    if [[ -x /usr/bin/chromium ]]; then
        return 0
    fi
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "==> Installing Debian's chromium for the browser tests"
        local log="$VENV_DIR/apt.log"
        if ! { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
            cat "$log" >&2
            echo "!!! could not install chromium (log: $log)" >&2
            return 1
        fi
    else
        echo "!!! /usr/bin/chromium is missing: install Debian's 'chromium' package" \
            "(sudo apt-get install chromium); the browser tests need it." >&2
        return 1
    fi
}
