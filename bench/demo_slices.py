"""Demo-sized knee test slices (8 coils, 320x160 k-space) generated on the fly for the benchmarks."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.sample import Sample
from mrirobust.data.synthetic import SynthConfig, synthesize


def demo_knee_slices(count: int) -> list[Sample]:
    """`count` slices of one embedded-dataset knee volume, read back from the fastMRI-layout file."""
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(tmp, [SynthConfig("knee", split="test", num_volumes=1, slices_per_volume=count, oversample=True)])
        dataset = SliceDataset(Path(tmp) / "knee" / "test", cache=False)
        return [dataset[i] for i in range(count)]
