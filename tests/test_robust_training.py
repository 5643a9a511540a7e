"""Robustness training (jitter, adversarial): off reproduces standard training bit for bit, the
noise has the stated norm, the PGD perturbation keeps its budget exactly and raises the loss,
resume is exact, old checkpoints and cache keys stay valid, bad values are one-line errors."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from mrirobust.errors import ConfigError
from mrirobust.hashing import digest
from mrirobust.physics.l2ball import ball_radius, measurement_noise, norms
from mrirobust.physics.masks import MaskSpec
from mrirobust.workflows.train import (
    OPTIONAL_OFF,
    TrainConfig,
    adversarial_perturbation,
    run_identity,
    train,
)
from tests.test_train import TINY, TinyTrained, _weights, config, data, root  # noqa: F401 (fixtures)

NEW_FIELDS = ("jitter", "adversarial", "adversarial_steps", "augment")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_zero_jitter_and_zero_adversarial_reproduce_standard_training_bit_for_bit(data, tmp_path):  # noqa: F811
    train_set, _ = data
    runs = {"standard": config(epochs=1), "jitter0": config(epochs=1, jitter=0.0),
            "adversarial0": config(epochs=1, adversarial=0.0, adversarial_steps=7),
            "jitter": config(epochs=1, jitter=0.05), "adversarial": config(epochs=1, adversarial=0.05)}
    weights = {name: _weights(train(TINY, train_set, None, tmp_path / name, c).last) for name, c in runs.items()}
    assert _same(weights["standard"], weights["jitter0"]) and _same(weights["standard"], weights["adversarial0"])
    assert not _same(weights["standard"], weights["jitter"])  # the settings do act when on
    assert not _same(weights["standard"], weights["adversarial"])


def test_settings_off_keep_identities_of_runs_from_before_they_existed():
    before = {k: v for k, v in asdict(TrainConfig(lr=0.01)).items() if k not in NEW_FIELDS}
    assert TrainConfig(lr=0.01).identity() == before == run_identity(before)
    assert digest(TrainConfig(lr=0.01, adversarial_steps=9).identity()) == digest(before)  # steps matter only when on
    on = TrainConfig(jitter=0.1, adversarial=0.02).identity()
    assert on["jitter"] == 0.1 and on["adversarial"] == 0.02 and on["adversarial_steps"] == 3
    assert set(OPTIONAL_OFF) | {"adversarial_steps"} == set(NEW_FIELDS)


def test_measurement_noise_has_norm_sigma_times_y_on_the_measured_locations():
    generator = torch.Generator().manual_seed(0)
    kspace = torch.randn(500, 3, 8, 20, dtype=torch.complex64, generator=generator)
    mask = torch.rand(500, 1, 1, 20, generator=generator) < 0.3
    mask[:, ..., 0] = True
    sigma = 0.07
    z = measurement_noise(kspace, mask, sigma, generator)
    assert not z.masked_select(~mask.expand(z.shape)).any()
    y = kspace * mask
    ratio = (norms(z) / (sigma * norms(y))).double() ** 2  # E = 1, each a chi^2_(2m) / (2m)
    m = mask.expand(z.shape).flatten(1).sum(1).double()
    se = (1 / m).mean().sqrt() / 500**0.5  # std of the mean of chi^2_(2m) / (2m) is 1 / sqrt(m n)
    assert abs(float(ratio.mean()) - 1) < 4 * float(se)
    other = measurement_noise(kspace, mask, sigma, torch.Generator().manual_seed(0))
    assert torch.equal(measurement_noise(kspace, mask, sigma, torch.Generator().manual_seed(0)), other)


def test_jittered_samples_are_seeded_per_seed_epoch_slice(data):  # noqa: F811
    from mrirobust.workflows.train import _MaskedSlices

    train_set, _ = data
    jittered, clean = _MaskedSlices(train_set, [0, 1], config(jitter=0.1)), _MaskedSlices(train_set, [0, 1], config())
    first, again, plain = jittered[0], jittered[0], clean[0]
    assert torch.equal(first.kspace, again.kspace) and torch.equal(first.mask, plain.mask)
    noise = first.kspace - plain.kspace
    assert not noise[..., ~plain.mask].any() and noise.abs().sum() > 0
    assert 0.08 < float(noise.norm() / plain.kspace.norm()) < 0.12
    jittered.epoch = 1
    clean.epoch = 1
    assert not torch.equal(jittered[0].kspace - clean[0].kspace, noise)


def test_adversarial_perturbation_keeps_its_budget_exactly_and_raises_the_loss(data):  # noqa: F811
    train_set, _ = data
    torch.manual_seed(0)
    method = TinyTrained()
    samples = [train_set[i] for i in range(4)]
    mask = torch.stack([MaskSpec("random", (0.16,), (4,)).draw(tuple(s.shape), seed=i) for i, s in enumerate(samples)])
    mask = mask[:, None, None, :]
    kspace = torch.stack([s.kspace for s in samples]) * mask
    target = torch.stack([s.target for s in samples])

    def loss_of(k: torch.Tensor) -> torch.Tensor:
        return (method.reconstruct_with(method.model, k, mask)[..., :target.shape[-2], :target.shape[-1]]
                - target).abs().mean()

    for eps in (0.02, 0.1):
        z = adversarial_perturbation(loss_of, kspace, mask, eps, 3)
        assert not z.masked_select(~mask.expand(z.shape)).any()
        assert (norms(z) <= ball_radius(kspace, None, eps)).all()
        assert (norms(z.to(torch.complex128)) <= eps * norms(kspace.to(torch.complex128))).all()
        assert (norms(z) > 0.99 * ball_radius(kspace, None, eps)).all()  # one-radius steps end on the sphere
        with torch.no_grad():
            assert float(loss_of(kspace + z)) > float(loss_of(kspace))


def test_resumed_jittered_adversarial_run_gives_the_weights_of_an_uninterrupted_one(data, tmp_path):  # noqa: F811
    train_set, val_set = data
    settings = {"jitter": 0.05, "adversarial": 0.03, "adversarial_steps": 2}
    train(TINY, train_set, val_set, tmp_path / "straight", config(epochs=3, **settings))
    train(TINY, train_set, val_set, tmp_path / "resumed", config(epochs=2, **settings))
    result = train(TINY, train_set, val_set, tmp_path / "resumed", config(epochs=3, **settings))
    assert _same(_weights(tmp_path / "straight" / "last.ckpt"), _weights(result.last))
    with pytest.raises(ConfigError, match=r"^jitter: .*trained with jitter=0\.05, not 0\.0;"):
        train(TINY, train_set, val_set, tmp_path / "resumed", config(epochs=4, adversarial=0.03, adversarial_steps=2))


def test_checkpoint_from_before_the_settings_resumes(data, tmp_path):  # noqa: F811
    train_set, _ = data
    result = train(TINY, train_set, None, tmp_path, config(epochs=1))
    state = torch.load(result.last, weights_only=True)
    state["train_config"] = {k: v for k, v in state["train_config"].items() if k not in NEW_FIELDS}
    torch.save(state, result.last)
    assert [h["epoch"] for h in train(TINY, train_set, None, tmp_path, config(epochs=2)).history] == [1, 2]
    with pytest.raises(ConfigError, match=r"^adversarial: .*trained with adversarial=0\.0, not 0\.1;"):
        train(TINY, train_set, None, tmp_path, config(epochs=3, adversarial=0.1))


@pytest.mark.parametrize("field, value", [
    ("jitter", -0.1), ("jitter", float("nan")), ("jitter", float("inf")), ("jitter", "0.1"),
    ("adversarial", -1.0), ("adversarial", float("nan")), ("adversarial_steps", 0), ("adversarial_steps", 2.5),
])
def test_bad_robustness_settings_name_the_field(field, value):
    with pytest.raises(ConfigError) as error:
        TrainConfig(**{field: value})
    assert error.value.field == field and "\n" not in str(error.value)


def test_cli_and_study_config_take_the_settings(root, tmp_path, capsys):  # noqa: F811
    from mrirobust.cli import main
    from mrirobust.study.config import _method

    out = tmp_path / "ckpt"
    assert main(["train", TINY, str(root / "knee" / "train"), "--out", str(out), "--adversarial", "-0.5"]) == 2
    assert capsys.readouterr().err.strip().startswith("mrirobust: error: adversarial: ") and not out.exists()
    assert main(["train", TINY, str(root / "knee" / "train"), "--out", str(out), "--epochs", "1", "--jitter", "0.05",
                 "--adversarial", "0.02", "--adversarial-steps", "2", "--center-fraction", "0.16"]) == 0
    saved = torch.load(out / "last.ckpt", weights_only=True)["train_config"]
    assert (saved["jitter"], saved["adversarial"], saved["adversarial_steps"]) == (0.05, 0.02, 2)
    entry = _method("unet-jitter", {"name": "unet-small", "train": {"data": "knee", "epochs": 2, "jitter": 0.05}},
                    {"knee": None}, {})
    assert entry.train == {"data": "knee", "epochs": 2, "jitter": 0.05}
    with pytest.raises(ConfigError, match=r"^methods\.unet-adv\.train: adversarial_steps: "):
        _method("unet-adv", {"name": "unet-small", "train": {"data": "knee", "adversarial_steps": 0}}, {"knee": None}, {})
