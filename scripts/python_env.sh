# The Python environment of scripts/quickstart.sh and .ci/run (sourced by both): it sets PYTHON, puts its bin/ first
# on PATH and MUJOCO_GL=egl, and installs requirements-dev.txt's pins when one is missing (saying so). In this order:
# under CI the running python3; an active virtual environment; the repository's .venv/; a python3 of 3.11 that holds
# every pin; else a new .venv/ made with python3.11 (or a python3 of 3.11).
# shellcheck shell=bash
laom_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
laom_pins="$laom_root/requirements-dev.txt"
export MUJOCO_GL=${MUJOCO_GL:-egl}
laom_is_311() {  # python: whether it is a Python 3.11
    command -v "$1" >/dev/null && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null
}
if [[ "${CI:-}" == "true" ]]; then
    PYTHON=$(command -v python3)
    "$PYTHON" -m pip install -q -r "$laom_pins"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
elif [[ -x "$laom_root/.venv/bin/python" ]]; then
    PYTHON="$laom_root/.venv/bin/python"
elif laom_is_311 python3 && [[ -z "$(python3 "$laom_root/.ci/missing_pins.py" "$laom_pins" 2>/dev/null)" ]]; then
    PYTHON=$(command -v python3)
else
    laom_base=python3.11
    laom_is_311 "$laom_base" || laom_base=python3
    if ! laom_is_311 "$laom_base"; then
        echo "error: this project needs Python 3.11 (python3.11 or a python3 of 3.11 on PATH); found" \
            "$(python3 --version 2>&1 || echo 'no python3')" >&2
        exit 1
    fi
    echo "setting up a virtual environment in .venv/ ($($laom_base --version)); later runs reuse it"
    if ! "$laom_base" -m venv "$laom_root/.venv"; then
        rm -rf "$laom_root/.venv"
        echo "error: $laom_base -m venv failed (on Debian / Ubuntu: apt install python3.11-venv)" >&2
        exit 1
    fi
    PYTHON="$laom_root/.venv/bin/python"
fi
if [[ "${CI:-}" != "true" ]]; then
    laom_missing=$("$PYTHON" "$laom_root/.ci/missing_pins.py" "$laom_pins")
    if [[ -n "$laom_missing" ]]; then
        echo "installing the pinned Python requirements (requirements-dev.txt) into $(dirname "$(dirname "$PYTHON")")" \
            "with pip, a few minutes; missing: $laom_missing"
        "$PYTHON" -m pip install -q -r "$laom_pins"
    fi
fi
export PATH="$(dirname "$PYTHON"):$PATH"
unset laom_base laom_missing laom_pins
unset -f laom_is_311
