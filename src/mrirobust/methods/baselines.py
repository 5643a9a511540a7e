"""Baseline reconstructions: zero-filled RSS, zero-filled SENSE combination and CG-SENSE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mrirobust.methods.base import Reconstructor, register
from mrirobust.methods.settings import at_least
from mrirobust.physics.combine import sense_combine, zero_filled_rss
from mrirobust.physics.espirit import EspiritSettings
from mrirobust.physics.fft import ifft2c
from mrirobust.physics.operator import MultiCoilOperator


@register("zero-filled")
@dataclass
class ZeroFilled(Reconstructor):
    """RSS of the inverse FFT of the masked k-space: the input every trained method starts from."""

    family = "baseline"
    differentiable = True

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        return zero_filled_rss(kspace, mask)


def coil_maps(espirit: EspiritSettings, kspace: torch.Tensor, mask: torch.Tensor,
              maps: torch.Tensor | None) -> torch.Tensor:
    """The given maps on k-space's device and dtype, or ESPIRiT maps of the under-sampled k-space."""
    if maps is None:
        maps = espirit.maps(kspace * mask.to(kspace.device))
    return maps.to(device=kspace.device, dtype=kspace.dtype)


@register("zero-filled-sense")
@dataclass
class ZeroFilledSense(Reconstructor):
    """|sum_i conj(S_i) x_i / sum_i |S_i|^2| of the zero-filled coil images x_i: the complex
    (phase-aware) coil combination instead of RSS, with maps from meta `maps=` or ESPIRiT.

    RSS adds the coils' noise in magnitude; the SENSE combination weights coils by their
    sensitivity, so it is the zero-filled image a SENSE-type method starts from (A^H y up to the
    map energy). Linear in y for fixed maps.
    """

    espirit: EspiritSettings = EspiritSettings()

    family = "baseline"
    differentiable = True

    def reconstruct(
        self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None, **meta: Any
    ) -> torch.Tensor:
        maps = coil_maps(self.espirit, kspace, mask, maps)
        return sense_combine(ifft2c(kspace * mask.to(kspace.device)), maps).abs()


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, iters: int, tol: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve normal(x) = rhs for Hermitian positive (semi-)definite `normal`, per batch element.

    Starts from zero and runs `iters` steps, stopping early once every element's residual norm is
    below `tol` times its initial norm (tol > 0 costs one device sync per step). Returns the
    solution and the residual norms, shape (steps + 1, B). Differentiable by autograd.
    """
    dims = tuple(range(1, rhs.ndim))
    shape = (-1,) + (1,) * len(dims)

    def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.conj() * b).sum(dim=dims).real

    x = torch.zeros_like(rhs)
    residual, direction = rhs, rhs
    energy = inner(residual, residual)
    norms = [energy.sqrt()]
    for _ in range(iters):
        if tol > 0 and bool((norms[-1] <= tol * norms[0]).all()):
            break
        image = normal(direction)
        curvature = inner(direction, image)
        alpha = torch.where(curvature > 0, energy / curvature.clamp_min(torch.finfo(energy.dtype).tiny), 0.0)
        x = x + alpha.reshape(shape) * direction
        residual = residual - alpha.reshape(shape) * image
        new_energy = inner(residual, residual)
        beta = torch.where(energy > 0, new_energy / energy.clamp_min(torch.finfo(energy.dtype).tiny), 0.0)
        direction = residual + beta.reshape(shape) * direction
        energy = new_energy
        norms.append(energy.sqrt())
    return x, torch.stack(norms)


@register("sense")
@dataclass
class CGSense(Reconstructor):
    """CG-SENSE: solve (A^H A + l2 I) x = A^H y by conjugate gradient; return |x|.

    Coil maps come from meta `maps=` (B, C, H, W) or else from ESPIRiT on the under-sampled k-space.
    Linear in y for fixed maps, hence differentiable and not optimisation-based for the attacks.
    `l2` is scale-free (both terms are quadratic in x, and ||A^H A|| <= 1 for ESPIRiT maps); the
    default 0.01 stops CG from amplifying noise at 4x, where l2 = 0 loses ~0.09 SSIM on the demo.
    """

    iters: int = 30
    tol: float = 0.0
    l2: float = 0.01
    espirit: EspiritSettings = EspiritSettings()

    family = "baseline"
    differentiable = True

    @classmethod
    def check(cls, settings: dict[str, Any]) -> None:
        at_least(settings, 0, "iters", "tol", "l2")

    def reconstruct(
        self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None, **meta: Any
    ) -> torch.Tensor:
        op = MultiCoilOperator(coil_maps(self.espirit, kspace, mask, maps), mask)
        image, _ = conjugate_gradient(lambda v: op.normal(v) + self.l2 * v, op.adjoint(kspace), self.iters, self.tol)
        return image.abs()
