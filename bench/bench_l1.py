"""Time 100 l1-wavelet iterations: ours (FISTA, torch) vs `bart pics -l1 -i 100` vs sigpy L1WaveletRecon.

Run: python bench/bench_l1.py [--iters 100] [--threads 1]
One simulated 15-coil 640 x 368 knee slice (4x equispaced mask); ESPIRiT maps computed once and
passed to all three, all on the CPU with the same thread count. Prints seconds per `iters`
iterations and the ratios to ours. bart's time is its process alone (without .cfl file I/O).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mrirobust.data.simulate import simulate_kspace
from mrirobust.data.synthetic import SynthConfig, render_volume
from mrirobust.methods.l1 import L1
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.masks import mask_spec
from mrirobust.physics.operator import MultiCoilOperator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.bart

COILS, LAM = 15, 0.002


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # bart's OpenMP, inherited by the subprocess

    import sigpy.mri.app  # after OMP_NUM_THREADS is set
    from tests.bart import bart  # after sys.path is extended

    config = SynthConfig(anatomy="knee", shape=(320, 320), matrix=(320, 368), slices_per_volume=1)
    kspace, _, _ = simulate_kspace(render_volume(config, 0), num_coils=COILS, seed=0, snr_db=25, oversample=True)
    mask, _ = mask_spec("equispaced", 0.08, 4).sample(kspace.shape[-1], seed=0)
    y = kspace * mask
    start = time.perf_counter()
    maps = espirit_maps(y)
    espirit_s = time.perf_counter() - start
    scale = float(MultiCoilOperator(maps, mask).adjoint(y).abs().max())

    method = L1(lam=LAM, iters=args.iters)
    method.reconstruct(y, mask, maps=maps)  # warm-up: ptwt builds its wavelet matrices once per size
    start = time.perf_counter()
    method.reconstruct(y, mask, maps=maps)
    ours_s = time.perf_counter() - start

    timing: dict[str, float] = {}
    bart(f"pics -S -l1 -r {LAM * scale} -i {args.iters}", y[0].permute(1, 2, 0).numpy()[:, :, None, :],
         maps[0].permute(1, 2, 0).numpy()[:, :, None, :], timing=timing)
    start = time.perf_counter()
    sigpy.mri.app.L1WaveletRecon(y[0].numpy(), maps[0].numpy(), LAM * scale, weights=mask.numpy().astype(np.float32),
                                 max_iter=args.iters, show_pbar=False).run()
    sigpy_s = time.perf_counter() - start

    print(f"l1 {args.iters} iters, {COILS}x{y.shape[-2]}x{y.shape[-1]}, {args.threads} thread(s), CPU "
          f"(ESPIRiT once: {espirit_s:.1f}s): ours {ours_s:.2f}s | bart {timing['bart_s']:.2f}s "
          f"({timing['bart_s'] / ours_s:.2f}x ours) | sigpy {sigpy_s:.2f}s ({sigpy_s / ours_s:.2f}x ours)")


if __name__ == "__main__":
    main()
