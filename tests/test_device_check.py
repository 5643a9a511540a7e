"""bench/device_check.sh --dry-run: the prepared GPU check runs end to end on the CPU at tiny sizes.

The GPU machine is rare, so the script's code paths are exercised here on every test run; on the
CPU both sides of each agreement check are the CPU, so they must agree exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("agreement", "timings", "demo-quick", "demo")
TIMED = ("espirit", "operator_forward_adjoint", "l1", "varnet_forward", "heatmap_unet-small", "convdecoder_b1",
         "convdecoder_b2")


def test_dry_run_writes_every_part(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "device_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["dry_run"] and record["device"] == "cpu"
    assert list(record["parts"]) == list(PARTS)
    assert all(record["parts"][p]["status"] == "ok" for p in PARTS), {p: record["parts"][p] for p in PARTS}
    checks = record["parts"]["agreement"]["checks"]
    assert set(checks) == {"fft", "operator", "espirit", "l1", "unet", "varnet", "convdecoder", "pgd", "ssim"}
    assert all(c["relative_max_difference"] == 0.0 for c in checks.values()), checks
    timings = record["parts"]["timings"]
    for name in TIMED:
        numbers = [v for v in timings[name].values() if isinstance(v, float)]
        assert numbers and all(v > 0 for v in numbers), (name, timings[name])
    assert timings["varnet_pgd_step"]["s_pgd_1_step"] > 0  # s_per_step is a difference of two timings
