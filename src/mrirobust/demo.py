"""`mrirobust demo`: the main job on the embedded synthetic dataset.

Until the full study exists (later issues), the demo generates the embedded dataset and scores
the baseline methods on each anatomy family's held-out test split.
"""

from __future__ import annotations

from pathlib import Path

from mrirobust.data.synthetic import ACQUISITIONS, synthesize
from mrirobust.evaluate import run_recon

DEMO_METHODS = ("zero-filled", "sense")
# fastMRI's challenge masks: random for knee, equispaced-fraction for brain (STUDY.md).
MASK_TYPES = {"knee": "random", "brain": "equispaced_fraction"}


def ensure_demo_data(out: Path) -> Path:
    """Generate the embedded dataset under `out/data` unless a complete copy is already there."""
    data = out / "data"
    stamp = data / ".complete"
    if not stamp.exists():
        paths = synthesize(data, "demo")
        print(f"generated the embedded dataset: {len(paths)} volumes in {data}")
        stamp.write_text("\n".join(str(p.relative_to(data)) for p in paths) + "\n")
    return data


def run_demo(out: str | Path = "out/demo", *, device: str = "cpu") -> None:
    """Generate (or reuse) the embedded data, then reconstruct and score each family's test split."""
    out = Path(out)
    data = ensure_demo_data(out)
    for anatomy in ACQUISITIONS:
        mask_type = MASK_TYPES[anatomy]
        print(f"\n== {anatomy}: test split, 4x {mask_type} column mask (centre fraction 0.08) ==")
        run_recon(data / anatomy / "test", DEMO_METHODS, out=out / anatomy, mask_type=mask_type,
                  acceleration=4, center_fraction=0.08, device=device)
