#!/usr/bin/env bash
# Run HERE (with network), not on the GPU machine: unpack the wheels of the packages mrirobust needs
# that the GPU machine's image lacks (ptwt, PyWavelets, ismrmrd, xsdata; numpy, scipy, torch, h5py,
# scikit-image, pyarrow, matplotlib, pyyaml, tqdm, pillow are there) into bench/.deps for Python 3.12
# x86-64. Then carry bench/.deps with the device run; device_check.sh puts it on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
wheels="$(mktemp -d)"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$wheels" ptwt==1.0.1 PyWavelets==1.9.0 ismrmrd==1.15.0 xsdata==26.10
rm -rf bench/.deps && mkdir -p bench/.deps
for wheel in "$wheels"/*.whl; do "$PY" -m zipfile -e "$wheel" bench/.deps; done
rm -rf "$wheels"
du -sh bench/.deps
