"""Wall time of the demo study's attack job (demo.yaml `attack`) at today's settings, one run.

    OMP_NUM_THREADS=1 python bench/bench_attack_job.py [--methods unet-small,varnet-small,l1]

PGD (20 steps) on each attacked method at eps 0.03 and 0.08 over 2 embedded-data knee slices
(8 coils, 320x160 k-space), every perturbation applied to every method plus zero-filled; l1 with
the demo's 50 iterations. Untrained network weights (the time does not depend on them). Run it
with this checkout's src and with an older one's on PYTHONPATH to compare; a fresh output folder
each time, so nothing is resumed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from mrirobust.robustness.adversarial import run_attack_experiment
from demo_slices import demo_knee_slices  # bench/demo_slices.py

SETTINGS = {"l1": {"name": "l1", "iters": 50}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="unet-small,varnet-small,l1")
    args = parser.parse_args()
    methods = [SETTINGS.get(name, name) for name in args.methods.split(",")]
    samples = demo_knee_slices(2)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_attack_experiment(samples, methods, evaluate_only=["zero-filled"], eps=[0.03, 0.08], images=2, out=out,
                              progress=False)
        seconds = time.perf_counter() - start
    print(f"attack job ({args.methods}; evaluate-only zero-filled; eps 0.03, 0.08; 2 images), "
          f"{torch.get_num_threads()} thread(s): {seconds:.1f} s")


if __name__ == "__main__":
    main()
