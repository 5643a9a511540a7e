"""Time ESPIRiT maps: BART `ecalib -m1` vs `mrirobust.physics.espirit.espirit_maps` on CPU.

One simulated 15-coil 640x368 slice (fastMRI knee size); BART is timed with its file I/O and
alone; ours with torch's default threads; then our batched throughput at B=4.
Run: `python bench/bench_espirit.py`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import sigpy
import sigpy.mri
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.bart

from mrirobust.physics.espirit import espirit_maps  # noqa: E402
from mrirobust.physics.fft import fft2c  # noqa: E402
from tests.bart import bart  # noqa: E402

COILS, HEIGHT, WIDTH, BATCH = 15, 640, 368, 4


def simulated_kspace() -> torch.Tensor:
    """Shepp-Logan with a smooth phase, times SigPy birdcage maps, (C, H, W) k-space."""
    image = sigpy.shepp_logan((HEIGHT, WIDTH)).astype(np.complex64)
    yy, xx = np.mgrid[-1 : 1 : HEIGHT * 1j, -1 : 1 : WIDTH * 1j]
    image = image * np.exp(1j * (xx + 0.5 * yy**2)).astype(np.complex64)
    sens = sigpy.mri.birdcage_maps((COILS, HEIGHT, WIDTH)).astype(np.complex64)
    return fft2c(torch.from_numpy(sens * image))


def best_of(fn, repeats: int = 3) -> float:
    """Smallest wall time of `repeats` calls (the machine is shared; the minimum is the least noisy)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    kspace = simulated_kspace()
    bart_input = kspace.permute(1, 2, 0).numpy()[:, :, None, :]  # [x, y, z, coils]
    timing: dict[str, float] = {}
    bart_total, bart_alone = float("inf"), float("inf")
    for _ in range(3):
        start = time.perf_counter()
        bart("ecalib -m1", bart_input, timing=timing)
        bart_total = min(bart_total, time.perf_counter() - start)
        bart_alone = min(bart_alone, timing["bart_s"])
    ours = best_of(lambda: espirit_maps(kspace))
    print(
        f"ESPIRiT {COILS} coils {HEIGHT}x{WIDTH}: bart ecalib -m1 {bart_total:.2f} s with file I/O "
        f"({bart_alone:.2f} s bart alone), ours {ours:.2f} s on CPU ({torch.get_num_threads()} threads): "
        f"bart/ours = {bart_total / ours:.2f}"
    )
    batch = kspace.expand(BATCH, -1, -1, -1).clone()
    batched = best_of(lambda: espirit_maps(batch), repeats=2)
    print(f"ours batched B={BATCH}: {batched:.2f} s, {BATCH / batched:.2f} slices/s")


if __name__ == "__main__":
    main()
