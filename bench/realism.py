"""Do networks trained as the demo trains them work on data they were not trained on?

    python bench/realism.py [--out out/bench-realism] [--real DIR_OR_FILE ...] [--images 6]
                            [--networks unet varnet unet-jitter] [--no-l1] [--anatomy knee|brain]
                            [--train-volumes N [--fine-volumes M]] [--epochs E] [--seed S]

Generates the embedded demo dataset (timed), trains the demo study's networks (`unet` and `varnet`
by default; `unet-jitter` on request) with its specs and training settings (read from
study/demo.yaml; for weights shipped with the package, the settings their checkpoint records) on its
knee train split with the val split for checkpoint selection (same seeds and masks), and scores them
next to zero-filled and l1 (default lambda) at 4x (random mask, centre 0.08) on:

- knee-test: the held-out knee test split (other patients, same family);
- brain-test: the demo's brains (a held-out family: the anatomy shift);
- real: with `--real`, magnitude images (each a folder or one file, one set each; NIfTI volumes
  give axial slices) turned into 8-coil k-space through the `data from-images --oversample` path
  at its default 30 dB, at their own matrix size. `--images` slices per set, spread evenly over
  the middle 60% of each volume.

One line per set and method: SSIM (fastMRI's volume-max variant), bootstrap 95% CI, n.
Training resumes from its checkpoints if the script is interrupted. `--networks` trains and
scores only those; `--no-l1` leaves out l1 (minutes of CPU; it does not depend on the networks).
The scaling questions (bench/README.md, "Realism"): `--anatomy brain` trains on the brain family
instead (its train split, brain val for the checkpoint: the real brain without the anatomy shift),
`--train-volumes N` on N other patients of one slice each (the demo's train split's settings;
val, test and the other family unchanged) instead of the demo's split (knees 32 x 2), and
`--fine-volumes M` M more patients imaged at twice the resolution (320 x 320 targets, fastMRI's
image size: a network trained at 160 x 160 alone fails there), `--epochs
E` overrides the demo's epochs, `--seed S` its seed; each such run trains into its own folder
under `--out`. The per-slice SSIM of every set and method
goes to OUT/scores[-RUN].json (merged with the methods an earlier run with the same settings
scored), so two runs can be compared slice by slice (paired).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import zoom

from mrirobust.atomic import atomic_path
from mrirobust.data.dataset import SliceDataset
from mrirobust.data.images import ImageSimulation, images_to_fastmri, load_images
from mrirobust.data.synthetic import PRESETS, SynthConfig, synthesize
from mrirobust.demo import demo_config
from mrirobust.evaluate import evaluate, summarise
from mrirobust.methods.base import build
from mrirobust.methods.unet import load_checkpoint
from mrirobust.physics.masks import MaskSpec
from mrirobust.workflows.train import TrainConfig, train


NETWORKS = ("unet", "unet-jitter", "varnet")  # the demo study's trained networks, by label
SPEC = MaskSpec("random", (0.08,), (4,))


def demo_training(label: str, anatomy: str = "knee") -> tuple[dict, TrainConfig]:
    """The demo study's method `label` (study/demo.yaml): its spec without `train` or weights, and
    its training settings on `anatomy` (the mask being the default); for shipped weights, the
    settings their checkpoint for that anatomy records (its train split is `--train-volumes`)."""
    entry = demo_config()["methods"][label]
    spec = {k: v for k, v in entry.items() if k not in ("train", "checkpoint", "checkpoints")}
    shipped = entry.get("checkpoints", {}).get(anatomy) or entry.get("checkpoint")
    if shipped:
        return spec, TrainConfig(**load_checkpoint(shipped)["train_config"])
    return spec, TrainConfig(**{k: v for k, v in entry["train"].items() if k != "data"})


def _trained(label: str, folder: Path, train_set: Path, val_set: Path, changes: dict, anatomy: str) -> dict:
    """Train (or reuse) the demo's `label` on `train_set` as the demo does, with the TrainConfig
    `changes`; the checkpoint's method spec."""
    spec, config = demo_training(label, anatomy)
    config = dataclasses.replace(config, **changes)
    if not (folder / "done").exists():
        start = time.perf_counter()
        result = train(spec, SliceDataset(train_set), SliceDataset(val_set), folder, config)
        print(f"{label}: trained in {time.perf_counter() - start:.0f} s, best val SSIM "
              f"{max(h['val_ssim'] for h in result.history):.4f}", flush=True)
        (folder / "done").write_text("")
    return {**spec, "checkpoint": str(folder / "best.ckpt")}


def demo_split(anatomy: str, split: str) -> SynthConfig:
    """The demo dataset's settings for one family's split, to render more patients like them."""
    return next(c for c in PRESETS["demo"] if c.anatomy == anatomy and c.split == split)


