# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/demo.sh: source it, do not run it.
#
# After sourcing, the current directory is the repository root and the project's
# virtualenv (.venv) exists, has the package installed in editable mode with its
# test extras, and is activated.
#
# The install is skipped when pyproject.toml has not changed since the last
# successful install: .venv/.install-stamp holds the sha256 of pyproject.toml and
# is written only after pip succeeded. Delete it (or .venv) to force a reinstall.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

VENV_DIR="$REPO_ROOT/.venv"
INSTALL_STAMP="$VENV_DIR/.install-stamp"
PYTHON_BIN="${PYTHON:-python3}"

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
        echo "==> Creating virtualenv in .venv ($("$PYTHON_BIN" --version 2>&1))"
        "$PYTHON_BIN" -m venv "$VENV_DIR"
        rm -f "$INSTALL_STAMP"
    fi
    # shellcheck disable=SC1091
    source "$VENV_DIR/bin/activate"

    local wanted
    wanted="$(_sha256 pyproject.toml)"
    if [[ -f "$INSTALL_STAMP" && "$(cat "$INSTALL_STAMP")" == "$wanted" ]]; then
        return 0
    fi
    echo "==> Installing workflows_app and its test dependencies into .venv"
    # The output goes to a log, shown only when pip fails (build back-ends print
    # warnings even under --quiet).
    local log="$VENV_DIR/install.log"
    if ! { python -m pip install --quiet --upgrade pip &&
        python -m pip install --quiet -e '.[test]'; } >"$log" 2>&1; then
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
