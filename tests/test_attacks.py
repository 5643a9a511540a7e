"""Adversarial attacks: the constraint set, budgets, strength against the analytic worst case of a
linear reconstruction, attacks vs random perturbations of the same norm, determinism and errors.

Objectives are 1/2 ||f(y) - f(y + z)||^2 per slice; "ratio" is attack / random (mean of 2 seeds).
Run with `-s` to see the measured ratios.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from mrirobust.data.simulate import simulate_kspace
from mrirobust.data.synthetic import SynthConfig, render_volume
from mrirobust.errors import ConfigError
from mrirobust.methods.baselines import CGSense, ZeroFilled
from mrirobust.methods.base import Reconstructor
from mrirobust.methods.l1 import L1
from mrirobust.methods.unet import UnetRecon
from mrirobust.methods.untrained import ConvDecoder
from mrirobust.physics.fft import center_crop, ifft2c
from mrirobust.robustness.attack_settings import PgdSettings, Scope, TwoStepSettings
from mrirobust.robustness.attacks import (
    OptimisationAttackable, attack, pgd, project, random_attack, random_perturbation, two_step, worst_case_linear,
)

N, COILS = 32, 4
EPSILONS = (0.0, 0.01, 0.05)


@functools.cache
def _data(size: int = N) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two knee slices: under-sampled k-space (2, 4, size, size), a 3x column mask (+ centre), true maps."""
    image = render_volume(SynthConfig(anatomy="knee", shape=(size, size), slices_per_volume=2, detail=0.0), 0)[:2]
    kspace, _, maps = simulate_kspace(image, num_coils=COILS, seed=1, snr_db=30)
    mask = torch.zeros(size, dtype=torch.bool)
    mask[::3] = True
    mask[size // 2 - 3 : size // 2 + 3] = True
    return kspace * mask, mask, maps.expand(2, -1, -1, -1).contiguous()


@dataclass
class RealSense(Reconstructor):
    """A plug-in whose output is real-linear in y: Re(sum_i conj(S_i) F^H M y_i) (may be negative)."""

    maps: Any = None
    family = "custom"
    differentiable = True

    def linear(self, kspace: torch.Tensor) -> torch.Tensor:
        return (self.maps.conj() * ifft2c(kspace)).sum(dim=-3).real

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        return self.linear(kspace * mask)


class NoTraits(Reconstructor):
    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        return kspace.abs().sum(dim=1)


def _norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)))


def _random_mean(method: Any, y: torch.Tensor, mask: torch.Tensor, eps: float, **meta: Any) -> torch.Tensor:
    found = [random_attack(method, y, mask, eps, Scope(seed=s), **meta).objective for s in (1, 2)]
    return torch.stack(found).mean(dim=0)


# --- the constraint set -----------------------------------------------------------------------
def test_projection_is_exact() -> None:
    y, mask, _ = _data()
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(y.shape, generator=generator, dtype=y.dtype) * torch.tensor([0.5, 0.01]).view(-1, 1, 1, 1) * 3
    masked = z * mask
    for eps in (0.0, 0.01, 0.05, 1.0):
        radius = eps * _norms(y)
        p = project(z, y, eps, mask)
        assert (_norms(p) <= radius * (1 + 1e-6)).all()
        assert (p[..., ~mask] == 0).all()
        torch.testing.assert_close(project(p, y, eps, mask), p, rtol=1e-6, atol=0)  # idempotent
        outside = _norms(masked) > radius
        # outside the ball: scaled onto the sphere along the masked z
        factor = radius / _norms(masked)
        expected = torch.where(outside.view(-1, 1, 1, 1), masked * factor.view(-1, 1, 1, 1), masked)
        torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(_norms(p)[outside], radius[outside], rtol=1e-5, atol=0)
    inside = masked * (0.5 * 0.05 * _norms(y) / _norms(masked)).view(-1, 1, 1, 1)
    assert torch.equal(project(inside, y, 0.05, mask), inside)
    assert (_norms(z * mask) > 0.05 * _norms(y)).any()  # the test exercised the scaling branch


