"""Test-time training: the self-supervised loss falls, early stopping keeps SSIM, seeded, base untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.domains import Domain
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError
from mrirobust.methods.base import build, describe
from mrirobust.methods.ttt import holdout_split
from mrirobust.metrics import ssim
from mrirobust.physics.masks import MaskSpec
from mrirobust.robustness.attack_settings import PgdSettings, Scope, attack_objective
from mrirobust.robustness.attacks import attack, pgd, transfer
from mrirobust.study.config import validate
from mrirobust.study.jobs import plan, with_prepared
from mrirobust.workflows.prepare import Model, PrepareSettings, needs_preparing, prepare
from mrirobust.workflows.train import TrainConfig, train

TINY = {"name": "unet-small", "chans": 4, "num_pool_layers": 2}
SIZE = {"num_coils": 4, "shape": (48, 48)}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ttt")
    synthesize(root, [SynthConfig("knee", split=s, num_volumes=n, slices_per_volume=2, seed=i, **SIZE)
                               for i, (s, n) in enumerate((("train", 3), ("val", 1), ("test", 1)))])
    return root


@pytest.fixture(scope="module")
def checkpoint(data: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny U-net trained in distribution (knee -> knee)."""
    out = tmp_path_factory.mktemp("ckpt")
    result = train(TINY, SliceDataset(data / "knee" / "train"), SliceDataset(data / "knee" / "val"), out,
                   TrainConfig(epochs=4, batch_size=2, progress=False, center_fraction=0.16, lr=3e-3))
    return str(result.best)


