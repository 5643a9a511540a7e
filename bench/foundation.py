"""The foundation benchmarks in one run, so their ratios share the machine's state.

    python bench/foundation.py

1. ESPIRiT: ours vs `bart ecalib -m1` on one 15-coil 640x368 slice (and ours batched).
2. The multi-coil operator: our forward+adjoint vs sigpy's Sense linop, same slice size.
3. Reading 100 slices of fastMRI-layout files through SliceDataset (cold and warm index).
Each part prints its own line; see bench/README.md for recorded results.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_espirit  # noqa: E402
import bench_io  # noqa: E402
import bench_operator  # noqa: E402

if __name__ == "__main__":
    for part in (bench_espirit, bench_operator, bench_io):
        sys.argv = [part.__file__]
        part.main()