def test_random_perturbation_norm_support_and_determinism() -> None:
    y, mask, _ = _data()
    full = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    for eps in EPSILONS:
        for reference in (None, full):
            z = random_perturbation(y, mask, eps, seed=4, reference=reference)
            ref = y if reference is None else reference
            torch.testing.assert_close(_norms(z), eps * _norms(ref), rtol=1e-5, atol=0)
            assert (z[..., ~mask] == 0).all()
    assert torch.equal(random_perturbation(y, mask, 0.05, seed=4), random_perturbation(y, mask, 0.05, seed=4))
    assert not torch.equal(random_perturbation(y, mask, 0.05, seed=4), random_perturbation(y, mask, 0.05, seed=5))


# --- every attack respects the budget -----------------------------------------------------------
def _methods() -> list[tuple[str, Any, dict, dict]]:
    """(name, method, attack settings, the method's meta)."""
    _, _, maps = _data()
    tiny_decoder = ConvDecoder(layers=3, channels=8, input_size=(4, 4), iters=4)
    return [
        ("zero-filled", ZeroFilled(), {"steps": 3}, {}),
        ("sense", CGSense(iters=5), {"steps": 3}, {"maps": maps}),
        ("l1", L1(lam=0.01, levels=2, iters=5), {"steps": 3}, {"maps": maps}),
        ("convdecoder-small", tiny_decoder, {"steps": 3, "clean_iters": 2}, {}),
        ("plug-in", RealSense(maps=maps), {"steps": 3, "restarts": 2}, {}),
    ]


@pytest.mark.parametrize("index", range(5), ids=[m[0] for m in _methods()])
def test_budget_support_and_objective_of_every_attack(index: int) -> None:
    y, mask, _ = _data()
    name, method, settings, meta = _methods()[index]
    for eps in EPSILONS:
        result = attack(method, y, mask, eps, settings, **meta)
        assert result.attack == ("two-step" if name == "convdecoder-small" else "pgd")
        assert result.perturbation.shape == y.shape and result.perturbation.dtype == y.dtype
        assert (_norms(result.perturbation) <= eps * _norms(y) * (1 + 1e-5)).all(), name
        assert (result.perturbation[..., ~mask] == 0).all()
        assert result.clean.shape == result.perturbed.shape == (2, N, N)
        torch.testing.assert_close(result.objective, 0.5 * (result.clean - result.perturbed).square().sum(dim=(1, 2)))
        if eps == 0:
            assert (result.objective == 0).all()
        else:
            assert (result.objective > 0).all()


# --- strength ---------------------------------------------------------------------------------
def test_worst_case_linear_matches_the_top_singular_value() -> None:
    """Power iteration against the SVD of the explicit Jacobian (real coordinates, masked columns)."""
    y, mask, maps = _data(8)
    method = RealSense(maps=maps)
    z, objective = worst_case_linear(method.linear, y, mask, 0.05, iters=200)
    columns = mask.expand(y.shape[1:]).flatten()
    for b in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: RealSense(maps=maps[b : b + 1]).linear(
            torch.view_as_complex(v.reshape(1, *y.shape[1:], 2))).flatten(), torch.zeros(y[0].numel() * 2))
        jac = jac.reshape(jac.shape[0], -1, 2)[:, columns].flatten(1)
        sigma = torch.linalg.matrix_norm(jac.double(), ord=2)
        expected = 0.5 * (sigma * 0.05 * _norms(y[b : b + 1])[0]) ** 2
        torch.testing.assert_close(objective[b].double(), expected, rtol=1e-3, atol=0)
    torch.testing.assert_close(_norms(z), 0.05 * _norms(y), rtol=1e-5, atol=0)


def test_pgd_with_crop_reaches_the_worst_case_of_the_scored_region() -> None:
    """With `crop`, PGD maximises the change inside the centre region only: it reaches the analytic
    worst case of the cropped linear map, and beats an attack that spends budget outside it."""
    y, mask, maps = _data()
    method = RealSense(maps=maps)
    crop = (12, 12)
    _, best = worst_case_linear(lambda v: center_crop(method.linear(v), crop), y, mask, 0.05)
    aimed = pgd(method, y, mask, 0.05, PgdSettings(steps=40), Scope(crop=crop))
    unaimed = pgd(method, y, mask, 0.05, PgdSettings(steps=40))
    inside = 0.5 * (center_crop(unaimed.perturbed - unaimed.clean, crop)).square().flatten(1).sum(1)
    assert (aimed.objective >= 0.98 * best).all() and (aimed.objective <= best * (1 + 1e-4)).all()
    assert (aimed.objective > inside).all()
    assert aimed.settings["crop"] == crop


