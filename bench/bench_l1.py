"""l1-wavelet against `bart pics -l1`: time per 100 iterations, and time to BART's quality.

Run: OMP_NUM_THREADS=1 python bench/bench_l1.py [--iters 100] [--threads 1] [--repeats 3]
One simulated 15-coil 640 x 368 knee slice (25 dB SNR, 4x equispaced mask); ESPIRiT maps computed
once, outside every timing, and passed to all solvers; all on the CPU with the same thread count.
bart's time is its process alone (without our .cfl file I/O).

1. Parity: `iters` iterations at lambda 0.002: ours vs bart vs sigpy L1WaveletRecon.
2. Time to quality: each of bart and ours tuned on the same relative lambda grid (lambda / max|A^H y|)
   at `iters` iterations; bart's best PSNR (against the fully sampled RSS target, centre 320 x 320)
   is the quality bar. Ours: the fewest iterations k that reach it with our tuned lambda (a scan in
   steps of 8, then bisection), then timed runs of exactly k iterations, interleaved with bart's
   runs at its best lambda (the machine's load then hits both alike); each time is the minimum of
   `repeats` runs. Ends with one line `time-to-quality: ours X s, bart Y s, bart/ours R`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mrirobust.data.simulate import simulate_kspace
from mrirobust.data.synthetic import SynthConfig, render_volume
from mrirobust.methods.l1 import L1
from mrirobust.metrics import psnr
from mrirobust.physics.combine import rss
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.fft import center_crop, ifft2c
from mrirobust.physics.masks import mask_spec
from mrirobust.physics.operator import MultiCoilOperator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.bart

COILS, LAM, CROP = 15, 0.002, (320, 320)
GRID = (0.00025, 0.00035, 0.0005, 0.0007, 0.001, 0.0014)
SCAN = 8


def fewest_iterations(reaches: Callable[[int], bool], limit: int) -> int | None:
    """The smallest k <= limit with reaches(k): a scan in steps of SCAN, then bisection in the last step."""
    low = 0
    for high in [*range(SCAN, limit, SCAN), limit]:
        if reaches(high):
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if reaches(middle) else (middle, high)
            return high
        low = high
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # bart's OpenMP, inherited by the subprocess

    import sigpy.mri.app  # after OMP_NUM_THREADS is set

    from tests.bart import bart  # after sys.path is extended

    config = SynthConfig(anatomy="knee", shape=(320, 320), matrix=(320, 368), slices_per_volume=1)
    kspace, _, _ = simulate_kspace(render_volume(config, 0), num_coils=COILS, seed=0, snr_db=25, oversample=True)
    target = center_crop(rss(ifft2c(kspace)), CROP)
    mask, _ = mask_spec("equispaced", 0.08, 4).sample(kspace.shape[-1], seed=0)
    y = kspace * mask
    start = time.perf_counter()
    maps = espirit_maps(y)
    espirit_s = time.perf_counter() - start
    scale = float(MultiCoilOperator(maps, mask).adjoint(y).abs().max())
    y_bart, maps_bart = (t[0].permute(1, 2, 0).numpy()[:, :, None, :] for t in (y, maps))

    def quality(image: torch.Tensor | np.ndarray) -> float:
        magnitude = torch.as_tensor(np.abs(np.asarray(image))).reshape(1, *y.shape[-2:]).to(target.dtype)
        return float(psnr(target, center_crop(magnitude, CROP), target.max()))

    def ours(lam: float, iters: int) -> tuple[float, float]:
        method = L1(lam=lam, iters=iters)
        start = time.perf_counter()
        image = method.reconstruct(y, mask, maps=maps)
        return time.perf_counter() - start, quality(image)

    def theirs(lam: float) -> tuple[float, float]:
        timing: dict[str, float] = {}
        image = bart(f"pics -S -l1 -r {lam * scale} -i {args.iters}", y_bart, maps_bart, timing=timing)
        return timing["bart_s"], quality(image)

    ours(LAM, args.iters)  # warm-up: ptwt builds its wavelet matrices once per size
    ours_s, _ = ours(LAM, args.iters)
    bart_s, _ = theirs(LAM)
    start = time.perf_counter()
    sigpy.mri.app.L1WaveletRecon(y[0].numpy(), maps[0].numpy(), LAM * scale, weights=mask.numpy().astype(np.float32),
                                 max_iter=args.iters, show_pbar=False).run()
    sigpy_s = time.perf_counter() - start
    print(f"l1 {args.iters} iters, {COILS}x{y.shape[-2]}x{y.shape[-1]}, {args.threads} thread(s), CPU "
          f"(ESPIRiT once: {espirit_s:.1f}s): ours {ours_s:.2f}s | bart {bart_s:.2f}s "
          f"({bart_s / ours_s:.2f}x ours) | sigpy {sigpy_s:.2f}s ({sigpy_s / ours_s:.2f}x ours)")

    bart_runs = {lam: theirs(lam) for lam in GRID}
    bart_lam = max(GRID, key=lambda lam: bart_runs[lam][1])
    bar = bart_runs[bart_lam][1]
    our_psnr = {lam: ours(lam, args.iters)[1] for lam in GRID}
    our_lam = max(GRID, key=our_psnr.get)
    print("PSNR at", args.iters, "iterations by relative lambda:",
          "; ".join(f"{lam:g}: bart {bart_runs[lam][1]:.2f}, ours {our_psnr[lam]:.2f} dB" for lam in GRID))
    for name, best in (("bart", bart_lam), ("ours", our_lam)):
        if best in (GRID[0], GRID[-1]):
            print(f"warning: {name}'s best lambda {best:g} is at the end of the grid")
    iters = fewest_iterations(lambda k: ours(our_lam, k)[1] >= bar, args.iters)
    if iters is None:
        print(f"ours (lambda {our_lam:g}) does not reach bart's {bar:.2f} dB in {args.iters} iterations")
        return
    runs = [(theirs(bart_lam)[0], *ours(our_lam, iters)) for _ in range(args.repeats)]  # interleaved: same load
    bart_s, ours_s = min(run[0] for run in runs), min(run[1] for run in runs)
    print(f"bart: lambda {bart_lam:g}, {args.iters} iterations, {bar:.2f} dB; ours: lambda {our_lam:g}, "
          f"{iters} iterations, {runs[0][2]:.2f} dB (minimum of {args.repeats} interleaved runs each)")
    print(f"time-to-quality: ours {ours_s:.2f} s, bart {bart_s:.2f} s, bart/ours {bart_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
