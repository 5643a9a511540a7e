"""Perturbations of measured k-space in an l2 ball: the primitives shared by the attacks
(robustness/attacks.py) and robustness training (workflows/train.py).

A perturbation z (B, C, H, W) lives on the measured locations (the mask) and its norm is per
slice over (C, H, W). Iterates are kept in units of the radius (u = z / (eps ||y||)), so a ball of
radius 1 per slice is the common case.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def norms(t: torch.Tensor) -> torch.Tensor:
    """l2 norm of every batch element, shape (B,)."""
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)))


def per_slice(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) values shaped to broadcast against a (B, ...) tensor of `ndim` dimensions."""
    return values.reshape(-1, *[1] * (ndim - 1))


def unit(t: torch.Tensor) -> torch.Tensor:
    """t / ||t|| per slice; a zero slice stays zero."""
    return t / per_slice(norms(t).clamp_min(torch.finfo(t.real.dtype).tiny), t.ndim)


def clip_to_ball(z: torch.Tensor, radius: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Projection onto {z = 0 off the mask, ||z|| <= radius} per slice (radius (B,))."""
    z = torch.where(mask, z, torch.zeros((), dtype=z.dtype, device=z.device))
    norm = norms(z)
    factor = torch.where(norm > radius, radius / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.ones_like(norm))
    return z * per_slice(factor, z.ndim)


def ball_radius(kspace: torch.Tensor, reference: torch.Tensor | None, eps: float) -> torch.Tensor:
    """eps ||reference|| per slice as the output dtype computes it."""
    return eps * norms(kspace if reference is None else reference).to(kspace.real.dtype)


# Relative shrinks tried in turn on the slices whose rounded z still has a norm above the radius.
_SHRINKS = tuple(2.0**-k for k in range(23, 9, -2))  # 2^-23 .. 2^-11


def fit_to_ball(z: torch.Tensor, kspace: torch.Tensor, reference: torch.Tensor | None, eps: float,
                mask: torch.Tensor, *, sphere: bool = False) -> torch.Tensor:
    """z zeroed off the mask and scaled into the ball ||z|| <= eps ||ref|| (onto its sphere if `sphere`).

    The budget holds exactly as computed both in float64 and in z's own dtype (float32 for
    complex64): the scale is computed in float64, and a slice whose rounded result still has a
    norm above the radius (rounding of the elements or of the float32 norm) is shrunk by a few ulps
    until it fits; a slice that never fits (none seen) would become zero.
    """
    ref = kspace if reference is None else reference
    radius64, radius = eps * norms(ref.to(torch.complex128)), ball_radius(kspace, reference, eps)
    wide = torch.where(mask, z, torch.zeros((), dtype=z.dtype, device=z.device)).to(torch.complex128)
    norm = norms(wide)
    factor = torch.where(norm > 0, torch.minimum(radius64, radius.to(torch.float64)) / norm, torch.zeros_like(norm))
    factor = factor if sphere else factor.clamp_max(1.0)

    def scaled(factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = (wide * per_slice(factor, wide.ndim)).to(z.dtype)
        return out, (norms(out.to(torch.complex128)) > radius64) | (norms(out) > radius)

    out, outside = scaled(factor)
    for shrink in _SHRINKS:
        if not bool(outside.any()):
            return out
        factor = torch.where(outside, factor * (1 - shrink), factor)
        out, outside = scaled(factor)
    return torch.where(per_slice(outside, out.ndim), torch.zeros((), dtype=out.dtype, device=out.device), out)


def ball_step(u: torch.Tensor, grad: torch.Tensor, step: float | torch.Tensor, radius: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """One projected normalised-gradient step: P(u + step grad / ||grad||) with grad restricted to
    the mask; `step` a number or (B,) lengths (negative: descent), in the units of `radius`."""
    length = per_slice(step, u.ndim) if isinstance(step, torch.Tensor) else step
    return clip_to_ball(u + length * unit(grad * mask), radius, mask)


def measurement_noise(kspace: torch.Tensor, mask: torch.Tensor, sigma: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Complex Gaussian z on the measured locations with E||z||^2 = (sigma ||y||)^2 per slice.

    z_j = sigma ||y|| w_j / sqrt(m) on the m measured entries (all coils), w_j i.i.d. standard
    complex Gaussian (E|w_j|^2 = 1), zero elsewhere; y is `kspace` on the mask. The jittering of
    Krainovic, Soltanolkotabi and Heckel (NeurIPS 2023), with sigma relative to ||y||.
    """
    measured = mask.expand(kspace.shape)
    y = torch.where(measured, kspace, torch.zeros((), dtype=kspace.dtype, device=kspace.device))
    count = measured.flatten(1).sum(dim=1).clamp_min(1).to(kspace.real.dtype)
    noise = torch.randn(kspace.shape, generator=generator, dtype=kspace.dtype, device=kspace.device) * measured
    return noise * per_slice(sigma * norms(y) / count.sqrt(), kspace.ndim)


def adversarial_perturbation(loss_of: Callable[[torch.Tensor], torch.Tensor], kspace: torch.Tensor,
                             mask: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """z (B, C, H, W) on the mask with ||z|| <= eps ||kspace|| per sample exactly that ascends
    `loss_of(kspace + z)`: `steps` projected normalised-gradient steps one radius long from z = 0
    (unlike the attacks' objective, a training loss has a gradient there), as `attacks.pgd` steps."""
    radius = ball_radius(kspace, None, eps)
    scale, ones = per_slice(radius, kspace.ndim), torch.ones_like(radius)
    u = torch.zeros_like(kspace)
    for _ in range(steps):
        u.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(kspace + scale * u), u)
        u = ball_step(u.detach(), grad, 1.0, ones, mask)
    return fit_to_ball(scale * u, kspace, None, eps, mask)
