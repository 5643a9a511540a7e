"""bench/realism.py trains what the demo study trains: the spec and the settings its study config resolves."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path

from mrirobust.demo import demo_config
from mrirobust.study.config import validate
from mrirobust.workflows.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_realism_trains_the_demo_studys_networks(tmp_path):
    spec = importlib.util.spec_from_file_location("realism", ROOT / "bench" / "realism.py")
    realism = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(realism)
    raw = demo_config()
    for source in raw["data"]:
        (tmp_path / "data" / source).mkdir(parents=True)  # the study checks that its data folders exist
    recon = {"recon": {**raw["experiments"]["recon"], "methods": ["unet", "varnet"]}}
    study = validate({**raw, "experiments": recon}, base=tmp_path)  # the methods as the study resolves them
    for name, label in (("unet-small", "unet"), ("varnet-small", "varnet")):
        method, config = realism.RUNS[name]
        entry = study.methods[label]
        assert method == entry.config
        assert asdict(config) == asdict(TrainConfig(**{k: v for k, v in entry.train.items() if k != "data"}))
