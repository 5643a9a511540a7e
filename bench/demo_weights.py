"""Ship a training run's best weights with the package, as the demo study's `checkpoint`.

    python bench/realism.py --networks varnet --train-volumes 256 --no-l1 --out OUT
    python bench/demo_weights.py OUT/varnet-volumes256 --to src/mrirobust/study/varnet-small-knee.ckpt

Keeps what a study reads from a checkpoint: the weights of `best.ckpt`, the method spec and the
training settings it records, and the whole run's epoch history (from `last.ckpt`, so that
`training_seconds` reports the run's cost); drops the optimizer state (two thirds of the file).
Prints the file's size and SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from mrirobust.atomic import atomic_path
from mrirobust.methods.unet import load_checkpoint
from mrirobust.workflows.train import BEST, CHECKPOINT

KEEP = ("method", "state_dict", "epoch", "train_config")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a training run's folder (best.ckpt and last.ckpt)")
    parser.add_argument("--to", type=Path, required=True, help="the file to write (study/*.ckpt for the demo)")
    args = parser.parse_args()
    best, last = load_checkpoint(args.run / BEST), load_checkpoint(args.run / CHECKPOINT)
    shipped = {key: best[key] for key in KEEP} | {"history": last["history"]}
    with atomic_path(args.to) as tmp:
        torch.save(shipped, tmp)
    digest = hashlib.sha256(args.to.read_bytes()).hexdigest()
    print(f"{args.to}: {args.to.stat().st_size / 2**20:.1f} MiB, epoch {best['epoch'] + 1} of "
          f"{len(last['history'])}, sha256 {digest}")


if __name__ == "__main__":
    main()
