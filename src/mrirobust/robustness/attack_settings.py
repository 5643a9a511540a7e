"""What the attacks of `robustness.attacks` are given: their settings and the scope they share
(seed, budget reference, scored crop, objective), and the objective itself.

One source of truth for the attack settings: the attack experiment's `AttackSettings` holds a
field for each field here (tests/test_attacks.py checks it), and `split_settings` maps its flat
keys onto these dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

from mrirobust.errors import ConfigError
from mrirobust.metrics import ssim
from mrirobust.physics.fft import center_crop

Objective = Literal["mse", "ssim", "both"]
OBJECTIVES = ("mse", "ssim", "both")


@dataclass(frozen=True)
class PgdSettings:
    """PGD's settings (see `pgd`)."""

    steps: int = 20
    step_size: float | None = None  # l2: absolute step length (default: the radius); adam: its rate
    restarts: int = 1
    optimizer: Literal["l2", "adam"] = "l2"


@dataclass(frozen=True)
class TwoStepSettings:
    """The two-step attack's settings (see `two_step`)."""

    beta: float | None = None  # default: BETA_DEFAULTS of the method's family
    steps: int = 200
    clean_iters: int = 100
    lr: float = 0.008
    lr_z: float | None = None  # default: PGD_STEP_SCALE / steps
    z_step: Literal["ascent", "descent"] = "ascent"


@dataclass(frozen=True, eq=False)
class Scope:
    """What every attack shares: the seed of its random starts, the budget's reference (None: the
    measured k-space), the scored centre crop (h, w) and the objective it maximises there:
    "mse" 1/2 ||f(y) - f(y + z)||^2 (the paper's eq. 2), "ssim" 1 - SSIM(f(y), f(y + z)) (the
    differentiable fastMRI SSIM, data range the clean image's maximum) or "both" (the MSE relative
    to ||f(y)||^2 plus 1 - SSIM), so that an attack is aimed at what the verdicts score."""

    seed: int = 0
    reference: torch.Tensor | None = None
    crop: tuple[int, int] | None = None
    objective: Objective = "mse"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError("objective", f"choose one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, "reference": "kspace" if self.reference is None else "given", "crop": self.crop,
                "objective": self.objective}


def attack_objective(clean: torch.Tensor, image: torch.Tensor, scope: Scope, *, relative: bool = False) -> torch.Tensor:
    """The scope's objective per slice over its centre crop (the scored region) when given; the
    MSE relative to ||clean||^2 with `relative` (scale-free, as the two-step penalty needs)."""
    if scope.crop is not None:
        clean, image = center_crop(clean, scope.crop), center_crop(image, scope.crop)
    tiny = torch.finfo(clean.dtype).tiny
    change = 0.5 * (image - clean).square().flatten(1).sum(dim=1)
    if scope.objective == "mse" and not relative:
        return change
    change = change / (0.5 * clean.square().flatten(1).sum(dim=1)).clamp_min(tiny)
    if scope.objective == "mse":
        return change
    dissimilarity = 1 - ssim(clean, image, clean.detach().flatten(1).amax(dim=1).clamp_min(tiny))
    return dissimilarity if scope.objective == "ssim" else change + dissimilarity


def split_settings(given: Mapping[str, Any]) -> tuple[PgdSettings, TwoStepSettings]:
    """Flat settings (`steps=50, beta=0.5`) as the PGD and the two-step settings; a key of both
    (steps) goes to both, one of neither is a ConfigError naming it."""
    chosen = []
    for kind in (PgdSettings, TwoStepSettings):
        names = {f.name for f in fields(kind)}
        chosen.append(kind(**{k: v for k, v in given.items() if k in names}))
    known = {f.name for kind in (PgdSettings, TwoStepSettings) for f in fields(kind)}
    for key in given:
        if key not in known:
            raise ConfigError(key, f"not an attack setting; choose from {', '.join(sorted(known))}")
    return chosen[0], chosen[1]
