"""What does the U-net's instance norm cost? A training step (forward + backward) of unet-small
and of varnet-small at the demo's size, with `nn.InstanceNorm2d` against `unet.InstanceNorm` (the
same numbers through a group norm of one channel per group), interleaved in one process.

    python bench/bench_norm.py [--steps 20] [--rounds 3] [--threads 2]

Prints the median seconds per step of each and their ratio, and the largest output difference.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from mrirobust.methods import unet as unet_module
from mrirobust.methods.base import build


def _swap(model: nn.Module, make: type[nn.Module]) -> None:
    """Replace every instance norm of `model` by `make()`, in place (neither has parameters)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, (nn.InstanceNorm2d, unet_module.InstanceNorm)):
                setattr(parent, name, make())


def _step_seconds(model: nn.Module, inputs: tuple[torch.Tensor, ...], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        model.zero_grad()
        out = model(*inputs)
        out.abs().mean().backward()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", "input's size at dim=1")  # InstanceNorm2d(0): it has no parameters
    torch.manual_seed(0)
    kspace = torch.randn(1, 8, 320, 160, dtype=torch.complex64)
    mask = (torch.rand(1, 1, 1, 160) < 0.3).float()
    cases = {"unet-small": (build("unet-small").model, (torch.randn(1, 1, 160, 160),)),
             "varnet-small": (build({"name": "varnet-small", "num_cascades": 6}).model,
                              (kspace * mask, mask.bool(), 13))}
    for name, (model, inputs) in cases.items():
        variants = {"nn.InstanceNorm2d": lambda: nn.InstanceNorm2d(0), "group norm": unet_module.InstanceNorm}
        outputs, times = {}, {label: [] for label in variants}
        for _ in range(args.rounds):
            for label, make in variants.items():
                _swap(model, make)
                times[label].append(_step_seconds(model, inputs, args.steps))
                with torch.no_grad():
                    outputs[label] = model(*inputs)
        (a, b), (ta, tb) = outputs.values(), (statistics.median(t) for t in times.values())
        print(f"{name}: nn.InstanceNorm2d {ta * 1000:.1f} ms/step, group norm {tb * 1000:.1f} ms/step "
              f"({ta / tb:.2f}x); largest output difference {float((a - b).abs().max()):.2e}")


if __name__ == "__main__":
    main()
