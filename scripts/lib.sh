# Helpers shared by scripts/demo.sh and scripts/test.sh (sourced, not run).
# They expect to run from the repository root with PYTHON set.

# as_root CMD...: CMD as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "$0: needs root (or sudo) to run: $*" >&2
        return 1
    fi
}

# apt_install PKG...: Debian packages, without questions.
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$0: apt-get not found: install $* by hand, then run this again" >&2
        return 1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# ensure_venv SPEC NAME: .venv, with `pip install -e SPEC` done once (again when
# pyproject.toml changes, or when the compiled hot path is older than its sources:
# see setup.py and src/porch/_compiled.py; the rest is an editable install).
ensure_venv() {
    local spec=$1 stamp=.venv/.installed-$2
    if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        # Debian's python3 makes a half venv (no pip) when python3-venv is missing.
        rm -rf .venv
        echo "creating .venv with $PYTHON"
        if ! "$PYTHON" -m venv .venv; then
            rm -rf .venv
            apt_install python3-venv
            "$PYTHON" -m venv .venv
        fi
    fi
    if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || compiled_stale; then
        echo "installing porch into .venv: pip install -e '$spec'"
        .venv/bin/python -m pip install -q -e "$spec"
        touch "$stamp"
    fi
}

# compiled_stale: true when a module setup.py compiles is missing its build or is
# older than its .py/.pxd (src/porch/_compiled.py, run as a script: porch not imported).
compiled_stale() {
    [ "${PORCH_PURE_PYTHON:-}" = 1 ] && return 1
    .venv/bin/python src/porch/_compiled.py
}
