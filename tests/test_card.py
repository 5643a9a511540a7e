"""`mrirobust card`: a plug-in method given as module:attr against the three references on tiny
generated data (card.json's verdicts and the method's rows, a resumed run reruns nothing), and bad
input as one line before any compute."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from mrirobust.card import CardRequest, card_config, given_unet, run_card
from mrirobust.cli import main
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError
from mrirobust.methods.base import Reconstructor
from tests.clean_error import files, the_line

PLUGIN = "tests.test_card:CoilSum"
MASK = {"type": "random", "acceleration": 4, "center_fraction": 0.17}  # 8 of 48 columns: ESPIRiT calibrates


@dataclass
class CoilSum(Reconstructor):
    """A tiny differentiable plug-in: the root sum of squares of the zero-filled coil images."""

    differentiable = True

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        images = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace * mask, dim=(-2, -1)), norm="ortho"),
                                    dim=(-2, -1))
        return images.abs().pow(2).sum(dim=1).sqrt()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("carddata")
    for anatomy in ("knee", "brain"):
        synthesize(root, [SynthConfig(anatomy, split=split, num_volumes=n, slices_per_volume=s, num_coils=4,
                                       shape=(48, 48), oversample=True)
                           for split, n, s in (("train", 2, 2), ("val", 1, 1), ("test", 2, 1))])
    return root


def test_card_of_a_plugin_method(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request = CardRequest(PLUGIN, data / "knee", data / "brain", preset="quick", mask=MASK)
    card = run_card(request, tmp_path / "card", device="cpu", progress=False)
    content = json.loads((tmp_path / "card" / "card.json").read_text())
    assert card.is_file() and content["method"] == "CoilSum"
    claims = {v["claim"]: v for v in content["verdicts"]}
    assert set(claims) == {"A1", "A2", "A3", "P1", "S2"}  # the claims its experiments decide, no others
    assert all(v["line"] in card.read_text() or v["line"].replace(">", "&gt;") in card.read_text()
               for v in content["verdicts"])
    assert claims["S2"]["verdict"] == "inconclusive" and "4" in claims["S2"]["line"]  # 4 models < 5 fit points
    titles = [t["title"] for t in content["tables"]]
    assert titles[0].startswith("Mean per method") and any(t.startswith("Attack at eps") for t in titles)
    assert any(t.startswith("Area under the ssim") for t in titles)
    for table in content["tables"][:3]:  # recon, attack, perturb: the method next to every reference
        named = {cell for row in table["rows"] for cell in row if isinstance(cell, str)}
        assert {"CoilSum", "zero-filled", "l1", "unet"} <= named, table["title"]
    recon = content["tables"][0]
    assert all(row[1] == 2 for row in recon["rows"])  # n: both test slices, each with a CI
    monkeypatch.setattr("mrirobust.study.runner.execute", lambda *a, **k: pytest.fail("a resumed card reran a job"))
    run_card(request, tmp_path / "card", device="cpu", progress=False)


def test_given_unet_weights_bring_their_own_architecture(tmp_path: Path) -> None:
    """The quick preset trains a 4-channel U-net; weights our trainer wrote for another size are built
    at the size they record, fastMRI-style files without a record at unet-small's defaults."""
    recorded = {"name": "unet-small", "chans": 16, "num_pool_layers": 3, "residual": True}
    torch.save({"method": recorded, "state_dict": {}}, tmp_path / "ours.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "theirs.ckpt")
    torch.save({"method": {"name": "varnet-small"}, "state_dict": {}}, tmp_path / "varnet.ckpt")
    assert given_unet(tmp_path / "ours.ckpt") == {**recorded, "checkpoint": str(tmp_path / "ours.ckpt")}
    assert given_unet(tmp_path / "theirs.ckpt") == {"name": "unet-small", "checkpoint": str(tmp_path / "theirs.ckpt")}
    _, config = card_config(CardRequest("zero-filled", tmp_path, unet_checkpoint=tmp_path / "ours.ckpt", preset="quick"))
    assert config["methods"]["unet"]["chans"] == 16 and "train" not in config["methods"]["unet"]
    with pytest.raises(ConfigError) as caught:
        given_unet(tmp_path / "varnet.ckpt")
    assert caught.value.field == "--unet-checkpoint" and "varnet-small" in str(caught.value)


@pytest.mark.parametrize("args, field", [
    (["card", "l1", "--data", "{tmp}/nowhere"], "--data: no such folder"),
    (["card", "no-such-method", "--data", "{data}"], "METHOD"),
    (["card", "tests.test_card:Missing", "--data", "{data}"], "METHOD"),
    (["card", "no_such_module_xyz:Thing", "--data", "{data}"], "METHOD"),
    (["card", "{tmp}/bad.yaml", "--data", "{data}"], "METHOD: iterations: unknown setting"),
    (["card", "l1", "--data", "{data}", "--data2", "{tmp}/nowhere"], "--data2: no such folder"),
    (["card", "l1", "--data", "{data}", "--unet-checkpoint", "{tmp}/none.pt"], "--unet-checkpoint: no such file"),
])
def test_bad_input_is_one_line_before_compute(data: Path, tmp_path: Path, capsys, args: list[str], field: str) -> None:
    out = tmp_path / "out"
    (tmp_path / "bad.yaml").write_text("name: l1\niterations: 3\n")
    argv = [a.format(tmp=tmp_path, data=data / "knee") for a in args] + ["--out", str(out), "--device", "cpu"]
    before = files(data)
    assert main(argv) == 2
    assert field in the_line(capsys.readouterr().err)
    assert not out.exists() and files(data) == before
