"""Do the demo-sized learned methods train in minutes on a CPU and beat l1 and zero-filled?

    python bench/demo_training.py [--out out/bench-demo-training] [--anatomy knee]

Generates the embedded demo dataset, trains `unet-small` and `varnet-small` on its train split
(validation split for checkpoint selection), and scores zero-filled, l1 (default lambda) and both
networks on the held-out test split at 4x. Prints the wall time of each training run and the
SSIM table; the training runs resume if the script is interrupted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.synthetic import synthesize
from mrirobust.cli import main as cli
from mrirobust.workflows.train import TrainConfig, train

# Settings measured on the 2-core development CPU (bench/README.md).
RUNS = {"unet-small": TrainConfig(epochs=40, batch_size=1), "varnet-small": TrainConfig(epochs=20, batch_size=2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench-demo-training"))
    parser.add_argument("--anatomy", default="knee")
    args = parser.parse_args()
    data = args.out / "data"
    if not (data / args.anatomy / "test").exists():
        synthesize(data, "demo")
    folder = data / args.anatomy
    methods = ["zero-filled", "l1"]
    for name, config in RUNS.items():
        start = time.perf_counter()
        result = train(name, SliceDataset(folder / "train"), SliceDataset(folder / "val"),
                       args.out / name, config)
        print(f"{name}: trained {config.epochs} epochs in {time.perf_counter() - start:.0f} s "
              f"(this invocation), best validation SSIM "
              f"{max(h['val_ssim'] for h in result.history):.4f}")
        methods.append(f"{name}={result.best}")
    cli(["recon", str(folder / "test"), "--methods", ",".join(methods), "--out", str(args.out / "test")])


if __name__ == "__main__":
    main()
