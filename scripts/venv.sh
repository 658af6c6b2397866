# Sourced by scripts/test and scripts/demo: make sure the project's virtual environment exists and
# holds this pyproject.toml's dependencies, then put it first on PATH.
#
# The environment is $PJUDGE_VENV (default: .venv in the repo), created with the python3 on PATH
# when missing. A stamp file records the hash of pyproject.toml and the extras installed; when
# pyproject.toml changes, the next run installs again. A distribution's own python3 (Debian 12+,
# Ubuntu 24.04: pip refuses to install outside a virtual environment, PEP 668) works, as long as
# its venv module is installed (Debian/Ubuntu: the python3-venv package).

# ensure_venv SPEC: SPEC is what pip installs, e.g. '.' or '.[test]'. Sets VENV_PYTHON.
ensure_venv() {
  local spec=$1
  local venv=${PJUDGE_VENV:-$PWD/.venv}
  local python=${PYTHON:-python3}
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: $python not found on PATH; persona-judge needs Python 3.11 or newer." >&2
    exit 1
  fi
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "error: $("$python" --version 2>&1) at $(command -v "$python"): persona-judge needs Python 3.11 or newer." >&2
      exit 1
    fi
    rm -rf "$venv"
    echo "creating the virtual environment $venv with $(command -v "$python") ($("$python" --version 2>&1))" >&2
    local log
    log=$(mktemp)
    if ! "$python" -m venv "$venv" >"$log" 2>&1; then
      cat "$log" >&2
      rm -rf "$venv" "$log"
      local version
      version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      echo "error: '$python -m venv' failed: this Python has no venv/ensurepip module." >&2
      echo "  On Debian or Ubuntu install it with: sudo apt-get install python3-venv (or python$version-venv)," >&2
      echo "  then run this command again." >&2
      exit 1
    fi
    rm -f "$log"
  fi
  local stamp want
  stamp="$venv/.pjudge-installed-$(printf '%s' "$spec" | tr -c 'A-Za-z0-9' '_')"
  want=$("$venv/bin/python" -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing persona-judge ($spec) into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >/dev/null
    printf '%s\n' "$want" >"$stamp"
  fi
  export VIRTUAL_ENV=$venv PATH="$venv/bin:$PATH"
  unset PYTHONHOME
  export VENV_PYTHON=$venv/bin/python
}
