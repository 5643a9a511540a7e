"""I/O benchmark: write a folder of fastMRI-layout volumes, then time SliceDataset.

    python bench/bench_io.py [--volumes 10 --slices 20 --coils 15 --height 640 --width 368] [--dir D]

Prints one line: index build time with a cold and a warm index cache, and slices/s for reading
100 slices. The files were just written, so reads come from the OS page cache when RAM allows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mrirobust.data.dataset import INDEX_NAME, SliceDataset
from mrirobust.data.fastmri import write_volume


def write_folder(folder: Path, volumes: int, slices: int, coils: int, height: int, width: int) -> float:
    """Write the volumes; returns seconds. One random slice, rolled per slice, keeps generation cheap."""
    rng = np.random.default_rng(0)
    base = (rng.standard_normal((coils, height, width)) + 1j * rng.standard_normal((coils, height, width)))
    base = base.astype(np.complex64)
    target = rng.random((slices, 320, 320), dtype=np.float32)
    start = time.perf_counter()
    for v in range(volumes):
        kspace = np.stack([np.roll(base, v * slices + s, axis=-1) for s in range(slices)])
        write_volume(folder / f"file{1000000 + v}.h5", kspace, target=target, acquisition="CORPD_FBK")
    return time.perf_counter() - start


def time_dataset(folder: Path, reads: int) -> tuple[float, float]:
    """(seconds to open the dataset, slices/s over `reads` slices spread over all volumes)."""
    start = time.perf_counter()
    ds = SliceDataset(folder)
    opened = time.perf_counter() - start
    picks = np.linspace(0, len(ds) - 1, min(reads, len(ds))).astype(int)
    start = time.perf_counter()
    for i in picks:
        ds[int(i)]
    return opened, len(picks) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("volumes", 10), ("slices", 20), ("coils", 15), ("height", 640), ("width", 368),
                          ("reads", 100)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--dir", type=Path, default=None, help="write here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        wrote = write_folder(folder, args.volumes, args.slices, args.coils, args.height, args.width)
        gb = sum(p.stat().st_size for p in folder.glob("*.h5")) / 1e9
        cold_open, cold_rate = time_dataset(folder, args.reads)
        assert (folder / INDEX_NAME).is_file()
        warm_open, warm_rate = time_dataset(folder, args.reads)
        print(f"bench_io: {args.volumes} vols x {args.slices} slices x {args.coils} coils x "
              f"{args.height}x{args.width} ({gb:.2f} GB, written in {wrote:.1f} s) | open: cold index "
              f"{cold_open * 1e3:.1f} ms, warm index {warm_open * 1e3:.1f} ms | {args.reads} slices: "
              f"{cold_rate:.1f} slices/s (first pass), {warm_rate:.1f} slices/s (second pass)")


if __name__ == "__main__":
    main()
