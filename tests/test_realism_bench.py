"""bench/realism.py trains what the demo study trains: the spec and the settings its study config resolves."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path

import torch

from mrirobust.demo import demo_config
from mrirobust.methods.base import build
from mrirobust.study.config import validate
from mrirobust.workflows.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _realism():
    spec = importlib.util.spec_from_file_location("realism", ROOT / "bench" / "realism.py")
    realism = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(realism)
    return realism


def test_realism_trains_the_demo_studys_networks(tmp_path):
    realism = _realism()
    raw = demo_config()
    for source in raw["data"]:
        (tmp_path / "data" / source).mkdir(parents=True)  # the study checks that its data folders exist
    recon = {"recon": {**raw["experiments"]["recon"], "methods": ["unet", "varnet", "unet-jitter"]}}
    study = validate({**raw, "experiments": recon}, base=tmp_path)  # the methods as the study resolves them
    for label in realism.NETWORKS:
        entry = study.methods[label]
        for anatomy in ("knee", "brain"):
            method, config = realism.demo_training(label, anatomy)
            assert method == {k: v for k, v in entry.config.items() if k != "checkpoint"}
            shipped = (entry.checkpoints or {}).get(anatomy) or entry.config.get("checkpoint")
            if entry.train:
                assert asdict(config) == asdict(TrainConfig(**{k: v for k, v in entry.train.items() if k != "data"}))
            else:  # weights shipped with the package: realism retrains them with the recipe they record
                state = torch.load(shipped, map_location="cpu", weights_only=True)
                assert asdict(config) == state["train_config"]
                assert {k: state["method"][k] for k in method} == method  # trained as the demo builds it


def test_fine_patients_are_other_patients_at_twice_the_resolution(tmp_path):
    from mrirobust.data.dataset import SliceDataset, slice_shapes

    train_set = SliceDataset(_realism()._more_patients(tmp_path / "data", "knee", 2, fine=1))
    shapes = slice_shapes(train_set, range(len(train_set)))
    assert sorted(shapes) == [(320, 160), (320, 160), (640, 320)]  # 2x readout oversampling
    assert len({info.patient_id for info in train_set.volumes}) == 3


def test_the_demos_shipped_weights_load_and_reconstruct():
    shipped = [({k: v for k, v in entry.items() if k != "checkpoints"}, path)
               for entry in demo_config()["methods"].values() if isinstance(entry, dict)
               for path in [entry.get("checkpoint"), *entry.get("checkpoints", {}).values()] if path]
    assert shipped
    kspace = torch.randn(1, 4, 64, 32, dtype=torch.complex64)
    mask = torch.zeros(32, dtype=torch.bool)
    mask[::2] = True
    mask[12:20] = True
    for config, path in shipped:
        assert Path(path).is_file()
        method = build({**config, "checkpoint": path})  # the weights load strictly into the demo's architecture
        image = method.reconstruct(kspace * mask, mask)
        assert image.shape[-2:] == (64, 32) and torch.isfinite(image).all(), path


def test_demo_weights_keeps_what_a_study_reads_and_drops_the_optimizer(tmp_path, monkeypatch):
    from mrirobust.data.dataset import SliceDataset
    from mrirobust.data.synthetic import SynthConfig, synthesize
    from mrirobust.workflows.train import train, training_seconds

    synthesize(tmp_path / "data", [SynthConfig("knee", split=s, num_volumes=1, slices_per_volume=2, num_coils=2,
                                               shape=(32, 32)) for s in ("train", "val")])
    spec = {"name": "unet-small", "chans": 4, "num_pool_layers": 2}
    run = tmp_path / "run"
    train(spec, SliceDataset(tmp_path / "data" / "knee" / "train"), SliceDataset(tmp_path / "data" / "knee" / "val"),
          run, TrainConfig(epochs=2, progress=False))
    script = importlib.util.spec_from_file_location("demo_weights", ROOT / "bench" / "demo_weights.py")
    demo_weights = importlib.util.module_from_spec(script)
    script.loader.exec_module(demo_weights)
    shipped = tmp_path / "shipped.ckpt"
    monkeypatch.setattr("sys.argv", ["demo_weights.py", str(run), "--to", str(shipped)])
    demo_weights.main()
    state = torch.load(shipped, weights_only=True)
    assert "optimizer" not in state and set(state) == {*demo_weights.KEEP, "history"}
    assert len(state["history"]) == 2  # the whole run's epochs, from last.ckpt
    assert training_seconds(shipped) == training_seconds(run / "last.ckpt") > 0
    best = torch.load(run / "best.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(state["state_dict"][k], v) for k, v in best.items())
    build({**spec, "checkpoint": str(shipped)})  # loads as the method it records
