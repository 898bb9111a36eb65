# The Python environment of scripts/quickstart.sh and .ci/run (sourced by both): it sets PYTHON, puts its bin/ first
# on PATH and MUJOCO_GL=egl, and installs requirements-dev.txt's pins when one is missing (saying so). In this order:
# under CI the running python3; an active virtual environment; the repository's .venv/; a python3 of 3.11 that holds
# every pin; else a new .venv/ made with python3.11 (or a python3 of 3.11).
# shellcheck shell=bash
laom_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MUJOCO_GL=${MUJOCO_GL:-egl}
if [[ "${CI:-}" == "true" ]]; then
    PYTHON=$(command -v python3)
    "$PYTHON" -m pip install -q -r "$laom_root/requirements-dev.txt"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
elif [[ -x "$laom_root/.venv/bin/python" ]]; then
    PYTHON="$laom_root/.venv/bin/python"
elif command -v python3 > /dev/null && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    && [[ -z "$(python3 "$laom_root/.ci/missing_pins.py" "$laom_root/requirements-dev.txt" 2> /dev/null)" ]]; then
    PYTHON=$(command -v python3)
else
    laom_base=""
    for candidate in python3.11 python3; do
        if command -v "$candidate" > /dev/null \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2> /dev/null; then
            laom_base=$candidate
            break
        fi
    done
    if [[ -z "$laom_base" ]]; then
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
    laom_missing=$("$PYTHON" "$laom_root/.ci/missing_pins.py" "$laom_root/requirements-dev.txt")
    if [[ -n "$laom_missing" ]]; then
        echo "installing the pinned Python requirements (requirements-dev.txt) into $(dirname "$(dirname "$PYTHON")")" \
            "with pip, a few minutes; missing: $laom_missing"
        "$PYTHON" -m pip install -q -r "$laom_root/requirements-dev.txt"
    fi
fi
export PATH="$(dirname "$PYTHON"):$PATH"
unset laom_base laom_missing