def test_pgd_reaches_the_analytic_worst_case_of_a_linear_method() -> None:
    y, mask, maps = _data()
    method = RealSense(maps=maps)
    _, best = worst_case_linear(method.linear, y, mask, 0.05)
    found = pgd(method, y, mask, 0.05, PgdSettings(steps=40)).objective
    adam = pgd(method, y, mask, 0.05, PgdSettings(steps=40, optimizer="adam")).objective
    random = _random_mean(method, y, mask, 0.05)
    print(f"\nlinear: pgd/analytic {(found / best).tolist()}, pgd-adam/analytic {(adam / best).tolist()}, "
          f"random/analytic {(random / best).tolist()}")
    assert (found >= 0.98 * best).all() and (found <= best * (1 + 1e-4)).all()
    assert (adam >= 0.5 * best).all()  # Adam's sign-like steps stall short of the l2 optimum
    assert (random < 0.2 * best).all()


@pytest.mark.parametrize("name", ["zero-filled", "sense", "l1", "unet"])
def test_pgd_beats_random_perturbations(name: str) -> None:
    y, mask, maps = _data()
    torch.manual_seed(0)
    method, meta = {
        "zero-filled": (ZeroFilled(), {}),
        "sense": (CGSense(iters=10), {"maps": maps}),
        "l1": (L1(lam=0.01, levels=2, iters=20), {"maps": maps}),
        "unet": (UnetRecon(chans=4, num_pool_layers=1), {}),
    }[name]
    found = pgd(method, y, mask, 0.05, PgdSettings(steps=10), **meta).objective
    random = _random_mean(method, y, mask, 0.05, **meta)
    print(f"\n{name}: pgd/random {(found / random).tolist()}")
    assert (found > 3 * random).all()


@pytest.mark.parametrize("name", ["l1", "convdecoder"])
def test_two_step_beats_random_perturbations(name: str) -> None:
    y, mask, maps = _data()
    method, meta, settings = {
        "l1": (L1(lam=0.01, levels=2, iters=30), {"maps": maps}, {"steps": 60, "clean_iters": 20}),
        "convdecoder": (ConvDecoder(layers=4, channels=16, input_size=(6, 4), iters=60), {},
                        {"steps": 60, "clean_iters": 60}),
    }[name]
    assert isinstance(method, OptimisationAttackable)
    found = two_step(method, y, mask, 0.05, TwoStepSettings(**settings), **meta)
    random = _random_mean(method, y, mask, 0.05, **meta)
    print(f"\n{name}: two-step/random {(found.objective / random).tolist()}")
    assert found.attack == "two-step" and (_norms(found.perturbation) <= 0.05 * _norms(y) * (1 + 1e-5)).all()
    assert found.objective.mean() > random.mean()


