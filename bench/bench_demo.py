"""Wall time of `mrirobust demo` with a cold store (fresh folder) and a warm one (the same again).

    python bench/bench_demo.py [--quick] [--out /tmp/bench-demo] [--device auto]

The cold run includes generating the embedded data; the warm run finds every job in the store
and only rewrites the report. Per-job seconds are in the store's job records and the report.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from mrirobust.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-demo"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    times = {}
    for label in ("cold", "warm"):
        began = time.perf_counter()
        run_demo(args.out, quick=args.quick, device=args.device, progress=False)
        times[label] = time.perf_counter() - began
    plan = json.loads((args.out / "store" / "plan.json").read_text())
    print(f"\ndemo{' --quick' if args.quick else ''}: cold {times['cold']:.0f} s, warm {times['warm']:.1f} s")
    for job in plan["jobs"]:
        record = json.loads((args.out / "store" / "jobs" / f"{job['key']}.json").read_text())
        print(f"  {job['kind']:13s} {job['name']:15s} {record['seconds']:7.1f} s  ({record['device']})")


if __name__ == "__main__":
    main()
