"""Call Debian's `bart` binary from tests and benches, exchanging arrays through .cfl/.hdr files.

BART's cfl format: a text header `<name>.hdr` listing the dimensions, and `<name>.cfl` holding the
complex64 samples in column-major (Fortran) order. BART's k-space dimensions are
[readout (x), phase (y), z, coils, maps, ...].
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def bart_available() -> bool:
    """True when a `bart` executable is on PATH."""
    return shutil.which("bart") is not None


def write_cfl(path_base: str | Path, array: np.ndarray) -> None:
    """Write `array` as `<path_base>.hdr` + `<path_base>.cfl` (complex64, column-major)."""
    array = np.asarray(array, dtype=np.complex64)
    dims = array.shape if array.ndim else (1,)
    Path(f"{path_base}.hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    array.ravel(order="F").tofile(f"{path_base}.cfl")


def read_cfl(path_base: str | Path) -> np.ndarray:
    """Read `<path_base>.hdr` + `<path_base>.cfl`; trailing singleton dimensions are dropped."""
    lines = Path(f"{path_base}.hdr").read_text().splitlines()
    dims = [int(d) for d in lines[lines.index("# Dimensions") + 1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(f"{path_base}.cfl", dtype=np.complex64, count=int(np.prod(dims)))
    return data.reshape(dims, order="F")


def bart(cmd: str, *inputs: np.ndarray, nargout: int = 1, timing: dict[str, float] | None = None):
    """Run `bart <cmd> in_0 .. in_k out_0 .. out_n` in a temporary folder and return the outputs.

    Returns one array when `nargout == 1`, else a tuple. If `timing` is given, its "bart_s" entry
    is set to the seconds spent in the bart process alone (without our file writing and reading).
    """
    if not bart_available():
        raise RuntimeError("the bart binary is not on PATH")
    with tempfile.TemporaryDirectory(prefix="bart-") as tmp:
        in_names = [str(Path(tmp, f"in{i}")) for i in range(len(inputs))]
        out_names = [str(Path(tmp, f"out{i}")) for i in range(nargout)]
        for name, array in zip(in_names, inputs):
            write_cfl(name, array)
        start = time.perf_counter()
        result = subprocess.run(["bart", *shlex.split(cmd), *in_names, *out_names], capture_output=True, text=True)
        if timing is not None:
            timing["bart_s"] = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"bart {cmd} failed ({result.returncode}): {result.stderr.strip()}")
        outputs = tuple(read_cfl(name) for name in out_names)
    return outputs[0] if nargout == 1 else outputs
