"""The adversarial experiment on small generated data: transfer matrix, budgets, resume, failed
rows, bad input and figures (unit level through `run_experiment`, end to end through the CLI)."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import pytest
import torch

from mrirobust.cli import main
from mrirobust.data.dataset import SliceDataset
from mrirobust.data.domains import Domain
from mrirobust.data.sample import draw_mask
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError
from mrirobust.evaluate import config_hash
from mrirobust.experiments.attack import Attack, AttackSettings, AttackSpec
from mrirobust.experiments.base import DataSource, Inputs, MethodInput
from mrirobust.experiments.runner import UnitCache, run_experiment
from mrirobust.experiments.spec import parse, yaml_where
from mrirobust.methods.base import Reconstructor, build
from mrirobust.physics.combine import zero_filled_rss
from mrirobust.physics.masks import MaskSpec
from mrirobust.report import adversarial_figures
from mrirobust.report.adversarial_figures import basis_figure
from mrirobust.report.registry import kind_report

METHODS = {"zero-filled": {"name": "zero-filled"},
           "sense": {"name": "sense", "espirit": {"calib_size": 12, "kernel_size": 4}}}  # ESPIRiT sized for 48x48
NAMES = list(METHODS)
EPS = (0.0, 0.05)
LOSS = "ssim[fastmri,volume-max]_loss"
MASK = MaskSpec("random", (0.125,), (4,))  # 6 centre columns for ESPIRiT
UNITS = 1 + (len(METHODS) + 1) * len(EPS)  # one batch: its clean unit, then (attacked or random, eps)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, [SynthConfig("knee", split="test", num_volumes=1, slices_per_volume=2, num_coils=4,
                                  shape=(48, 48), oversample=True)])
    return root / "knee" / "test"


def inputs(data, tmp_path, methods: dict[str, dict] = METHODS) -> Inputs:
    return Inputs({"d": DataSource(Domain(data, name="d"), MASK)},
                  {label: MethodInput(config) for label, config in methods.items()}, device="cpu",
                  cache=tmp_path / "cache")


def attack_spec(**settings) -> AttackSpec:
    return AttackSpec(**{"data": "d", "methods": tuple(NAMES), "eps": EPS, "images": 2, "batch_size": 2,
                         **settings})


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attack")
    cache = UnitCache(tmp / "units")
    result = run_experiment(Attack(attack_spec(), inputs(data, tmp)), cache, progress=False)
    assert cache.computed == UNITS
    return result


def test_every_perturbation_is_applied_to_every_method(run):
    rows = run.rows
    assert len(rows) == (len(METHODS) + 1) * len(METHODS) * len(EPS) * 2
    cells = {(r["attacked"], r["evaluated"], r["eps"], r["image"]) for r in rows}
    assert len(cells) == len(rows)
    assert all(r["status"] == "ok" for r in rows)
    assert {r["attack"] for r in rows if r["attacked"] == "random" and r["eps"] > 0} == {"random"}
    for key in ("config_hash", "file", "slice", "mask", "mask_seed", "attack_seed", "norm",
                "attack_settings", "ssim_variant", "mrirobust_version"):
        assert all(r[key] not in (None, "") for r in rows), key
    # each row names the evaluated method's config and the attacked one's (none for the random control)
    hashes = {label: config_hash(build(config)) for label, config in METHODS.items()}
    assert all(r["config_hash"] == hashes[r["evaluated"]] for r in rows)
    assert all(r["attacked_config_hash"] == hashes.get(r["attacked"], "") for r in rows)


def test_zero_budget_loses_nothing(run):
    zero = [r for r in run.rows if r["eps"] == 0]
    assert zero and all(r[LOSS] == 0 and r["z_norm"] == 0 for r in zero)


def test_budget_is_relative_to_the_measured_kspace_and_respected(run, data):
    dataset = SliceDataset(data)
    perturbed = [r for r in run.rows if r["eps"] > 0]
    assert perturbed
    for r in perturbed:
        sample = dataset[r["image"]]
        assert (sample.meta.file, sample.meta.slice) == (r["file"], r["slice"])
        mask, _ = draw_mask(sample, MASK)
        expected = r["eps"] * torch.linalg.vector_norm(sample.kspace * mask).item()
        assert r["budget"] == pytest.approx(expected, rel=1e-5)
        assert r["z_norm"] <= r["budget"]  # exactly, as stored (float32 norms)


def test_an_attack_hurts_its_own_method_more_than_random_noise(run):
    def mean_loss(attacked: str, evaluated: str) -> float:
        values = [r[LOSS] for r in run.rows if (r["attacked"], r["evaluated"], r["eps"]) == (attacked, evaluated, 0.05)]
        return sum(values) / len(values)

    for name in NAMES:
        assert mean_loss(name, name) > mean_loss("random", name) > -0.01


def test_figures_are_drawn_from_rows_and_artefacts(run, tmp_path):
    drawn = adversarial_figures.figures(run.rows, run.artefacts, tmp_path, "")
    assert sorted(p.name for p in drawn) == ["figure3.png", "figure9.png"]
    assert all(p.stat().st_size > 0 for p in drawn)
    assert not (tmp_path / "figure10.png").exists()  # no l1 bases in this run
    examples = run.artefacts["examples"]  # Figure 9: each method under its own attack at the largest eps
    assert run.artefacts["eps"] == max(EPS) and set(NAMES) <= set(examples)
    assert all(examples[name][name].shape == examples["clean"]["target"].shape for name in NAMES)


def test_transfer_matrix_text_marks_the_diagonal(run):
    text = adversarial_figures.format_transfer(run.rows, loss_key=LOSS)
    assert "hurt most by its own attack?" in text
    assert text in kind_report("attack").text(run.rows, run.artefacts)
    attackers, victims, matrix = adversarial_figures.transfer_matrix(run.rows, loss_key=LOSS)
    assert attackers == NAMES + ["random"] and victims == NAMES and matrix.shape == (3, 2)


class InterruptedCache(UnitCache):
    """A unit cache whose run is interrupted (Ctrl-C) when it is about to compute unit `after` + 1."""

    def __init__(self, root, after: int) -> None:
        super().__init__(root)
        self.after = after

    def get(self, unit, compute):
        def counted():
            if self.computed == self.after:
                raise KeyboardInterrupt
            return compute()
        return super().get(unit, counted)


def test_an_interrupted_run_resumes_to_identical_rows(run, data, tmp_path):
    def experiment() -> Attack:
        return Attack(attack_spec(), inputs(data, tmp_path))

    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment(), InterruptedCache(tmp_path / "units", after=3), progress=False)
    assert len(list((tmp_path / "units").glob("*.pt"))) == 3  # each finished unit stored, nothing else
    cache = UnitCache(tmp_path / "units")
    resumed = run_experiment(experiment(), cache, progress=False)
    assert cache.computed == UNITS - 3
    assert repr(resumed.rows) == repr(run.rows)  # repr: NaN objectives compare equal
    again = UnitCache(tmp_path / "units")
    assert repr(run_experiment(experiment(), again, progress=False).rows) == repr(run.rows)
    assert again.computed == 0


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
    methods = {"zero-filled": {"name": "zero-filled"}, "nan-when-perturbed": {"name": f"{__name__}:NanWhenPerturbed"}}
    spec = attack_spec(methods=("zero-filled",), evaluate_only=("nan-when-perturbed",))
    rows = run_experiment(Attack(spec, inputs(data, tmp_path, methods)), UnitCache(tmp_path / "units"),
                          progress=False).rows
    plugin = [r for r in rows if r["evaluated"] == "nan-when-perturbed"]
    assert {r["attacked"] for r in plugin} == {"zero-filled", "random"}  # evaluated, not attacked
    failed = [r for r in plugin if r["eps"] > 0]
    assert failed and all(r["status"] == "failed" and "NaN" in r["reason"] for r in failed)
    assert all(r["status"] == "ok" for r in rows if r not in failed)
    assert "rows failed" in kind_report("attack").text(rows, {})


@pytest.mark.parametrize("value", [[0, "abc"], [0, -0.01], [float("nan")], [], [0, 2]])
def test_bad_eps_in_a_study_names_the_field(value):
    with pytest.raises(ConfigError, match=r"experiments\.attack\.eps"):
        parse(AttackSpec, {"data": "d", "eps": value}, yaml_where("experiments.attack"))


def test_large_eps_needs_to_be_meant():
    assert parse(AttackSpec, {"data": "d", "eps": [0, 2], "allow_large_eps": True}).eps == (0.0, 2.0)


@pytest.mark.parametrize("flag, text", [("--eps", "0,abc"), ("--eps", "0,-0.01"), ("--eps", "nan"), ("--eps", ""),
                                        ("--eps", "0,2"), ("--norm", "sum")])
def test_bad_settings_on_the_command_line_name_the_flag(flag, text, data, tmp_path, capsys):
    assert main(["attack", str(data), flag, text, "--out", str(tmp_path / "out")]) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_attack_command_end_to_end(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["attack", str(data), "--methods", "zero-filled", "--eps", "0,0.05", "--images", "1",
                 "--center-fraction", "0.125", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hurt most by its own attack? zero-filled:" in printed
    # the attack's claims as verdicts (one image: no interval, so inconclusive), and no other claim
    assert "\nA1 inconclusive: " in printed and "\nA2 inconclusive: " in printed and "only 1 images" in printed
    assert "\nS1 " not in printed
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 1 * 2  # (zero-filled, random) x zero-filled x eps, one image
    assert {(r["attacked"], r["evaluated"], float(r["eps"])) for r in rows} == {
        (a, "zero-filled", e) for a in ("zero-filled", "random") for e in (0.0, 0.05)}
    assert (out / "results.parquet").stat().st_size > 0 and (out / "report" / "index.html").stat().st_size > 0
    figures = {p.name.rsplit("-", 1)[-1] for p in (out / "report" / "figures").glob("*.png")}
    assert {"figure3.png", "figure9.png"} <= figures and "figure10.png" not in figures


@dataclass
class NotAttackable(Reconstructor):
    """Neither differentiable nor optimisation-based: no attack applies."""

    name = "not-attackable"

    def reconstruct(self, kspace, mask, **meta):
        return zero_filled_rss(kspace, mask)


def test_a_method_no_attack_applies_to_is_a_config_error(data, tmp_path):
    methods = {"not-attackable": {"name": f"{__name__}:NotAttackable"}}
    spec = attack_spec(methods=("not-attackable",), eps=(0.05,), images=1)
    with pytest.raises(ConfigError, match="not-attackable"):
        run_experiment(Attack(spec, inputs(data, tmp_path, methods)), UnitCache(tmp_path / "units"), progress=False)


def test_basis_figure_needs_two_l1_bases(tmp_path):
    rows = [{"attacked": a, "evaluated": a, "eps": e, "status": "ok", LOSS: e * k, "image": i}
            for a, k in (("l1", 1.0), ("l1-dct", 2.0)) for e in (0.0, 0.05) for i in range(2)]
    assert basis_figure(rows[:4], tmp_path / "one.png", loss_key=LOSS) is None
    assert basis_figure(rows, tmp_path / "two.png", loss_key=LOSS).stat().st_size > 0


def test_full_norm_budget_is_relative_to_the_fully_sampled_kspace(data, tmp_path):
    spec = attack_spec(methods=("zero-filled",), eps=(0.05,), norm="full", images=1)
    rows = run_experiment(Attack(spec, inputs(data, tmp_path)), UnitCache(tmp_path / "units"), progress=False).rows
    full = torch.linalg.vector_norm(SliceDataset(data)[0].kspace).item()
    assert rows and all(r["norm"] == "full" and r["budget"] == pytest.approx(0.05 * full, rel=1e-5) for r in rows)
    with pytest.raises(ConfigError, match=r"experiments\.attack\.norm"):
        parse(AttackSpec, {"data": "d", "norm": "sum"}, yaml_where("experiments.attack"))


def test_l1_attack_on_images_without_oversampling_beats_random_noise_on_ssim_and_psnr(tmp_path, capsys):
    """Regression: without readout oversampling, an MSE objective let l1's attack put its whole change
    into the image border SSIM's window barely sees, so its own attack hurt l1's SSIM less than
    random noise of the same norm (measured here: 0.056 vs 0.069). The default objective ("both":
    relative MSE + 1 - SSIM on the scored crop) aims at what the verdicts score."""
    import numpy as np
    from skimage.data import camera
    from skimage.transform import resize

    image = resize(camera().astype(np.float64) / 255, (80, 80), anti_aliasing=True)
    np.save(tmp_path / "img.npy", image[None].astype(np.float32))
    assert main(["data", "from-images", str(tmp_path / "img.npy"), str(tmp_path / "data"), "--coils", "4"]) == 0
    (tmp_path / "l1.yaml").write_text("name: l1\niters: 30\n")
    out = tmp_path / "out"
    assert main(["attack", str(tmp_path / "data"), "--methods", str(tmp_path / "l1.yaml"), "--eps", "0.05",
                 "--images", "1", "--center-fraction", "0.16", "--attack-setting", "steps=5", "--out", str(out)]) == 0
    with open(out / "results.csv") as handle:
        rows = {r["attacked"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"l1", "random"} and rows["l1"]["evaluated"] == "l1"
    for loss in (LOSS, "psnr[volume-max]_loss"):
        assert float(rows["l1"][loss]) > float(rows["random"][loss]), loss
    assert '"objective": "both"' in rows["l1"]["attack_settings"]


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
    spec = attack_spec(methods=("counts",), eps=(0.02, 0.05), attack=AttackSettings(steps=3))
    run_experiment(Attack(spec, inputs(data, tmp_path, {"counts": {"name": f"{__name__}:CountsPrecompute"}})),
                   UnitCache(tmp_path / "units"))
    assert len(PRECOMPUTED) == 1  # one batch of 2 images; the attacked method is also the one evaluated
    spec = MASK
    samples = [SliceDataset(data)[i] for i in range(2)]
    clean = torch.stack([s.kspace * draw_mask(s, spec)[0] for s in samples])
    torch.testing.assert_close(PRECOMPUTED[0], clean, rtol=0, atol=0)


SHAPES: list[object] = []  # the target_shape of every RecordsTargetShape call


@dataclass
class RecordsTargetShape(Reconstructor):
    """Zero-filled that records meta `target_shape` (the U-net crops to it before its network, so an
    attack run without it would attack another function than the one scored)."""

    name = "records-target-shape"
    family = "baseline"
    differentiable = True

    def reconstruct(self, kspace, mask, target_shape=None, **meta):
        SHAPES.append(target_shape)
        return zero_filled_rss(kspace, mask)


def test_the_attack_runs_the_method_on_the_targets_shape_as_scoring_does(data, tmp_path):
    SHAPES.clear()
    spec = attack_spec(methods=("shapes",), eps=(0.05,), attack=AttackSettings(steps=2))
    run_experiment(Attack(spec, inputs(data, tmp_path, {"shapes": {"name": f"{__name__}:RecordsTargetShape"}})),
                   UnitCache(tmp_path / "units"))
    target = tuple(SliceDataset(data)[0].target.shape[-2:])
    assert len(SHAPES) > 4 and {tuple(s) if s is not None else None for s in SHAPES} == {target}
