"""The adversarial experiment end to end on small generated data: transfer matrix, budgets,
resume, failed rows, bad input and figures."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
import torch

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.sample import draw_mask
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError
from mrirobust.methods.base import Reconstructor
from mrirobust.physics.combine import zero_filled_rss
from mrirobust.physics.masks import MaskSpec
from mrirobust.report.adversarial_figures import basis_figure
from mrirobust.robustness import adversarial
from mrirobust.cli import main
from mrirobust.robustness.adversarial import check_eps, run_attack_experiment

METHODS = ["zero-filled", {"name": "sense", "calib_size": 12, "kernel_size": 4}]  # ESPIRiT sized for 48x48
NAMES = ["zero-filled", "sense"]
EPS = [0.0, 0.05]
LOSS = "ssim[fastmri,volume-max]_loss"
SMALL = dict(images=2, batch_size=2, center_fraction=0.125, progress=False)  # 6 centre columns for ESPIRiT


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, [SynthConfig("knee", split="test", num_volumes=1, slices_per_volume=2, num_coils=4,
                                  shape=(48, 48), oversample=True)])
    return root / "knee" / "test"


def read(path) -> list[dict]:
    return pq.read_table(path.with_suffix(".parquet")).to_pylist()


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("attack")
    csv_path = run_attack_experiment(data, METHODS, eps=EPS, out=out, **SMALL)
    return csv_path, read(csv_path)


def test_every_perturbation_is_applied_to_every_method(run):
    _, rows = run
    assert len(rows) == (len(METHODS) + 1) * len(METHODS) * len(EPS) * 2
    cells = {(r["attacked"], r["evaluated"], r["eps"], r["image"]) for r in rows}
    assert len(cells) == len(rows)
    assert all(r["status"] == "ok" for r in rows)
    assert {r["attack"] for r in rows if r["attacked"] == "random" and r["eps"] > 0} == {"random"}
    for key in ("evaluated_hash", "file", "slice", "mask", "mask_seed", "attack_seed", "norm",
                "attack_settings", "ssim_variant", "mrirobust_version"):
        assert all(r[key] not in (None, "") for r in rows), key


def test_zero_budget_loses_nothing(run):
    _, rows = run
    zero = [r for r in rows if r["eps"] == 0]
    assert zero and all(r[LOSS] == 0 and r["z_norm"] == 0 for r in zero)


def test_budget_is_relative_to_the_measured_kspace_and_respected(run, data):
    _, rows = run
    dataset = SliceDataset(data)
    spec = MaskSpec("random", (SMALL["center_fraction"],), (4,))
    for r in (r for r in rows if r["eps"] > 0):
        sample = dataset[r["image"]]
        assert (sample.meta.file, sample.meta.slice) == (r["file"], r["slice"])
        mask, _ = draw_mask(sample, spec)
        expected = r["eps"] * torch.linalg.vector_norm(sample.kspace * mask).item()
        assert r["budget"] == pytest.approx(expected, rel=1e-5)
        assert r["z_norm"] <= r["budget"] * (1 + 1e-4)


def test_an_attack_hurts_its_own_method_more_than_random_noise(run):
    _, rows = run
    def mean_loss(attacked: str, evaluated: str) -> float:
        values = [r[LOSS] for r in rows if (r["attacked"], r["evaluated"], r["eps"]) == (attacked, evaluated, 0.05)]
        return sum(values) / len(values)

    for name in NAMES:
        assert mean_loss(name, name) > mean_loss("random", name) > -0.01


def test_figures_and_csv_are_written(run):
    csv_path, _ = run
    for name in ("attack.csv", "attack.parquet", "figure3.png", "figure9.png"):
        assert (csv_path.parent / name).stat().st_size > 0
    assert not (csv_path.parent / "figure10.png").exists()  # no l1 bases in this run


def test_transfer_matrix_text_marks_the_diagonal(run):
    _, rows = run
    text = adversarial.format_transfer(rows, loss_key=LOSS)
    assert "hurt most by its own attack?" in text
    attackers, victims, matrix = adversarial.transfer_matrix(rows, loss_key=LOSS)
    assert attackers == NAMES + ["random"] and victims == NAMES and matrix.shape == (3, 2)


def test_an_interrupted_run_resumes_to_identical_rows(run, data, tmp_path, monkeypatch):
    csv_path, _ = run
    computed = []
    original = adversarial._Experiment.unit

    def interrupt_after_three(self, key, compute):
        def counted():
            if len(computed) == 3:
                raise KeyboardInterrupt
            computed.append(key)
            return compute()
        return original(self, key, counted)

    monkeypatch.setattr(adversarial._Experiment, "unit", interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_attack_experiment(data, METHODS, eps=EPS, out=tmp_path, **SMALL)
    assert len(list((tmp_path / "units").glob("*.pt"))) == 3 and not (tmp_path / "attack.csv").exists()
    monkeypatch.setattr(adversarial._Experiment, "unit", original)

    resumed = run_attack_experiment(data, METHODS, eps=EPS, out=tmp_path, **SMALL)
    assert resumed.read_text() == csv_path.read_text()


@dataclass
class NanWhenPerturbed(Reconstructor):
    """Zero-filled on the first k-space it sees (the clean one); NaN on anything else."""

    name = "nan-when-perturbed"

    def __post_init__(self) -> None:
        self.clean: torch.Tensor | None = None

    def reconstruct(self, kspace, mask, **meta):
        if self.clean is None:
            self.clean = kspace.clone()
        image = zero_filled_rss(kspace, mask)
        return image if torch.equal(kspace, self.clean) else torch.full_like(image, float("nan"))


def test_a_method_that_returns_nan_under_perturbation_gets_failed_rows(data, tmp_path):
    csv_path = run_attack_experiment(data, ["zero-filled"], evaluate_only=[f"{__name__}:NanWhenPerturbed"],
                                     eps=EPS, out=tmp_path, **SMALL)
    rows = read(csv_path)
    plugin = [r for r in rows if r["evaluated"] == "nan-when-perturbed"]
    assert {r["attacked"] for r in plugin} == {"zero-filled", "random"}  # evaluated, not attacked
    failed = [r for r in plugin if r["eps"] > 0]
    assert failed and all(r["status"] == "failed" and "NaN" in r["reason"] for r in failed)
    assert all(r["status"] == "ok" for r in rows if r not in failed)


@pytest.mark.parametrize("text", ["0,abc", "0,-0.01", "nan", ""])
def test_bad_eps_names_the_option(text, data, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--eps"):
        check_eps(text)
    assert main(["attack", str(data), "--eps", text, "--out", str(tmp_path / "out")]) == 2
    assert "--eps" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@dataclass
class NotAttackable(Reconstructor):
    """Neither differentiable nor optimisation-based: no attack applies."""

    name = "not-attackable"

    def reconstruct(self, kspace, mask, **meta):
        return zero_filled_rss(kspace, mask)


def test_a_method_no_attack_applies_to_is_a_config_error(data, tmp_path):
    with pytest.raises(ConfigError, match="not-attackable"):
        run_attack_experiment(data, [f"{__name__}:NotAttackable"], eps=[0.05], images=1, out=tmp_path,
                              progress=False)


def test_basis_figure_needs_two_l1_bases(tmp_path):
    rows = [{"attacked": a, "evaluated": a, "eps": e, "status": "ok", LOSS: e * k, "image": i}
            for a, k in (("l1", 1.0), ("l1-dct", 2.0)) for e in (0.0, 0.05) for i in range(2)]
    assert basis_figure(rows[:4], tmp_path / "one.png", loss_key=LOSS) is None
    assert basis_figure(rows, tmp_path / "two.png", loss_key=LOSS).stat().st_size > 0


def test_full_norm_budget_is_relative_to_the_fully_sampled_kspace(data, tmp_path):
    csv_path = run_attack_experiment(data, ["zero-filled"], eps=[0.05], norm="full", out=tmp_path,
                                     **{**SMALL, "images": 1})
    rows = read(csv_path)
    full = torch.linalg.vector_norm(SliceDataset(data)[0].kspace).item()
    assert rows and all(r["norm"] == "full" and r["budget"] == pytest.approx(0.05 * full, rel=1e-5) for r in rows)
    with pytest.raises(ConfigError, match="--norm"):
        run_attack_experiment(data, ["zero-filled"], eps=[0.05], norm="sum", out=tmp_path, progress=False)


PRECOMPUTED: list[torch.Tensor] = []  # what CountsPrecompute.precompute saw, one entry per call


@dataclass
class CountsPrecompute(Reconstructor):
    """Zero-filled that needs meta `token` from its own `precompute` of the clean y in every call."""

    name = "counts-precompute"
    family = "baseline"
    differentiable = True

    def precompute(self, kspace, mask):
        PRECOMPUTED.append(kspace.clone())
        return {"token": kspace.abs().sum(dim=(1, 2, 3))}

    def reconstruct(self, kspace, mask, token=None, **meta):
        assert token is not None and token.shape == (kspace.shape[0],), "meta token missing"
        return zero_filled_rss(kspace, mask)


def test_precompute_runs_once_per_batch_on_the_clean_kspace_and_reaches_every_call(data, tmp_path):
    """Attacked and evaluated (PGD at two budgets, random noise, clean): one precompute per batch and method."""
    PRECOMPUTED.clear()
    run_attack_experiment(data, [f"{__name__}:CountsPrecompute"], eps=[0.02, 0.05], out=tmp_path, **SMALL)
    assert len(PRECOMPUTED) == 1  # one batch of 2 images; the attacked method is also the one evaluated
    spec = MaskSpec("random", (SMALL["center_fraction"],), (4,))
    samples = [SliceDataset(data)[i] for i in range(2)]
    clean = torch.stack([s.kspace * draw_mask(s, spec)[0] for s in samples])
    torch.testing.assert_close(PRECOMPUTED[0], clean, rtol=0, atol=0)
