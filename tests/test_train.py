"""Training: learning happens, resume is exact, NaN stops the run and keeps the last checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError, MriRobustError
from mrirobust.methods.base import Reconstructor
from mrirobust.workflows.train import TrainConfig, train
from mrirobust.physics.combine import zero_filled_rss


REPO = Path(__file__).resolve().parents[1]


class Refiner(torch.nn.Module):
    """A tiny residual CNN on the zero-filled image."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image + self.net(image[:, None])[:, 0]


@dataclass
class TinyTrained(Reconstructor):
    """A trainable plug-in: zero-filled RSS refined by a small CNN."""

    nan_after: int | None = None  # produce NaN once this many forward calls have been made (tests)
    model: torch.nn.Module = field(default_factory=Refiner, repr=False)
    calls: int = 0

    name = "tiny-trained"
    family = "trained"
    differentiable = True
    trainable = True
    train_defaults = {"loss": "l1", "optimizer": "adam", "lr": 3e-3}

    def reconstruct(self, kspace, mask, **meta):
        self.calls += 1
        image = self.model(zero_filled_rss(kspace, mask))
        if self.nan_after is not None and self.calls > self.nan_after:
            image = image * float("nan")
        return image


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


def test_training_improves_validation_ssim(data, tmp_path):
    train_set, val_set = data
    torch.manual_seed(0)
    method = TinyTrained()
    result = train(method, train_set, val_set, tmp_path, config(epochs=6))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.history[-1]["val_ssim"] > result.history[0]["val_ssim"]
    assert result.last.exists() and result.best.exists()
    saved = torch.load(result.best, weights_only=False)
    assert saved["method"]["name"] == "tiny-trained" and "state_dict" in saved


def test_resume_after_interruption_gives_identical_weights(data, tmp_path):
    train_set, val_set = data
    torch.manual_seed(0)
    straight = TinyTrained()
    train(straight, train_set, val_set, tmp_path / "straight", config(epochs=3))

    torch.manual_seed(0)
    interrupted = TinyTrained()
    train(interrupted, train_set, val_set, tmp_path / "resumed", config(epochs=2))
    torch.manual_seed(123)  # a fresh process: different initial weights, all restored from the checkpoint
    resumed = TinyTrained()
    result = train(resumed, train_set, val_set, tmp_path / "resumed", config(epochs=3))
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    train_set, val_set = data
    method = TinyTrained(nan_after=4)  # 3 training batches + 1 validation batch in epoch 1
    with pytest.raises(MriRobustError, match=r"loss became nan at epoch 2.*last good checkpoint"):
        train(method, train_set, val_set, tmp_path, config())
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["epoch"] == 0


def test_untrainable_method_and_bad_settings_are_config_errors(data, tmp_path):
    from mrirobust.methods.baselines import ZeroFilled

    train_set, val_set = data
    with pytest.raises(ConfigError, match="not trainable"):
        train(ZeroFilled(), train_set, val_set, tmp_path, config())
    with pytest.raises(ConfigError, match="loss"):
        train(TinyTrained(), train_set, val_set, tmp_path, config(loss="huber"))


DDP_SCRIPT = """
import sys, torch
from mrirobust.data.dataset import SliceDataset
from mrirobust.workflows.train import TrainConfig, train
from tests.test_train import TinyTrained
torch.manual_seed(0)
root = sys.argv[1]
result = train(TinyTrained(), SliceDataset(root + "/knee/train"), SliceDataset(root + "/knee/val"), sys.argv[2],
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
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "history" in run.stdout
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
