"""Worst cases of physical perturbations, their relative k-space change, and the sampling check.

`worst_case` searches a perturbation's unit-box params (physics.perturbations) at a fixed
severity for the one that hurts a method most on a set of slices: a seeded random search (the
first trial is the spec itself, trial i > 0 the spec with seed spec.seed + i and drawn params, so
the worst case is at least as bad as every swept seed it covers), then a (1+1) local refinement of the worst trial's
params, accepting only worse points. `relative_change` gives ||dy|| / ||y|| of the measured data,
the budget the l2 attack is measured in, and `matched_attack` runs that attack at the same
budget. `acceleration_sweep` and `more_samples_worse` are Antun et al.'s check that quality does
not fall as more samples are taken.

Pure functions: no files, no printing; scores are the fastMRI-style metrics on the target crop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mrirobust.errors import ConfigError
from mrirobust.methods.base import checked_reconstruct
from mrirobust.metrics import VOLUME_MAX, bootstrap_ci, score
from mrirobust.physics.fft import center_crop
from mrirobust.physics.masks import Columns, Seed, check_mask
from mrirobust.physics.perturbations import (
    CoilFault,
    Perturbation,
    SamplingShift,
    draw_params,
    perturb,
    perturb_mask,
    sampling_mask,
)
from mrirobust.robustness.attack_settings import Scope
from mrirobust.robustness.attacks import apply_perturbation, attack

HIGHER_IS_BETTER = {"ssim": True, "psnr": True, "nmse": False, "mse": False}


@dataclass(frozen=True)
class Case:
    """The slices to perturb and score: fully sampled k-space (B, C, H, W), the mask the method
    is run with, targets (B, h, w), coil maps (for motion), the SSIM data range (None: the
    batch's target maximum) and the acquired columns (a new mask never samples zero padding)."""

    kspace: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    maps: torch.Tensor | None = None
    max_value: torch.Tensor | float | None = None
    columns: Columns = None


def _check_metric(metric: str) -> str:
    if metric not in HIGHER_IS_BETTER:
        raise ConfigError("metric", f"{metric!r}: choose one of {', '.join(HIGHER_IS_BETTER)}")
    return metric


def _pick(scores: dict[str, torch.Tensor], metric: str) -> torch.Tensor:
    return next(value for key, value in scores.items() if key.split("[")[0] == metric)


@torch.no_grad()
def perturbed_scores(method: Any, case: Case, spec: Perturbation, *, ssim_variant: str = VOLUME_MAX,
                     mask_seed: Seed | None = None, **meta: Any) -> dict[str, torch.Tensor]:
    """Per-slice metrics (metrics.score) of `method` on the perturbed, masked k-space."""
    kspace = perturb(case.kspace, spec, maps=case.maps, mask=case.mask)
    mask = perturb_mask(case.mask, spec, shape=tuple(kspace.shape[-2:]), seed=mask_seed, columns=case.columns)
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    crop = tuple(case.target.shape[-2:])
    image = checked_reconstruct(method, kspace * mask, mask, target_shape=crop, **meta)
    return score(case.target, center_crop(image, crop), case.max_value, ssim_variant=ssim_variant)


def _measured_change(kspace: torch.Tensor, spec: Perturbation, maps: torch.Tensor | None,
                     mask: torch.Tensor) -> torch.Tensor:
    """M' y' - M y: the change of the measured data (removed coils count as measured zeros)."""
    if isinstance(spec, CoilFault) and spec.mode == "fewer":
        spec = dataclasses.replace(spec, mode="drop")
    perturbed = perturb(kspace, spec, maps=maps, mask=mask)
    new_mask = check_mask(perturb_mask(mask, spec, shape=tuple(kspace.shape[-2:])), kspace.shape).to(kspace.device)
    return perturbed * new_mask - kspace * mask


@torch.no_grad()
def relative_change(kspace: torch.Tensor, spec: Perturbation, *, maps: torch.Tensor | None = None,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """||M' y' - M y|| / ||M y|| per slice (B,): the perturbation's change of the measured data.

    M is `mask` (default all), M' the mask after a sampling shift. Removed coils (`fewer`) count
    as measured zeros, as dropped ones do.
    """
    mask = torch.ones(kspace.shape[-1], dtype=torch.bool) if mask is None else mask
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    dims = (1, 2, 3)
    change = torch.linalg.vector_norm(_measured_change(kspace, spec, maps, mask), dim=dims)
    return change / torch.linalg.vector_norm(kspace * mask, dim=dims)


@dataclass(frozen=True)
class MatchedAttack:
    """The l2 attack with each slice's budget eps (B,) = the perturbation's relative change: the
    attack objective 1/2 ||f(y) - f(y + z)||^2 on the target crop next to the perturbation's own
    (both on the method's mask), and the attacked reconstructions' metrics against the targets."""

    eps: torch.Tensor
    attack_objective: torch.Tensor
    perturbation_objective: torch.Tensor
    scores: dict[str, torch.Tensor]


def matched_attack(method: Any, case: Case, spec: Perturbation, *, ssim_variant: str = VOLUME_MAX, seed: int = 0,
                   **settings: Any) -> MatchedAttack:
    """The adversarial counterpart of `spec` (attacks.attack, one slice at a time, seeded by
    `seed`; `settings` such as steps go to it). Sampling shifts change the mask, which the attack
    keeps: refused."""
    if isinstance(spec, SamplingShift):
        raise ConfigError("perturbation", "a sampling shift changes the mask; the l2 attack keeps it")
    mask = check_mask(case.mask, case.kspace.shape).to(case.kspace.device)
    crop = tuple(case.target.shape[-2:])
    measured = case.kspace * mask
    with torch.no_grad():
        change = _measured_change(case.kspace, spec, case.maps, mask)
    dims = (1, 2, 3)
    eps = torch.linalg.vector_norm(change, dim=dims) / torch.linalg.vector_norm(measured, dim=dims)
    physical = apply_perturbation(method, measured, mask, change, float(eps.max()), attack=spec.kind,
                                  scope=Scope(crop=crop), target_shape=crop)
    attacked = []
    for i in range(case.kspace.shape[0]):
        slice_mask = mask[i:i + 1] if mask.ndim == 4 and mask.shape[0] > 1 else mask
        attacked.append(attack(method, measured[i:i + 1], slice_mask, float(eps[i]), settings,
                               Scope(seed=seed, crop=crop), target_shape=crop))
    images = center_crop(torch.cat([a.perturbed for a in attacked]), crop)
    return MatchedAttack(eps, torch.cat([a.objective for a in attacked]), physical.objective,
                         score(case.target, images, case.max_value, ssim_variant=ssim_variant))


@dataclass(frozen=True)
class Search:
    """Budget and objective of a worst-case search: `trials` seeds, then `refine` local steps of
    initial size `step` in the unit box; the worst is the lowest mean `metric` (highest for nmse,
    mse) over the case's slices."""

    trials: int = 8
    refine: int = 8
    step: float = 0.2
    metric: str = "ssim"
    ssim_variant: str = VOLUME_MAX
    seed: int = 0  # the refinement's own draws

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if self.trials < 1 or self.refine < 0 or not 0 < self.step <= 1:
            raise ConfigError("search", f"need trials >= 1, refine >= 0, 0 < step <= 1; got {self}")


@dataclass(frozen=True)
class WorstCase:
    """The worst spec found (explicit params), its mean score, and every evaluated (spec, score)."""

    spec: Perturbation
    score: float
    evaluated: tuple[tuple[Perturbation, float], ...]


def worst_case(method: Any, case: Case, spec: Perturbation, search: Search = Search(), **meta: Any) -> WorstCase:
    """The params of `spec`'s kind at `spec.severity` that hurt `method` most on `case`."""
    sign = 1.0 if HIGHER_IS_BETTER[search.metric] else -1.0
    shape = tuple(case.kspace.shape)
    evaluated: list[tuple[Perturbation, float]] = []

    def evaluate(candidate: Perturbation) -> float:
        scores = perturbed_scores(method, case, candidate, ssim_variant=search.ssim_variant, **meta)
        value = float(_pick(scores, search.metric).mean())
        evaluated.append((candidate, value))
        return value

    trials = [spec] + [dataclasses.replace(spec, seed=spec.seed + i, params=None) for i in range(1, search.trials)]
    values = [evaluate(trial) for trial in trials]
    best_index = min(range(len(values)), key=lambda i: sign * values[i])
    best = dataclasses.replace(trials[best_index], params=draw_params(trials[best_index], shape))
    best_value = values[best_index]
    if best.params and spec.severity > 0:
        generator = torch.Generator().manual_seed(search.seed)
        step = search.step
        for _ in range(search.refine):
            u = torch.tensor(best.params, dtype=torch.float64)
            move = torch.randn(u.shape, generator=generator, dtype=torch.float64)
            candidate = dataclasses.replace(best, params=tuple((u + step * move).clamp(0, 1).tolist()))
            value = evaluate(candidate)
            if sign * value < sign * best_value:
                best, best_value, step = candidate, value, min(1.0, 1.5 * step)
            else:
                step *= 0.85
    return WorstCase(best, best_value, tuple(evaluated))


# --- Antun et al.: more samples should not give a worse result -----------------------------------
@dataclass(frozen=True)
class AccelerationSweep:
    """Masks of `mask_kind` (random, equispaced, poisson) at each acceleration, one seed."""

    accelerations: tuple[float, ...] = (2, 3, 4, 6, 8, 10, 12)
    mask_kind: str = "random"
    center_fraction: float = 0.08
    seed: Seed = 0
    ssim_variant: str = VOLUME_MAX

    def __post_init__(self) -> None:
        if len(self.accelerations) < 2 or any(a < 1 for a in self.accelerations):
            raise ConfigError("accelerations", f"{self.accelerations}: need at least two values >= 1")


@torch.no_grad()
def acceleration_sweep(method: Any, case: Case, sweep: AccelerationSweep,
                       **meta: Any) -> dict[float, dict[str, torch.Tensor]]:
    """Per-slice metrics at every acceleration (case.mask is replaced by the sweep's masks)."""
    crop = tuple(case.target.shape[-2:])
    results = {}
    for acceleration in sweep.accelerations:
        mask = sampling_mask(sweep.mask_kind, acceleration, sweep.center_fraction, tuple(case.kspace.shape[-2:]),
                             sweep.seed, device=case.kspace.device, columns=case.columns)
        mask = check_mask(mask, case.kspace.shape)
        image = checked_reconstruct(method, case.kspace * mask, mask, target_shape=crop, **meta)
        results[float(acceleration)] = score(case.target, center_crop(image, crop), case.max_value,
                                             ssim_variant=sweep.ssim_variant)
    return results


@dataclass(frozen=True)
class QualityDrop:
    """Quality at `lower` acceleration minus quality at the next `higher` one, over slices (paired),
    oriented so that negative is worse: mean and CI. verdict "drop" when the CI lies below 0,
    "inconclusive" when the mean is below 0 but the CI reaches 0."""

    lower: float
    higher: float
    difference: float
    ci: tuple[float, float]
    n: int
    verdict: str


def more_samples_worse(scores: Mapping[float, Sequence[float] | torch.Tensor], metric: str = "ssim", *,
                       confidence: float = 0.95, seed: int = 0) -> list[QualityDrop]:
    """Where quality falls as the acceleration falls: every adjacent pair whose mean falls.

    `scores` maps acceleration -> per-slice values of `metric` on the same slices (e.g. one key of
    `acceleration_sweep`'s results). An empty list means no drop was observed.
    """
    sign = 1.0 if HIGHER_IS_BETTER[_check_metric(metric)] else -1.0
    ordered = sorted(scores)
    drops = []
    for lower, higher in zip(ordered, ordered[1:]):
        a = np.asarray(torch.as_tensor(scores[lower]).cpu(), dtype=np.float64)
        b = np.asarray(torch.as_tensor(scores[higher]).cpu(), dtype=np.float64)
        if a.shape != b.shape:
            raise ConfigError("scores", f"accelerations {lower} and {higher} have different slice counts")
        mean, low, high = bootstrap_ci(sign * (a - b), confidence=confidence, seed=seed)
        if mean < 0:
            drops.append(QualityDrop(lower, higher, mean, (low, high), a.size, "drop" if high < 0 else "inconclusive"))
    return drops
