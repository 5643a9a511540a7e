"""Time and peak memory to evaluate the distribution-shift groups on N demo-sized slices.

    python bench/bench_shifts.py [--images 2] [--device cpu]

The groups are `experiments.shift.DEMO_GROUPS` (U-net and VarNet variants, l1 with three
transforms, ConvDecoder and Deep Decoder) on `--images` slices of 8-coil 320x160 k-space (the
embedded dataset's size), scored as the shift experiments score them (`evaluate`, batched). Untrained
weights and default l1 settings: the time does not depend on weights or lambda. Prints seconds
per slice per model, the extrapolation to 100 slices (per model and for one domain of all
groups), and peak memory (CPU: the process's peak RSS after each model; CUDA: peak allocated).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from mrirobust.evaluate import evaluate
from mrirobust.methods.base import build
from mrirobust.physics.masks import MaskSpec
from mrirobust.experiments.shift import DEMO_GROUPS
from mrirobust.workflows.prepare import parse_groups
from demo_slices import demo_knee_slices  # bench/demo_slices.py


def _peak_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    samples = demo_knee_slices(args.images)
    spec = MaskSpec("random", (0.08,), (4,))
    print(f"evaluate seconds per slice, {args.images} slices of {tuple(samples[0].kspace.shape)}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    total = 0.0
    for model in parse_groups(DEMO_GROUPS):
        method = build(model.config)
        if getattr(method, "model", None) is not None:
            method.model.eval()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        evaluate(iter(samples), [method], spec, device=args.device, progress=False)
        seconds = (time.perf_counter() - start) / args.images
        total += seconds
        print(f"  {model.group:10s} {model.label:28s} {seconds:7.2f} s/slice  "
              f"-> {seconds * 100 / 60:6.1f} min/100 slices  peak {_peak_mib(args.device):7.0f} MiB")
    print(f"all groups: {total:.1f} s/slice -> {total * 100 / 60:.1f} min per 100 slices of one domain "
          f"(extrapolated linearly from {args.images} slices)")


if __name__ == "__main__":
    main()
