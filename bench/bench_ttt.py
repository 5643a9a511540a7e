"""Test-time training on the anatomy shift: knee-trained unet-small on brain slices, with and without TTT.

SSIM (fastMRI's, volume maximum) on the first `--images` brain test slices at 4x `--mask` masks
(fastMRI per-file seeds; the demo's brain data use equispaced_fraction): P->Q (knee-trained), TTT of it, and Q->Q (brain-trained, when given),
with "gap closed" = (TTT - P->Q) / (Q->Q - P->Q) and the remedy experiment's bootstrap CI over the slices; plus seconds
per slice of TTT. Checkpoints come from `mrirobust train unet-small ...` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import time

import torch

from mrirobust import schema
from mrirobust.data.dataset import SliceDataset
from mrirobust.evaluate import evaluate
from mrirobust.methods.base import build
from mrirobust.physics.masks import MaskSpec
from mrirobust.robustness.remedy_analysis import estimate, gap_closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("brain", help="brain test folder")
    parser.add_argument("--knee-ckpt", required=True)
    parser.add_argument("--brain-ckpt")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--loss", choices=("l1", "l2"), default="l2")
    parser.add_argument("--maps", choices=("centre", "espirit"), default="espirit")
    parser.add_argument("--noise-bias", action="store_true", help="remove the RSS noise bias (ttt noise_bias)")
    parser.add_argument("--anchor", type=float, default=0.0, help="ttt anchor (0: off)")
    parser.add_argument("--sparsity", type=float, default=0.0, help="ttt sparsity (0: off)")
    parser.add_argument("--first", type=int, default=0, help="index of the first slice evaluated")
    parser.add_argument("--mask", default="random", help="mask type, e.g. equispaced_fraction")
    args = parser.parse_args()
    dataset = SliceDataset(args.brain)
    samples = [dataset[i] for i in range(args.first, min(args.first + args.images, len(dataset)))]
    base = {"name": "unet-small", "checkpoint": args.knee_ckpt}
    methods = {"P->Q": build(base),
               "TTT": build({"name": "ttt", "base": base, "iters": args.iters, "lr": args.lr,
                             "holdout": args.holdout, "patience": args.patience, "loss": args.loss,
                             "maps": args.maps, "noise_bias": args.noise_bias,
                             "anchor": args.anchor, "sparsity": args.sparsity})}
    if args.brain_ckpt:
        methods["Q->Q"] = build({"name": "unet-small", "checkpoint": args.brain_ckpt})
    mask = MaskSpec(args.mask, (0.08,), (4,))
    scores, seconds = {}, {}
    for label, method in methods.items():
        began = time.perf_counter()
        rows = evaluate(iter(samples), {label: method}, mask, batch_size=1, progress=False).rows
        seconds[label] = (time.perf_counter() - began) / len(samples)
        scores[label] = torch.tensor([row[schema.ssim_column(rows)] for row in rows], dtype=torch.float64)
        print(f"{label}: SSIM {scores[label].mean():.4f} (per slice {[round(float(s), 4) for s in scores[label]]}), "
              f"{seconds[label]:.2f} s/slice")
    if "Q->Q" in scores:  # the remedy experiment's statistic and bootstrap (robustness.remedy_analysis)
        closed = estimate(torch.stack([scores["P->Q"], scores["Q->Q"], scores["TTT"]], 1).numpy(), gap_closed)
        print(f"gap closed: {closed.value:.3f} [{closed.low:.3f}, {closed.high:.3f}] (n {closed.n} slices, "
              f"gap {float((scores['Q->Q'] - scores['P->Q']).mean()):.4f} SSIM)")


if __name__ == "__main__":
    main()
