"""BART's .cfl/.hdr k-space files (the format of `bart` and its MATLAB/Python helpers).

`<name>.hdr` is text with a `# Dimensions` line followed by the dimensions (up to 16);
`<name>.cfl` holds that many complex64 samples, little endian, in column-major order. BART's
k-space dimensions are [readout (x), phase 1 (y), phase 2 (z), coils, maps, ...] with slices in
dimension 13 (SLICE_DIM). A 2-D multi-coil k-space here is x = H, y = W, coils, slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrirobust.errors import DataError

CFL_SUFFIXES = (".cfl", ".hdr")
_READ, _PHASE, _PHASE2, _COILS, _SLICES = 0, 1, 2, 3, 13
_NAMES = {2: "phase 2 (3-D k-space: slice it along the readout first)", 4: "maps", 5: "echoes (TE)",
          10: "time", 11: "coefficients", 12: "slice-group"}


def _dims(hdr: Path) -> list[int]:
    try:
        lines = hdr.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(hdr, f"cannot read the BART header: {error}") from None
    try:
        text = lines[[line.strip() for line in lines].index("# Dimensions") + 1]
        dims = [int(d) for d in text.split()]
    except (ValueError, IndexError):
        raise DataError(hdr, "not a BART header: no '# Dimensions' line followed by integers") from None
    if not dims or len(dims) > 16 or min(dims) < 1:
        raise DataError(hdr, f"bad BART dimensions {dims}: 1 to 16 positive integers expected")
    return dims + [1] * (16 - len(dims))


def read_bart(path: str | Path) -> np.ndarray:
    """The k-space (slices, coils, H, W) complex64 of a .cfl/.hdr pair (either file's path)."""
    path = Path(path)
    hdr, cfl = path.with_suffix(".hdr"), path.with_suffix(".cfl")
    for part in (hdr, cfl):
        if not part.is_file():
            raise DataError(part, "missing half of a BART .cfl/.hdr pair")
    dims = _dims(hdr)
    extra = [d for d in range(16) if dims[d] > 1 and d not in (_READ, _PHASE, _COILS, _SLICES)]
    if extra:
        raise DataError(hdr, f"dimension {extra[0]} ({_NAMES.get(extra[0], 'unsupported')}) is {dims[extra[0]]}; "
                             "expected k-space [H, W, 1, coils] with slices in dimension 13")
    count = int(np.prod(dims))
    size = cfl.stat().st_size
    if size != 8 * count:
        problem = "truncated" if size < 8 * count else "too long"
        raise DataError(cfl, f"{problem}: {size} bytes, but the .hdr's dimensions {dims[:_SLICES + 1]} need "
                             f"{8 * count} (complex64)")
    data = np.fromfile(cfl, dtype="<c8", count=count).reshape(dims, order="F")
    picked = data[:, :, 0, :, 0, 0, 0, 0, 0, 0, 0, 0, 0, :, 0, 0]  # (H, W, coils, slices)
    return np.ascontiguousarray(picked.transpose(3, 2, 0, 1)).astype(np.complex64, copy=False)
