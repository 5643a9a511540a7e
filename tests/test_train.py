"""Training: learning happens, resume is exact, NaN stops the run and keeps the last checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from mrirobust.data.dataset import SliceDataset, same_shape_batches, slice_shapes
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError, MriRobustError
from mrirobust.methods.base import Reconstructor
from mrirobust.workflows.train import TrainConfig, train, training_seconds
from mrirobust.physics.combine import zero_filled_rss


REPO = Path(__file__).resolve().parents[1]


class Refiner(torch.nn.Module):
    """A tiny residual CNN on the zero-filled image."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image + self.net(image[:, None])[:, 0]


@dataclass
class TinyTrained(Reconstructor):
    """A trainable plug-in: zero-filled RSS refined by a small CNN (the `workflows.train` protocol)."""

    nan_after: int | None = None  # produce NaN once this many forward calls have been made (tests)
    width: int = 8
    model: torch.nn.Module = field(init=False, repr=False)
    calls: int = field(default=0, init=False)

    name = "tiny-trained"
    family = "trained"
    differentiable = True
    trainable = True
    train_defaults = {"loss": "l1", "optimizer": "adam", "lr": 3e-3}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model = Refiner(self.width)

    def reconstruct_with(self, model, kspace, mask, **meta):
        self.calls += 1
        image = model(zero_filled_rss(kspace, mask))
        if self.nan_after is not None and self.calls > self.nan_after:
            image = image * float("nan")
        return image

    def reconstruct(self, kspace, mask, **meta):
        return self.reconstruct_with(self.model, kspace, mask, **meta)


TINY = "tests.test_train:TinyTrained"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    synthesize(root, [SynthConfig("knee", split="train", num_volumes=2, slices_per_volume=3, num_coils=4,
                                  shape=(48, 48)),
                      SynthConfig("knee", split="val", num_volumes=1, slices_per_volume=2, num_coils=4,
                                  shape=(48, 48), seed=1)])
    return root


@pytest.fixture(scope="module")
def data(root):
    return SliceDataset(root / "knee" / "train"), SliceDataset(root / "knee" / "val")


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 2, "progress": False, "center_fraction": 0.16, **overrides})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_training_improves_validation_ssim(data, tmp_path):
    train_set, val_set = data
    result = train(TINY, train_set, val_set, tmp_path, config(epochs=6))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.history[-1]["val_ssim"] > result.history[0]["val_ssim"]
    assert result.last.exists() and result.best.exists()
    saved = torch.load(result.best, weights_only=True)
    assert saved["method"] == {"name": "tiny-trained", "nan_after": None, "width": 8} and "state_dict" in saved


def test_batches_of_several_matrix_sizes_each_hold_one_size_and_cover_every_slice(tmp_path):
    synthesize(tmp_path, [SynthConfig("knee", split="train", num_volumes=1, slices_per_volume=3, num_coils=4,
                                      shape=(48, 48)),
                          SynthConfig("knee", split="train", num_volumes=1, slices_per_volume=2, num_coils=4,
                                      shape=(64, 64), folder="fine")])
    mixed = SliceDataset(tmp_path)
    shapes = slice_shapes(mixed, range(len(mixed)))
    assert shapes == [tuple(mixed[i].kspace.shape[-2:]) for i in range(len(mixed))]
    assert sorted(set(shapes)) == [(48, 48), (64, 64)]
    batches = same_shape_batches(shapes, 2, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(len(mixed)))
    assert all(len(b) <= 2 and len({shapes[i] for i in b}) == 1 for b in batches)
    assert batches == same_shape_batches(shapes, 2, torch.Generator().manual_seed(0))
    result = train(TINY, mixed, None, tmp_path / "run", config(epochs=2))  # collate refuses mixed batches
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_same_seed_same_weights_and_resume_after_interruption_gives_identical_weights(data, tmp_path):
    train_set, val_set = data
    train(TINY, train_set, val_set, tmp_path / "straight", config(epochs=3))
    torch.manual_seed(123)  # the global state does not matter: train() seeds the initial weights itself
    train(TINY, train_set, val_set, tmp_path / "resumed", config(epochs=2))
    result = train(TINY, train_set, val_set, tmp_path / "resumed", config(epochs=3))
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    straight, resumed = _weights(tmp_path / "straight" / "last.ckpt"), _weights(result.last)
    for key in straight:
        torch.testing.assert_close(straight[key], resumed[key], rtol=0, atol=0)
    # the run's training time: every epoch's wall clock, the resumed run's two sessions together
    epochs = [h["seconds"] for h in result.history]
    assert len(epochs) == 3 and all(s > 0 for s in epochs)
    assert training_seconds(result.last) == pytest.approx(sum(epochs))
    assert training_seconds(result.best) == training_seconds(result.last)  # a best.ckpt: its run's whole time


