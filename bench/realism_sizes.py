"""Do the demo's shipped networks work at image sizes other than the 160 x 160 they mostly train on?

    python bench/realism_sizes.py [--real FILE_OR_DIR] [--zoom 0.5 1 2] [--synthetic 160 320]
                                  [--images 6] [--networks unet varnet]

Scores the demo study's networks as it builds them (their shipped weights), next to zero-filled
and l1, at 4x (the realism bench's mask) on
- real images zoomed by each `--zoom` factor (cubic spline) before the images -> k-space path of
  `bench/realism.py` (8 coils, 30 dB, 2x readout): the same anatomy at other matrix sizes;
- synthetic knees of other patients (seed 7) rendered at each `--synthetic` size (the demo's knee
  test settings, no lesions).
One line per set and method: SSIM (fastMRI's volume-max variant), bootstrap 95% CI, n. fastMRI's
knees are 320 x 320 images; the question is whether a network's score holds at that size
(bench/README.md, "Image size").
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.synthetic import synthesize
from mrirobust.demo import demo_config
from mrirobust.evaluate import evaluate, summarise
from mrirobust.methods.base import build

from realism import SPEC, _real_set, demo_split


def _synthetic(size: int, images: int, out: Path) -> list:
    test = demo_split("knee", "test")
    volumes = max(1, images // 2)
    synthesize(out, [dataclasses.replace(test, shape=(size, size), lesions=0, seed=7, num_volumes=volumes,
                                         slices_per_volume=2)])
    dataset = SliceDataset(out / "knee" / "test")
    return [dataset[i] for i in range(len(dataset))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=Path("/usr/share/mricron/templates/ch2better.nii.gz"),
                        help="real magnitude images: a folder or one file")
    parser.add_argument("--zoom", type=float, nargs="*", default=[0.5, 1.0], help="zoom factors of the real images")
    parser.add_argument("--synthetic", type=int, nargs="*", default=[160, 320], help="synthetic knee image sizes")
    parser.add_argument("--images", type=int, default=6, help="slices per set")
    parser.add_argument("--networks", nargs="+", default=["unet", "varnet"], help="the demo's method labels")
    args = parser.parse_args()
    entries = demo_config()["methods"]
    methods = {"zero-filled": build("zero-filled"), "l1": build("l1"),
               **{n: build({k: v for k, v in entries[n].items() if k != "checkpoints"}) for n in args.networks}}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}
        for k, factor in enumerate(args.zoom):
            dataset = _real_set(args.real, args.images, Path(tmp) / f"real{k}", factor)
            sets[f"real:{args.real.name} x{factor:g}"] = [dataset[i] for i in range(len(dataset))]
        sets |= {f"synthetic knee {s}": _synthetic(s, args.images, Path(tmp) / f"synth{s}") for s in args.synthetic}
        for name, samples in sets.items():
            for entry in summarise(evaluate(samples, methods, SPEC, progress=False).rows):
                key = next(k for k in entry if k.startswith("ssim"))
                mean, low, high = entry[key]
                print(f"{name:>28} {entry['method']:>12} {tuple(samples[0].target.shape)} {key} "
                      f"{mean:.3f} [{low:.3f}, {high:.3f}] n={entry['slices']}", flush=True)


if __name__ == "__main__":
    main()
