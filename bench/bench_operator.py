"""Time our multi-coil forward + adjoint against sigpy's Sense linop on one knee-sized slice.

Run: python bench/bench_operator.py [--repeats 15] [--device cpu]
Prints one line: median seconds per forward+adjoint for both, single thread and default threads.
"""

from __future__ import annotations

import argparse

import numpy as np
import sigpy as sp
import sigpy.mri
import torch

from mrirobust.physics.operator import MultiCoilOperator
from timing import median_time  # bench/timing.py

COILS, H, W = 15, 640, 368


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(1, COILS, H, W, dtype=torch.complex64, generator=generator)
    image = torch.randn(1, H, W, dtype=torch.complex64, generator=generator)
    mask = torch.rand(W, generator=generator) < 0.25

    device = torch.device(args.device)
    op = MultiCoilOperator(maps.to(device), mask.to(device))
    x = image.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sense = sp.mri.linop.Sense(maps[0].numpy(), weights=mask.numpy().astype(np.float32))
    x_np = image[0].numpy()

    def ours() -> torch.Tensor:
        return op.adjoint(op.forward(x))

    def theirs() -> np.ndarray:
        return sense.H(sense(x_np))

    default_threads = torch.get_num_threads()
    results = {}
    for threads in (1, default_threads):
        torch.set_num_threads(threads)
        results[threads] = (median_time(ours, args.repeats, sync), median_time(theirs, args.repeats))
    torch.set_num_threads(default_threads)

    line = [f"forward+adjoint {COILS}x{H}x{W} complex64, median of {args.repeats}, ours on {device}:"]
    for threads, (t_ours, t_sigpy) in results.items():
        line.append(f"{threads} thread(s): ours {t_ours * 1e3:.1f} ms, sigpy {t_sigpy * 1e3:.1f} ms, "
                    f"sigpy/ours {t_sigpy / t_ours:.2f}x;")
    print(" ".join(line))


if __name__ == "__main__":
    main()