def measured(data: Path, index: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    sample = SliceDataset(data / "knee" / "test")[index]
    mask = MaskSpec("random", (0.16,), (4,)).draw(tuple(sample.kspace.shape[-2:]), seed=(1, 2, index))
    meta = {"target_shape": tuple(sample.target.shape[-2:])}
    return sample.kspace[None] * mask, mask, sample.target[None], meta


def ttt(checkpoint: str, **settings) -> object:
    return build({"name": "ttt", "base": {**TINY, "checkpoint": checkpoint}, **settings})


def test_split_is_a_seeded_partition_that_keeps_the_centre() -> None:
    mask = MaskSpec("random", (0.16,), (4,)).draw((1, 64), seed=(3,)).reshape(1, 1, 1, 64)
    fit, held = holdout_split(mask, 0.5, seed=7)
    assert torch.equal(fit | held, mask) and not (fit & held).any()
    centre = (torch.arange(64) >= 32 - 5) & (torch.arange(64) < 32 + 5)  # 0.16 * 64 = 10 columns
    assert fit[..., centre].all() and held.any()  # the centre band always fits
    assert int(held.sum()) == round(0.5 * int((mask[..., ~centre]).sum()))
    again, _ = holdout_split(mask, 0.5, seed=7)
    other, _ = holdout_split(mask, 0.5, seed=8)
    assert torch.equal(again, fit) and not torch.equal(other, fit)


def test_self_supervised_loss_decreases(data: Path, checkpoint: str) -> None:
    kspace, mask, _, meta = measured(data)
    method = ttt(checkpoint, iters=15, patience=15, lr=1e-3)
    _, losses = method.fine_tune(kspace, mask.reshape(1, 1, 1, -1), **meta)
    assert len(losses) == 16 and losses[-1, 0] < 0.9 * losses[0, 0]  # the fit loss falls


def test_no_shift_keeps_ssim_and_is_deterministic_and_leaves_the_base(data: Path, checkpoint: str) -> None:
    kspace, mask, target, meta = measured(data, 1)
    base = build({**TINY, "checkpoint": checkpoint})
    method = ttt(checkpoint, iters=20, lr=1e-3, patience=5)
    before = {k: v.clone() for k, v in method.built.model.state_dict().items()}
    with torch.no_grad():
        plain = base.reconstruct(kspace, mask, **meta)
    adapted = method.reconstruct(kspace, mask, **meta)
    crop = tuple(target.shape[-2:])
    maximum = target.amax()
    score = [float(ssim(target, x[..., :crop[0], :crop[1]], data_range=maximum).mean()) for x in (plain, adapted)]
    assert score[1] >= score[0] - 0.01
    assert torch.equal(adapted, method.reconstruct(kspace, mask, **meta))  # seeded: bit for bit
    after = method.built.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert method.config()["base"] == {**TINY, "checkpoint": checkpoint}


def test_no_iterations_is_the_base(data: Path, checkpoint: str) -> None:
    kspace, mask, _, meta = measured(data)
    base = build({**TINY, "checkpoint": checkpoint})
    with torch.no_grad():
        assert torch.allclose(ttt(checkpoint, iters=0).reconstruct(kspace, mask, **meta),
                              base.reconstruct(kspace, mask, **meta))


def test_varnet_uses_its_own_kspace_estimate(data: Path, tmp_path: Path) -> None:
    kspace, mask, _, meta = measured(data)
    config = {"name": "varnet-small", "num_cascades": 1, "chans": 4, "pools": 2, "sens_chans": 2, "sens_pools": 1}
    torch.save(build(config).model.state_dict(), tmp_path / "v.ckpt")
    method = build({"name": "ttt", "base": {**config, "checkpoint": str(tmp_path / "v.ckpt")}, "iters": 2})
    _, losses = method.fine_tune(kspace, mask.reshape(1, 1, 1, -1), **meta)
    assert torch.isfinite(losses).all() and method.reconstruct(kspace, mask, **meta).shape == (1, *kspace.shape[-2:])


def test_describe_reads_traits_without_a_checkpoint() -> None:
    info = describe({"name": "ttt", "base": TINY, "iters": 5})
    assert (info.family, info.differentiable, info.optimisation_based, info.trainable) == ("ttt", False, True, False)
    assert info.settings["base"] == TINY and info.config()["iters"] == 5


@pytest.mark.parametrize(("config", "field"), [
    ({"name": "ttt", "base": TINY}, "base.checkpoint"),
    ({"name": "ttt", "base": {"name": "l1"}, "iters": 1}, "base"),
    ({"name": "ttt", "base": {"name": "nope"}}, "base.method"),
    ({"name": "ttt", "base": TINY, "holdout": 1.5}, "holdout"),
    ({"name": "ttt", "base": TINY, "lr": 0}, "lr"),
    ({"name": "ttt"}, "base"),
])
def test_bad_configs_are_one_line_naming_the_field(config: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(config)
    assert caught.value.field == field and "\n" not in str(caught.value)


def test_a_study_resolves_a_base_label(tmp_path: Path) -> None:
    (tmp_path / "knee").mkdir()
    raw = {"data": {"knee": str(tmp_path / "knee")},
           "methods": {"unet-ttt": {"name": "ttt", "base": "unet", "iters": 3},
                       "unet": {**TINY, "train": {"data": "knee", "epochs": 1}}},
           "experiments": {"recon": {"data": "knee", "methods": ["unet", "unet-ttt"]}}}
    study = validate(raw)
    entry = study.methods["unet-ttt"]
    assert entry.base == "unet" and entry.config["base"] == TINY and entry.train == study.methods["unet"].train
    for base, field in (("nope", "methods.unet-ttt.base"), ("unet-ttt", "methods.unet-ttt.base")):
        bad = {**raw, "methods": {**raw["methods"], "unet-ttt": {"name": "ttt", "base": base}}}
        with pytest.raises(ConfigError) as caught:
            validate(bad)
        assert caught.value.field.startswith(field) and "\n" not in str(caught.value)
    prepare_jobs, experiments = plan(study, tmp_path / "out")
    assert [job.name for job in prepare_jobs] == ["unet"] and set(experiments[0].uses) == {"unet", "unet-ttt"}
    job = with_prepared(experiments[0], {"unet": {**TINY, "checkpoint": "x.ckpt"}})
    assert job.payload["methods"]["unet-ttt"].config["base"] == {**TINY, "checkpoint": "x.ckpt"}
    # A shift remedy trains its standard per domain itself: the base of its ttt remedy is waited for,
    # not filled in (the demo's ttt-anatomy-shift once got the standard's checkpoint and refused it).
    (tmp_path / "brain").mkdir()
    shift = {**raw, "data": {**raw["data"], "brain": str(tmp_path / "brain")},
             "experiments": {"gap": {"kind": "remedy", "against": "shift", "standard": "unet",
                                     "remedies": ["unet-ttt"], "source": "knee", "target": "brain"}}}
    _, (gap,) = plan(validate(shift), tmp_path / "out2")
    assert set(gap.uses) == {"unet", "unet-ttt"}
    job = with_prepared(gap, {"unet": {**TINY, "checkpoint": "x.ckpt"}})
    assert "checkpoint" not in job.payload["methods"]["unet"].config
    assert job.payload["methods"]["unet-ttt"].config["base"] == {**TINY, "checkpoint": "x.ckpt"}


def test_prepare_trains_the_base_once_for_the_wrapper(data: Path, checkpoint: str, tmp_path: Path) -> None:
    settings = PrepareSettings(tmp_path, TrainConfig(epochs=1, batch_size=2, center_fraction=0.16), MaskSpec(
        "random", (0.16,), (4,)))
    domain = Domain(data / "knee", name="knee")
    wrapper = {"name": "ttt", "base": TINY, "iters": 2}
    assert needs_preparing(wrapper) and not needs_preparing({**wrapper, "base": {**TINY, "checkpoint": checkpoint}})
    plain = prepare(Model("unet", "U-net", TINY), domain, settings)
    adapted = prepare(Model("unet-ttt", "U-net", wrapper), domain, settings)
    assert adapted.config == {**wrapper, "base": plain.config} and len(list(tmp_path.glob("*/done.yaml"))) == 1
    build(adapted.config)


def test_the_fine_tuned_surrogate_runs_each_slice_through_its_own_network_and_gives_ttts_image(
        data: Path, checkpoint: str) -> None:
    kspace, mask, _, meta = measured(data)
    kspace = torch.cat([kspace, measured(data, 1)[0]])  # two slices: two fine-tuned networks
    method = ttt(checkpoint, iters=3, lr=1e-3, surrogates=["fine-tuned"])
    (surrogate,) = method.attack_surrogates(kspace, mask, **meta)
    assert len(surrogate.modules) == 2 and surrogate.differentiable
    assert torch.equal(surrogate.reconstruct(kspace, mask, **meta), method.reconstruct(kspace, mask, **meta))


@pytest.mark.parametrize("surrogates", [("fine-tuned",), ("base",), ("fine-tuned", "base")])
def test_an_attack_on_ttt_is_pgd_on_its_surrogates_keeping_the_stronger_per_slice(
        data: Path, checkpoint: str, surrogates: tuple[str, ...]) -> None:
    kspace, mask, _, meta = measured(data)
    kspace = torch.cat([kspace, measured(data, 1)[0]])
    method, eps, scope = ttt(checkpoint, iters=3, lr=1e-3, surrogates=list(surrogates)), 0.05, Scope(seed=3)
    result = attack(method, kspace, mask, eps, {"steps": 2}, scope, **meta)
    clean = method.reconstruct(kspace, mask, **meta)
    candidates = {}  # each surrogate's perturbation, scored on TTT
    for surrogate in method.attack_surrogates(kspace, mask, **meta):
        z = pgd(surrogate, kspace, mask, eps, PgdSettings(steps=2), scope, **meta).perturbation
        perturbed = method.reconstruct(kspace + z, mask, **meta)
        candidates[surrogate.name] = (z, attack_objective(clean, perturbed, scope))
    assert result.attack == "transfer-pgd" and len(result.settings["surrogate"]) == 2
    assert torch.equal(result.clean, clean)  # computed once, exact
    for b, chosen in enumerate(result.settings["surrogate"]):
        z, objective = candidates[chosen]
        assert torch.equal(result.perturbation[b], z[b])  # the chosen surrogate's perturbation, exactly
        assert float(result.objective[b]) == pytest.approx(float(max(o[b] for _, o in candidates.values())))
    assert torch.equal(result.perturbed, method.reconstruct(kspace + result.perturbation, mask, **meta))
    budget = eps * torch.linalg.vector_norm(kspace, dim=(-3, -2, -1)) * (1 + 1e-5)
    assert (torch.linalg.vector_norm(result.perturbation, dim=(-3, -2, -1)) <= budget).all()
    assert transfer(method, kspace, mask, eps, PgdSettings(steps=2), scope, **meta).attack == "transfer-pgd"


def test_surrogates_are_checked(checkpoint: str) -> None:
    for bad in ([], ["base", "base"], ["white-box"]):
        with pytest.raises(ConfigError, match="surrogates"):
            ttt(checkpoint, surrogates=bad)
