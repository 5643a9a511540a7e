"""Seconds per attacked image for each method at demo size (8 coils, 320x160 k-space) on CPU.

    python bench/bench_attacks.py [--images 2] [--eps 0.05] [--device cpu]

Each method is attacked with the attack its traits select (`attacks.attack`: PGD with its default
20 steps for differentiable methods, the two-step attack with its defaults for the
optimisation-based ConvDecoder), batched over `--images` slices of the embedded dataset's knee
test split; untrained weights for the networks (the time does not depend on them).
"""

from __future__ import annotations

import argparse
import time

import torch

from mrirobust.data.sample import draw_mask
from mrirobust.methods.base import build
from mrirobust.physics.masks import MaskSpec, stack_masks
from mrirobust.robustness.attacks import attack
from demo_slices import demo_knee_slices  # bench/demo_slices.py

METHODS = ("zero-filled", "sense", "l1", "unet-small", "varnet-small", "convdecoder-small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    samples = demo_knee_slices(args.images)
    spec = MaskSpec("random", (0.08,), (4,))
    masks = stack_masks([draw_mask(s, spec)[0] for s in samples]).to(args.device)
    kspace = torch.stack([s.kspace for s in samples]).to(args.device) * masks
    print(f"attack seconds per image, eps {args.eps}, {args.images} images of {tuple(kspace.shape[1:])}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    for name in METHODS:
        method = build(name)
        start = time.perf_counter()
        result = attack(method, kspace, masks, args.eps)
        seconds = (time.perf_counter() - start) / args.images
        print(f"  {name:18s} {result.attack:9s} {seconds:8.1f} s/image  settings {result.settings}")


if __name__ == "__main__":
    main()
