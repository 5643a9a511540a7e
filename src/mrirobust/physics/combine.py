"""Coil combination: root-sum-of-squares (the fastMRI reference) and SENSE-weighted combination."""

from __future__ import annotations

import torch

from mrirobust.errors import ShapeError
from mrirobust.physics.fft import ifft2c
from mrirobust.physics.masks import check_mask


def rss(coil_images: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root-sum-of-squares over the coil axis `dim`; real output for real or complex input."""
    energy = coil_images.real**2 + coil_images.imag**2 if coil_images.is_complex() else coil_images**2
    return torch.sqrt(energy.sum(dim=dim))


def sense_combine(coil_images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """sum_i conj(S_i) x_i / sum_i |S_i|^2 over the coil axis (-3); zero where all maps vanish.

    Dividing by the map energy makes S x -> x exact for maps that are not normalised to one. The
    `zero-filled-sense` method (methods/baselines.py) is this of the zero-filled coil images.
    """
    if coil_images.shape[-3:] != maps.shape[-3:]:
        raise ShapeError(f"coil images {tuple(coil_images.shape)} do not fit coil maps {tuple(maps.shape)}")
    numerator = (maps.conj() * coil_images).sum(dim=-3)
    energy = (maps.real**2 + maps.imag**2).sum(dim=-3)
    covered = energy > 0
    safe = torch.where(covered, energy, torch.ones_like(energy))  # keeps gradients finite off-support
    return torch.where(covered, numerator / safe, torch.zeros_like(numerator))


def zero_filled_rss(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RSS of the inverse FFT of the masked k-space (B, C, H, W) -> (B, H, W)."""
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    return rss(ifft2c(kspace * mask), dim=-3)