def test_l1_attack_protocol_starts_at_its_solution() -> None:
    y, mask, maps = _data()
    method = L1(lam=0.01, levels=2, iters=30)
    variables = method.attack_variables(y, mask, maps=maps)
    assert [v.requires_grad for v in variables] == [True, False, False, False]
    torch.testing.assert_close(method.attack_image(variables), method.reconstruct(y, mask, maps=maps))
    loss = method.attack_loss(variables, y, mask)
    reference = method.objective(method.solve(y, mask, maps), y, mask, maps) / (y.abs() ** 2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(loss, reference)


def test_untrained_attack_protocol_matches_its_fit() -> None:
    y, mask, _ = _data()
    method = ConvDecoder(layers=4, channels=16, input_size=(6, 4))
    variables = method.attack_variables(y, mask)
    state = method.init(y, mask)
    assert sum(v.requires_grad for v in variables) == len(state.params)
    torch.testing.assert_close(method.attack_loss(variables, y, mask), method.data_loss(state, y, mask))
    assert method.attack_image(variables).shape == (2, N, N)


# --- determinism and errors -------------------------------------------------------------------
def test_attacks_are_deterministic_under_a_seed() -> None:
    y, mask, maps = _data()
    method = RealSense(maps=maps)
    first, again = (pgd(method, y, mask, 0.05, PgdSettings(steps=3), Scope(seed=7)).perturbation for _ in range(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, pgd(method, y, mask, 0.05, PgdSettings(steps=3), Scope(seed=8)).perturbation)
    l1 = L1(lam=0.01, levels=2, iters=5)
    first, again = (two_step(l1, y, mask, 0.05, TwoStepSettings(steps=3, clean_iters=2), maps=maps).perturbation
                    for _ in range(2))
    assert torch.equal(first, again)


def test_errors_name_the_field_and_the_method() -> None:
    y, mask, maps = _data()
    for bad in (-0.01, "0.05", float("nan"), True):
        with pytest.raises(ConfigError) as error:
            attack(ZeroFilled(), y, mask, bad)
        assert error.value.field == "eps"
        with pytest.raises(ConfigError, match="eps"):
            project(y, y, bad, mask)
    with pytest.raises(ConfigError, match="'notraits'.*differentiable=False, optimisation_based=False"):
        method = NoTraits()
        method.name = "notraits"
        attack(method, y, mask, 0.05)
    with pytest.raises(ConfigError, match="two-step"):
        pgd(ConvDecoder(), y, mask, 0.05)
    with pytest.raises(ConfigError, match="attack_variables"):
        two_step(ZeroFilled(), y, mask, 0.05)
    with pytest.raises(ConfigError, match="optimizer"):
        pgd(ZeroFilled(), y, mask, 0.05, PgdSettings(optimizer="sgd"))
    with pytest.raises(ConfigError, match="objective"):
        Scope(objective="psnr")
    with pytest.raises(ConfigError, match="not an attack setting"):
        attack(ZeroFilled(), y, mask, 0.05, {"stepz": 3})


def test_objectives_on_the_crop_against_the_metrics() -> None:
    """mse: 1/2 ||.||^2; ssim: 1 - the fastMRI SSIM (scikit-image reference) with the clean image's
    maximum as data range; both: the relative MSE plus that; zero for no change; on the crop only."""
    from mrirobust.metrics import ssim_skimage
    from mrirobust.robustness.attack_settings import attack_objective

    generator = torch.Generator().manual_seed(0)
    clean = torch.rand((2, 20, 20), generator=generator, dtype=torch.float64)
    image = clean + 0.1 * torch.rand((2, 20, 20), generator=generator, dtype=torch.float64)
    crop = (12, 12)
    inner, changed = center_crop(clean, crop), center_crop(image, crop)
    mse = 0.5 * (changed - inner).square().sum(dim=(1, 2))
    reference = torch.tensor([1 - float(ssim_skimage(inner[i].numpy(), changed[i].numpy(),
                                                     data_range=float(inner[i].max())).reshape(-1)[0])
                              for i in range(2)], dtype=torch.float64)
    torch.testing.assert_close(attack_objective(clean, image, Scope(crop=crop)), mse)
    torch.testing.assert_close(attack_objective(clean, image, Scope(crop=crop, objective="ssim")), reference)
    both = attack_objective(clean, image, Scope(crop=crop, objective="both"))
    torch.testing.assert_close(both, mse / (0.5 * inner.square().sum(dim=(1, 2))) + reference)
    for objective in ("mse", "ssim", "both"):
        assert (attack_objective(clean, clean, Scope(objective=objective)).abs() < 1e-12).all()
    outside = clean.clone()
    outside[:, :2] += 1.0  # a change outside the crop is not counted
    assert (attack_objective(clean, outside, Scope(crop=crop, objective="both")).abs() < 1e-12).all()


def test_the_attack_experiments_settings_are_the_attacks_settings() -> None:
    """One source of truth: every AttackSettings field is a field of the attacks' dataclasses."""
    from dataclasses import fields

    from mrirobust.experiments.attack import AttackSettings

    ours = {f.name for f in fields(AttackSettings)}
    theirs = {f.name for kind in (PgdSettings, TwoStepSettings) for f in fields(kind)} | {"objective"}
    assert ours == theirs
    given = AttackSettings(steps=7, beta=0.5, objective="ssim")
    assert given.given() == {"steps": 7, "beta": 0.5} and given.scope(3, None, (8, 8)).objective == "ssim"
