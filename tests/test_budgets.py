"""Exact budgets: every perturbation the attacks return satisfies ||z|| <= eps ||ref|| strictly (no
tolerance), as computed in float64 and in z's own dtype, zero off the mask.

A seeded property test: random shapes, dtypes (complex64, complex128), masks (columns, 2-D,
per-slice batches), magnitudes (1e-6 .. 1e6), budgets and references, for the projection, the
random perturbation and every attack (PGD, PGD-Adam, two-step, the analytic worst case). Runs on
CUDA too when present.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from mrirobust.methods.base import Reconstructor
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import fft2c, ifft2c
from mrirobust.robustness.attack_settings import PgdSettings, Scope, TwoStepSettings
from mrirobust.robustness.attacks import pgd, project, random_perturbation, two_step, worst_case_linear

CASES = 24  # per attack test (each runs five attacks)
PROJECTION_CASES = 120
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@dataclass
class Case:
    y: torch.Tensor  # measured k-space (B, C, H, W), zero off the mask
    mask: torch.Tensor
    eps: float
    reference: torch.Tensor | None


def _case(seed: int, device: str) -> Case:
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    b, c, h, w = rng.randint(1, 3), rng.randint(1, 4), rng.randint(4, 20), rng.randint(4, 20)
    dtype = rng.choice((torch.complex64, torch.complex128))
    kind = rng.choice(("column", "2-D", "batched"))
    shape = {"column": (w,), "2-D": (h, w), "batched": (b, 1, 1, w)}[kind]
    mask = torch.rand(shape, generator=generator) < rng.uniform(0.2, 0.9)
    mask[..., w // 2] = True  # never empty
    scale = 10 ** rng.uniform(-6, 6)
    full = torch.randn((b, c, h, w), generator=generator, dtype=dtype) * scale
    eps = rng.choice((0.0, 1e-4, 0.01, 0.05, 0.08, 0.3, 1.0, rng.uniform(0, 0.2)))
    reference = full if rng.random() < 0.4 else None
    return Case((full * mask).to(device), mask.to(device), eps, None if reference is None else reference.to(device))


def _norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t, dim=(-3, -2, -1))


def _assert_within(z: torch.Tensor, case: Case) -> None:
    ref = case.y if case.reference is None else case.reference
    assert z.dtype == case.y.dtype and z.shape == case.y.shape
    assert (_norms(z.to(torch.complex128)) <= case.eps * _norms(ref.to(torch.complex128))).all()
    assert (_norms(z) <= case.eps * _norms(ref)).all()  # as the output dtype computes it
    assert (z[(~case.mask).expand(z.shape)] == 0).all()


@dataclass
class LeastSquares(Reconstructor):
    """A tiny optimisation-based plug-in (coil images fitted to the data) for the two-step attack."""

    family = "custom"
    differentiable = True
    optimisation_based = True

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        return rss(ifft2c(kspace * mask))

    def attack_variables(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> list[torch.Tensor]:
        return [ifft2c(kspace * mask).detach().requires_grad_()]

    def attack_image(self, variables: list[torch.Tensor]) -> torch.Tensor:
        return rss(variables[0])

    def attack_loss(self, variables: list[torch.Tensor], kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        residual = (fft2c(variables[0]) - kspace) * mask
        return residual.abs().square().sum(dim=(1, 2, 3)) / kspace.abs().square().sum(dim=(1, 2, 3)).clamp_min(1e-30)


@pytest.mark.parametrize("device", DEVICES)
def test_projection_and_random_perturbation_are_within_the_budget(device: str) -> None:
    for seed in range(PROJECTION_CASES):
        case = _case(seed, device)
        ref = case.y if case.reference is None else case.reference
        generator = torch.Generator(device=device).manual_seed(seed)
        for spread in (1e-3, 1.0, 1e3):  # inside, around and far outside the ball
            z = torch.randn(case.y.shape, generator=generator, device=device, dtype=case.y.dtype) \
                * spread * case.eps * _norms(ref).abs().max().clamp_min(1e-30)
            _assert_within(project(z, ref, case.eps, case.mask), case)
        z = random_perturbation(case.y, case.mask, case.eps, seed=seed, reference=case.reference)
        _assert_within(z, case)
        # and on the sphere: the same norm as the budget, to within a few float32 ulps
        radius = case.eps * _norms(ref.to(torch.complex128))
        assert (_norms(z.to(torch.complex128)) >= radius * (1 - 2**-16)).all()


@pytest.mark.parametrize("device", DEVICES)
def test_every_attack_is_within_the_budget(device: str) -> None:
    for seed in range(CASES):
        case = _case(seed, device)
        meta = {"reference": case.reference, "seed": seed}
        scope = Scope(seed=seed, reference=case.reference)
        optimizer = ("l2", "adam")[seed % 2]
        _assert_within(pgd(LeastSquares(), case.y, case.mask, case.eps, PgdSettings(steps=2, optimizer=optimizer),
                           scope).perturbation, case)
        _assert_within(two_step(LeastSquares(), case.y, case.mask, case.eps,
                                TwoStepSettings(beta=0.5, steps=2, clean_iters=1), scope).perturbation, case)
        z, _ = worst_case_linear(ifft2c, case.y, case.mask, case.eps, iters=3, **meta)
        _assert_within(z, case)


def test_the_property_is_not_trivial() -> None:
    """The plain float32 scaling these functions used to do breaks the strict budget in some cases."""
    broken = 0
    for seed in range(CASES):
        case = _case(seed, "cpu")
        if case.y.dtype != torch.complex64 or case.eps == 0:
            continue
        ref = case.y if case.reference is None else case.reference
        direction = torch.randn(case.y.shape, generator=torch.Generator().manual_seed(seed), dtype=case.y.dtype)
        direction = direction * case.mask / _norms(direction * case.mask).view(-1, 1, 1, 1)
        naive = direction * (case.eps * _norms(ref)).view(-1, 1, 1, 1)
        broken += int((_norms(naive.to(torch.complex128)) > case.eps * _norms(ref.to(torch.complex128))).any()
                      or (_norms(naive) > case.eps * _norms(ref)).any())
    assert broken > 0
