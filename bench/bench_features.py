"""Artificial-feature heat map of one demo-sized image (8 coils, 320x160 k-space, 160x160 target) on CPU.

    python bench/bench_features.py [--stride 4] [--window 3] [--batch-size 32] [--device cpu]

One line per method: placements (= reconstructions), seconds and reconstructions per second. The
placements of one image go through batched reconstructions (`--batch-size` per call); untrained
weights for the U-net (the time does not depend on them). The ESPIRiT maps for inserting the
feature are computed once per image and not counted.
"""

from __future__ import annotations

import argparse
import time

import torch

from mrirobust.methods.base import build
from mrirobust.physics.masks import MaskSpec
from mrirobust.robustness.features import FeatureImage, heatmap_boxes
from demo_slices import demo_knee_slices  # bench/demo_slices.py

METHODS = ("zero-filled", "sense", "unet-small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sample = demo_knee_slices(1)[0]
    image = FeatureImage(sample, MaskSpec("random", (0.08,), (4,)), args.device, maps_crop=0.0, value=None)
    boxes = heatmap_boxes(image.shape, args.window, args.stride)
    print(f"feature heat map: {len(boxes)} placements ({args.window}x{args.window}, stride {args.stride}) on "
          f"{tuple(sample.kspace.shape)} k-space, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"device {args.device}")
    for name in METHODS:
        method = build(name)
        start = time.perf_counter()
        for first in range(0, len(boxes), args.batch_size):
            image.feature_mse(method, boxes[first:first + args.batch_size], "rss")
        seconds = time.perf_counter() - start
        print(f"  {name:12s} {len(boxes):5d} reconstructions {seconds:7.1f} s {len(boxes) / seconds:7.1f} recon/s")


if __name__ == "__main__":
    main()