def test_training_seconds_is_none_for_a_checkpoint_without_epoch_times(data, tmp_path):
    result = train(TINY, data[0], None, tmp_path, config(epochs=1))
    state = torch.load(result.last, weights_only=True)
    state["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in state["history"]]
    torch.save(state, tmp_path / "older.ckpt")
    torch.save(state["state_dict"], tmp_path / "weights_only.pt")
    assert training_seconds(tmp_path / "older.ckpt") is None and training_seconds(tmp_path / "weights_only.pt") is None


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    train_set, val_set = data
    spec = {"name": TINY, "nan_after": 4}  # 3 training batches + 1 validation batch in epoch 1
    with pytest.raises(MriRobustError, match=r"loss became nan at epoch 2.*last good checkpoint"):
        train(spec, train_set, val_set, tmp_path, config())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0


def test_untrainable_method_and_bad_settings_are_config_errors(data, tmp_path):
    train_set, val_set = data
    with pytest.raises(ConfigError, match="not trainable"):
        train("zero-filled", train_set, val_set, tmp_path, config())
    with pytest.raises(ConfigError, match="loss"):
        train(TINY, train_set, val_set, tmp_path, config(loss="huber"))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("field, value", [
    ("lr", -1.0), ("lr", 0.0), ("batch_size", 0), ("batch_size", -1), ("epochs", 0), ("epochs", -3),
    ("epochs", "3"), ("lr_gamma", 0.0), ("weight_decay", -0.1), ("num_workers", -3), ("acceleration", 0),
    ("center_fraction", 1.5), ("mask_type", "spiral"), ("optimizer", "sgd"), ("max_train_slices", 0),
    ("amp", "yes"),
])
def test_train_config_rejects_bad_values_on_construction(field, value):
    with pytest.raises(ConfigError) as error:
        TrainConfig(**{field: value})
    assert error.value.field == field and "\n" not in str(error.value)


def _fake_checkpoint(path: Path, state_dict: dict, **overrides) -> None:
    path.mkdir(parents=True, exist_ok=True)
    state = {"state_dict": state_dict, "optimizer": {}, "epoch": 0, "history": [],
             "train_config": {}, **overrides}
    torch.save(state, path / "last.ckpt")


@pytest.mark.parametrize("kind, message", [
    ("text", r"last\.ckpt: not a PyTorch weights file"),
    ("directory", r"last\.ckpt: is a directory"),
    ("not ours", r"last\.ckpt: not a checkpoint written by `mrirobust train`"),
    ("other architecture", r"last\.ckpt: key 'net\.0\.weight' has shape \(4, 1, 3, 3\), expected \(8, 1, 3, 3\)"),
])
def test_resuming_from_a_bad_last_checkpoint_is_one_line_before_training(data, tmp_path, kind, message):
    train_set, val_set = data
    out = tmp_path / "run"
    if kind == "text":
        out.mkdir()
        (out / "last.ckpt").write_text("garbage\n" * 100)
    elif kind == "directory":
        (out / "last.ckpt").mkdir(parents=True)
    elif kind == "not ours":
        out.mkdir()
        torch.save({"weights": torch.zeros(3)}, out / "last.ckpt")
    else:
        _fake_checkpoint(out, Refiner(width=4).state_dict())
    with pytest.raises(ConfigError, match=message) as error:
        train(TINY, train_set, val_set, out, config())
    text = str(error.value)
    assert "\n" not in text and len(text) - len(str(out)) < 200
    assert not (out / "best.ckpt").exists()


def test_resuming_with_other_settings_names_the_setting(data, tmp_path):
    train_set, val_set = data
    train(TINY, train_set, val_set, tmp_path, config(epochs=1))
    with pytest.raises(ConfigError, match=r"^lr: .*trained with lr=0\.003, not 0\.01"):
        train(TINY, train_set, val_set, tmp_path, config(epochs=2, lr=0.01))


DDP_SCRIPT = """
import sys, torch
from mrirobust.data.dataset import SliceDataset
from mrirobust.workflows.train import TrainConfig, train
root = sys.argv[1]
result = train("tests.test_train:TinyTrained", SliceDataset(root + "/knee/train"), SliceDataset(root + "/knee/val"), sys.argv[2],
               TrainConfig(epochs=2, batch_size=1, progress=False, center_fraction=0.16))
if torch.distributed.get_rank() == 0:
    print("history", [round(h["train_loss"], 6) for h in result.history])
torch.distributed.destroy_process_group()
"""


def test_torchrun_data_parallel_on_cpu(root, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(root), str(tmp_path / "ckpt")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "history" in run.stdout
    assert (tmp_path / "ckpt" / "last.ckpt").exists()


@pytest.mark.parametrize("flags, field", [
    (["--lr", "-1"], "lr"), (["--batch-size", "0"], "batch_size"), (["--batch-size", "-1"], "batch_size"),
    (["--epochs", "0"], "epochs"), (["--epochs", "-2"], "epochs"), (["--workers", "-3"], "num_workers"),
    (["--augment", "rotate"], "augment"),
])
def test_cli_train_rejects_bad_settings_in_one_line_before_any_compute(root, tmp_path, capsys, flags, field):
    from mrirobust.cli import main

    out = tmp_path / "ckpt"
    assert main(["train", TINY, str(root / "knee" / "train"), "--out", str(out), *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"mrirobust: error: {field}: ") and "\n" not in error
    assert not out.exists()
