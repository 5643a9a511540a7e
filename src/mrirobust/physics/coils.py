"""Simulated coil sensitivities and smooth image phase for multi-coil k-space simulation.

`birdcage_maps` follows SigPy's `sigpy.mri.birdcage_maps` geometry (coils evenly spaced on a
circle of relative radius `radius` around the field of view, sensitivity ~ 1/distance with the
phase of the azimuth), so its normalised maps equal SigPy's for the same settings.
"""

from __future__ import annotations

import math

import torch


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale coil maps so that sum_i |S_i|^2 = 1 wherever they are non-zero (ESPIRiT's scaling)."""
    norm = torch.sqrt((maps.abs() ** 2).sum(-3, keepdim=True))
    return torch.where(norm > 0, maps / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.zeros_like(maps))


def birdcage_maps(
    num_coils: int,
    shape: tuple[int, int],
    *,
    radius: float = 1.5,
    rings: int = 1,
    z: float = 0.0,
    normalize: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Birdcage coil sensitivities, (num_coils, H, W).

    The grid spans [-1, 1) along each axis (an elongated grid puts the coils on an ellipse).
    `rings` > 1 splits the coils into rings stacked along z, one unit apart and centred on 0, and
    `z` is the slice position (SigPy's 4-D layout). `normalize=True` scales every pixel so that
    sum_i |S_i|^2 = 1 (what ESPIRiT estimates); `False` keeps the 1/distance fall-off, whose
    root-sum-of-squares gives the familiar brighter-near-the-coils shading.
    """
    if num_coils < 1 or rings < 1 or num_coils % rings:
        raise ValueError(f"num_coils={num_coils} must be a positive multiple of rings={rings}")
    per_ring = num_coils // rings
    real = torch.float64  # the geometry in double; the maps are cast at the end
    c = torch.arange(num_coils, device=device, dtype=real)[:, None, None]
    ring = torch.div(c, per_ring, rounding_mode="floor")
    angle = c * (2 * math.pi / per_ring)
    height, width = shape
    y = (torch.arange(height, device=device, dtype=real)[:, None] - height / 2) / (height / 2)
    x = (torch.arange(width, device=device, dtype=real)[None, :] - width / 2) / (width / 2)
    dx = x - radius * torch.cos(angle)
    dy = y - radius * torch.sin(angle)
    dz = z - (ring - 0.5 * (rings - 1))
    distance = torch.sqrt(dx**2 + dy**2 + dz**2).clamp_min(1e-6)
    phase = torch.atan2(dx, -dy) - (c + ring) * (2 * math.pi / per_ring)
    maps = torch.polar(1 / distance, phase)
    if normalize:
        maps = normalize_maps(maps)
    return maps.to(dtype)


def smooth_phase(
    shape: tuple[int, int],
    *,
    generator: torch.Generator,
    max_order: int = 3,
    scale: float = math.pi / 2,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A smooth random phase image (H, W): a polynomial in (y, x) of total degree <= max_order.

    Coefficients are Gaussian with standard deviation `scale` / (1 + degree), so low orders
    dominate, like the slowly varying B0/receiver phase of real MR images. Drawn from
    `generator` (and on its device): the same generator state gives the same phase.
    """
    device = generator.device
    height, width = shape
    y = torch.linspace(-1, 1, height, device=device, dtype=torch.float64)[:, None]
    x = torch.linspace(-1, 1, width, device=device, dtype=torch.float64)[None, :]
    powers = [(i, j) for i in range(max_order + 1) for j in range(max_order + 1 - i)]
    std = torch.tensor([scale / (1 + i + j) for i, j in powers], device=device, dtype=torch.float64)
    coefficients = std * torch.randn(len(powers), generator=generator, device=device, dtype=torch.float64)
    terms = torch.stack([(y**i) * (x**j) for i, j in powers])
    return (coefficients[:, None, None] * terms).sum(0).to(dtype)
