"""What does robustness training cost? Seconds per epoch of unet-small on the demo's knee data,
standard vs jittered vs adversarially trained, as ratios measured in the same run.

    python bench/bench_robust_training.py [--data /tmp/jit_data] [--epochs 2] [--rounds 2] [--device cpu]

Generates the embedded demo dataset if `--data` has none. Each round trains every variant afresh
(interleaved, so load changes hit all of them) without a validation split; the time per epoch is
the median over rounds of the training wall time divided by the epochs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.synthetic import synthesize
from mrirobust.workflows.train import TrainConfig, train

VARIANTS = {"standard": {}, "jitter 0.05": {"jitter": 0.05}, "adversarial 0.05, 3 steps": {"adversarial": 0.05,
                                                                                          "adversarial_steps": 3}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/jit_data"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not (args.data / "knee" / "train").exists():
        synthesize(args.data, "demo")
    train_set = SliceDataset(args.data / "knee" / "train")
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, settings in VARIANTS.items():
            config = TrainConfig(epochs=args.epochs, batch_size=1, device=args.device, progress=False, **settings)
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                train("unet-small", train_set, None, out, config)
                times[name].append((time.perf_counter() - start) / args.epochs)
    base = statistics.median(times["standard"])
    print(f"unet-small, {len(train_set)} training slices, {args.epochs} epochs x {args.rounds} rounds, {args.device}")
    for name, values in times.items():
        per_epoch = statistics.median(values)
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name}: {per_epoch:.1f} s/epoch, {per_epoch / base:.2f}x standard (rounds: {rounds})")


if __name__ == "__main__":
    main()
