"""Iterations per second of ConvDecoder fitting (default and small size) on one 8-coil 320x160 slice
and on a batch of 4 fitted as one model.

Run: python bench/bench_untrained.py [--device cpu] [--iters 1 5] [--threads N]
`--iters` gives the iterations for the default and the small network (defaults keep a CPU run under
two minutes). Prints one line.
"""

from __future__ import annotations

import argparse
import time

import torch

from mrirobust.methods.base import build
from mrirobust.methods.untrained import UntrainedDecoder

COILS, H, W = 8, 320, 160


def iterations_per_second(method: UntrainedDecoder, batch: int, iters: int, device: torch.device) -> float:
    generator = torch.Generator().manual_seed(0)
    kspace = torch.randn(batch, COILS, H, W, dtype=torch.complex64, generator=generator).to(device)
    mask = (torch.rand(W, generator=generator) < 0.3).to(device)
    method.fit(kspace, mask, iters=1)  # warm-up: allocations, kernel choice
    start = time.perf_counter()
    image, _ = method.fit(kspace, mask, iters=iters)
    float(image.sum())  # waits for the device
    return iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, nargs=2, default=(1, 5), metavar=("DEFAULT", "SMALL"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    parts = [f"ConvDecoder fit, {COILS}x{H}x{W}, {device}, {args.threads} thread(s):"]
    for name, iters in zip(("convdecoder", "convdecoder-small"), args.iters):
        method = build(name)
        for batch in (1, 4):
            rate = iterations_per_second(method, batch, iters, device)
            parts.append(f"{name} ({method.layers}x{method.channels}) B={batch}: {rate:.2f} it/s "
                         f"({rate * batch:.2f} slice-it/s);")
    print(" ".join(parts))


if __name__ == "__main__":
    main()
