"""Which surrogate makes the stronger transfer attack on test-time training: the base network or
the networks TTT fine-tuned on each clean slice?

    python bench/ttt_surrogates.py DEMO_OUT CHECKPOINT [--data knee] [--images 4] [--eps 0.08] [--steps 10]

DEMO_OUT is a finished `mrirobust demo --out DEMO_OUT` (its data), CHECKPOINT a unet-small's weights
(the demo's knee-trained ones ship as src/mrirobust/study/unet-small-knee.ckpt). TTT runs the demo study's `unet-ttt` recipe on that checkpoint; each test slice (4x random mask,
centre 0.08, fastMRI's per-file seed) is attacked with PGD on each surrogate, the perturbation scored
on TTT. Prints per slice TTT's clean SSIM and its SSIM loss under each surrogate's perturbation,
then the means with bootstrap 95% CIs and the paired difference (fine-tuned - base).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.sample import draw_mask
from mrirobust.demo import demo_config
from mrirobust.methods.base import build
from mrirobust.metrics import mean_ci, score
from mrirobust.physics.fft import center_crop
from mrirobust.physics.masks import MaskSpec
from mrirobust.robustness.attack_settings import Scope
from mrirobust.robustness.attacks import attack

SURROGATES = ("base", "fine-tuned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_out", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", default="knee")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--eps", type=float, default=0.08)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    recipe = {k: v for k, v in demo_config()["methods"]["unet-ttt"].items() if k != "base"}
    base = {"name": "unet-small", "checkpoint": str(args.checkpoint)}
    data = SliceDataset(args.demo_out / "data" / args.data / "test")
    spec = MaskSpec("random", (0.08,), (4,))
    losses: dict[str, list[float]] = {s: [] for s in SURROGATES}
    for i in range(min(args.images, len(data))):
        sample = data[i]
        mask, _ = draw_mask(sample, spec)
        crop = tuple(sample.target.shape[-2:])
        target, peak = sample.target[None], torch.tensor([sample.meta.max_value or float(sample.target.max())])
        for surrogate in SURROGATES:
            began = time.perf_counter()
            method = build({**recipe, "base": base, "surrogates": [surrogate]})
            result = attack(method, (sample.kspace * mask)[None], mask, args.eps, {"steps": args.steps},
                            Scope(seed=0), target_shape=crop)
            clean, attacked = (score(target, center_crop(image, crop), peak)
                               for image in (result.clean, result.perturbed))
            key = next(k for k in clean if k.startswith("ssim"))
            losses[surrogate].append(float(clean[key][0] - attacked[key][0]))
            print(f"slice {i} {surrogate:10s} TTT clean {float(clean[key][0]):.4f} loss {losses[surrogate][-1]:.4f} "
                  f"({time.perf_counter() - began:.1f} s)", flush=True)
    for surrogate, values in losses.items():
        print(f"{surrogate:10s} SSIM loss %.4f [%.4f, %.4f] (n {len(values)})" % mean_ci(values))
    difference = np.array(losses["fine-tuned"]) - np.array(losses["base"])
    print("fine-tuned - base %.4f [%.4f, %.4f]" % mean_ci(difference))


if __name__ == "__main__":
    main()
