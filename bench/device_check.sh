#!/usr/bin/env bash
# One prepared GPU check: bash bench/device_check.sh [--dry-run] [--out FILE] (see bench/device_check.py).
# Uses the python on the machine (PYTHON, else python3) and installs nothing; pure-Python and wheel
# dependencies that machine lacks may lie unpacked in bench/.deps (bench/device_deps.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -d bench/.deps ] && ! "$PY" -c "import ptwt, pywt, ismrmrd" 2>/dev/null; then
    export PYTHONPATH="$PYTHONPATH:$PWD/bench/.deps"  # only where the machine lacks them
fi
exec "$PY" bench/device_check.py "$@"
