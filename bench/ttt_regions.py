"""Where test-time training gains and where it does not: SSIM split into dim and bright regions.

    python bench/ttt_regions.py DEMO_OUT KNEE_CKPT BRAIN_CKPT [--images 8] [--anchor 0.3]

On the first `--images` brain test slices of a finished demo (4x random masks, centre 0.08, the
remedy job's), the knee-trained unet-small (P), TTT of it with the demo study's `unet-ttt` recipe
(`--anchor` overrides its anchor) and the brain-trained one (Q). Dim = target below 5% of its
maximum (the RSS noise floor there); scikit-image's SSIM map (7x7 uniform window, the volume
maximum as data range) averaged over each region, and the mean image level in the dim region
("floor") next to the target's. The demo's checkpoints ship with the package:
src/mrirobust/study/unet-small-knee.ckpt and unet-small-brain.ckpt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.sample import draw_mask
from mrirobust.demo import demo_config
from mrirobust.methods.base import build
from mrirobust.physics.fft import center_crop
from mrirobust.physics.masks import MaskSpec

COLUMNS = ("all", "dim", "bright", "floor")


def regions(target: np.ndarray, image: np.ndarray, data_range: float) -> list[float]:
    """SSIM over all, dim and bright pixels, and the image's mean level where the target is dim."""
    dim = target < 0.05 * target.max()
    _, ssim_map = structural_similarity(target, image, data_range=data_range, win_size=7, full=True)
    return [float(ssim_map.mean()), float(ssim_map[dim].mean()), float(ssim_map[~dim].mean()), float(image[dim].mean())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_out", type=Path)
    parser.add_argument("knee_ckpt")
    parser.add_argument("brain_ckpt")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--anchor", type=float, default=None)
    args = parser.parse_args()
    recipe = {k: v for k, v in demo_config()["methods"]["unet-ttt"].items() if k != "base"}
    if args.anchor is not None:
        recipe["anchor"] = args.anchor
    methods = {"P": build({"name": "unet-small", "checkpoint": args.knee_ckpt}),
               "TTT": build({**recipe, "base": {"name": "unet-small", "checkpoint": args.knee_ckpt}}),
               "Q": build({"name": "unet-small", "checkpoint": args.brain_ckpt})}
    data = SliceDataset(args.demo_out / "data" / "brain" / "test")
    spec = MaskSpec("random", (0.08,), (4,))
    table: dict[str, list[list[float]]] = {label: [] for label in methods}
    floors = []
    for i in range(min(args.images, len(data))):
        sample = data[i]
        mask, _ = draw_mask(sample, spec)
        crop, target = tuple(sample.target.shape[-2:]), sample.target.numpy()
        floors.append(float(target[target < 0.05 * target.max()].mean()))
        for label, method in methods.items():
            with torch.no_grad():
                image = center_crop(method.reconstruct((sample.kspace * mask)[None], mask, target_shape=crop), crop)
            table[label].append(regions(target, image[0].numpy(), sample.meta.max_value or float(target.max())))
        print(f"slice {i}: " + "  ".join(f"{label} " + " ".join(f"{v:.4f}" for v in table[label][-1])
                                        for label in methods), f"target floor {floors[-1]:.4f}", flush=True)
    print(f"means over {len(floors)} slices ({', '.join(COLUMNS)}); target floor {np.mean(floors):.4f}")
    for label, rows in table.items():
        print(f"{label:4s} " + " ".join(f"{v:.4f}" for v in np.mean(rows, axis=0)))


if __name__ == "__main__":
    main()