def _more_patients(data: Path, anatomy: str, volumes: int, fine: int = 0) -> Path:
    """A train split of `volumes` other patients of `anatomy`, one slice each, acquired as the
    demo's, and `fine` more patients (another seed) imaged at twice the resolution (320 x 320
    targets: the same anatomy twice as many pixels across, as fastMRI's images are)."""
    folder = data.parent / (f"train-{anatomy}-{volumes}x1" + (f"-fine{fine}" if fine else ""))
    demo = demo_split(anatomy, "train")
    configs = [dataclasses.replace(demo, num_volumes=volumes, slices_per_volume=1)]
    if fine:
        configs.append(dataclasses.replace(demo, num_volumes=fine, slices_per_volume=1, shape=(320, 320), seed=2,
                                           folder=f"{anatomy}-fine"))
    if not (folder / "done").exists():
        synthesize(folder, configs)
        (folder / "done").write_text("")
    return folder


def _spread(count: int, total: int) -> list[int]:
    """`count` indices spread evenly over the middle 60% of `total`."""
    return sorted(set(np.linspace(0.2 * total, 0.8 * (total - 1), count).round().astype(int).tolist()))


def _real_set(src: Path, images: int, out: Path, factor: float = 1.0) -> SliceDataset:
    """Middle slices of the real images (zoomed by `factor`, cubic spline) through the images ->
    k-space path (8 coils, 30 dB, 2x readout)."""
    slices = out / "slices"
    slices.mkdir(parents=True, exist_ok=True)
    for name, volume in load_images(src):
        for i in _spread(images, len(volume)):
            image = volume[i] if factor == 1 else np.clip(zoom(volume[i].astype(np.float64), factor, order=3), 0, None)
            image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]  # even sizes
            np.save(slices / f"{name}-{i:03d}.npy", image)
    images_to_fastmri(slices, out / "kspace", ImageSimulation(oversample=True))
    return SliceDataset(out / "kspace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench-realism"))
    parser.add_argument("--real", type=Path, nargs="+", default=[],
                        help="real magnitude images: folders or files, one set each")
    parser.add_argument("--images", type=int, default=6, help="slices per evaluation set")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=["unet", "varnet"],
                        help="the demo's networks (method labels) to train and score")
    parser.add_argument("--l1", action=argparse.BooleanOptionalAction, default=True, help="score l1")
    parser.add_argument("--anatomy", choices=("knee", "brain"), default="knee", help="the family trained on")
    parser.add_argument("--train-volumes", type=int, help="train on this many patients of one slice")
    parser.add_argument("--fine-volumes", type=int, default=0,
                        help="with --train-volumes: this many more patients at twice the resolution")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the demo's)")
    parser.add_argument("--seed", type=int, help="training seed (default: the demo's)")
    args = parser.parse_args()
    data = args.out / "data"
    if not (data / "brain" / "test").exists():
        start = time.perf_counter()
        synthesize(data, "demo")
        print(f"demo dataset generated in {time.perf_counter() - start:.1f} s", flush=True)
    family = data / args.anatomy
    if args.fine_volumes and not args.train_volumes:
        parser.error("--fine-volumes needs --train-volumes")
    train_set = (_more_patients(data, args.anatomy, args.train_volumes, args.fine_volumes) if args.train_volumes
                 else family / "train")
    changes = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    parts = ["brain"] * (args.anatomy == "brain") + [f"volumes{args.train_volumes}"] * bool(args.train_volumes) \
        + [f"fine{args.fine_volumes}"] * bool(args.fine_volumes)
    run = "".join(f"-{part}" for part in [*parts, *(f"{k}{v}" for k, v in changes.items())])
    methods = {"zero-filled": build("zero-filled"), **({"l1": build("l1")} if args.l1 else {}),
               **{n: build(_trained(n, args.out / f"{n}{run}", train_set, family / "val", changes, args.anatomy))
                  for n in args.networks}}
    sets = {}
    for name, folder in (("knee-test", data / "knee" / "test"), ("brain-test", data / "brain" / "test")):
        dataset = SliceDataset(folder)
        sets[name] = [dataset[i] for i in _spread(args.images, len(dataset))]
    with tempfile.TemporaryDirectory() as tmp:
        for k, real in enumerate(args.real):
            dataset = _real_set(real, args.images, Path(tmp) / str(k))
            sets[f"real:{real.name}"] = [dataset[i] for i in range(len(dataset))]
        scores = args.out / f"scores{run}.json"  # per slice, for paired comparisons; other methods' kept
        per_slice: dict[str, dict[str, list[float]]] = json.loads(scores.read_text()) if scores.exists() else {}
        for name, samples in sets.items():
            rows = evaluate(samples, methods, SPEC, progress=False).rows
            for entry in summarise(rows):
                key = next(k for k in entry if k.startswith("ssim"))
                mean, low, high = entry[key]
                print(f"{name:>20} {entry['method']:>14} {key} {mean:.3f} [{low:.3f}, {high:.3f}] "
                      f"n={entry['slices']}", flush=True)
                per_slice.setdefault(name, {})[entry["method"]] = [r[key] for r in rows
                                                                   if r["method"] == entry["method"]]
    with atomic_path(scores) as tmp:
        tmp.write_text(json.dumps(per_slice, indent=1))


if __name__ == "__main__":
    main()
