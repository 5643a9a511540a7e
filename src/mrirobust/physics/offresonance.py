"""Off-resonance: phase accrual along each readout from a B0 field map, by time segmentation.

A spin at off-resonance df(r) Hz picks up phase exp(-2 pi i df(r) t) by the time t of each
readout sample, so the multi-coil signal is

    y_c(t_h, k_w) = sum_r S_c(r) x(r) exp(-2 pi i (k . r + df(r) t_h)),

which no single FFT computes. Time segmentation (Sutton, Noll & Fessler 2003) writes
exp(-2 pi i df t) - 1 ~ sum_l b_l(t) (exp(-2 pi i df tau_l) - 1) with L segment times tau_l and
least-squares interpolators b_l fitted over the map's frequency range, so

    y' = y + sum_l b_l(t_h) F[ z_c (exp(-2 pi i df tau_l) - 1) ],  z_c = F^-1 y_c,

one adjoint FFT of the coils and L forward ones. A zero map is the identity; a constant
map is exact (a readout shift by df * T pixels).
"""

from __future__ import annotations

import math

import torch

from mrirobust.errors import ShapeError
from mrirobust.physics.fft import fft2c, ifft2c

FIT_FREQUENCIES = 129  # off-resonance values the interpolators are fitted over


def readout_times(height: int, readout_s: float) -> torch.Tensor:
    """Time of every readout sample (H,) in seconds, the echo (k = 0, index H // 2) at t = 0."""
    return (torch.arange(height, dtype=torch.float64) - height // 2) * (readout_s / height)


def segments_for(max_abs_hz: float, readout_s: float) -> int:
    """Segments that keep the interpolation error well below 1e-3 for |df| <= max_abs_hz.

    The kernel exp(-2 pi i df t) over |df| <= D, |t| <= T/2 has about 2 D T + 1 significant
    singular values (a prolate bandwidth); six more reach about 1e-5 in the tests.
    """
    return max(2, min(48, math.ceil(2 * max_abs_hz * readout_s) + 7))


def interpolators(field_hz: torch.Tensor, times: torch.Tensor, segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment times tau (L,) and least-squares interpolators b (L, H) for this map's range."""
    low, high = float(field_hz.min()), float(field_hz.max())
    frequencies = torch.linspace(low, high, FIT_FREQUENCIES, dtype=torch.float64)
    tau = torch.linspace(float(times[0]), float(times[-1]), segments, dtype=torch.float64)
    basis = torch.exp(-2j * math.pi * frequencies[:, None] * tau[None, :]) - 1  # (K, L)
    exact = torch.exp(-2j * math.pi * frequencies[:, None] * times[None, :]) - 1  # (K, H)
    coefficients = torch.linalg.lstsq(basis, exact, driver="gelsd").solution  # (L, H)
    return tau, coefficients


def off_resonance_kspace(
    kspace: torch.Tensor, field_hz: torch.Tensor, readout_s: float, segments: int | None = None
) -> torch.Tensor:
    """Multi-coil k-space (B, C, H, W) of the same coil images under the B0 map field_hz (H, W).

    H is the readout axis: sample h is acquired at `readout_times(H, readout_s)[h]`. The map is
    given on the host in Hz; `segments` None picks `segments_for` its largest |df|.
    """
    height, width = kspace.shape[-2:]
    if field_hz.shape != (height, width):
        raise ShapeError(f"B0 map {tuple(field_hz.shape)} does not fit k-space {tuple(kspace.shape)}")
    field_hz = field_hz.detach().cpu().to(torch.float64)
    if segments is None:
        segments = segments_for(float(field_hz.abs().max()), readout_s)
    times = readout_times(height, readout_s)
    tau, coefficients = interpolators(field_hz, times, segments)
    weights = torch.exp(-2j * math.pi * field_hz[None] * tau[:, None, None]) - 1  # (L, H, W)
    weights = weights.to(device=kspace.device, dtype=kspace.dtype)
    coefficients = coefficients.to(device=kspace.device, dtype=kspace.dtype)
    coil_images = ifft2c(kspace)  # (B, C, H, W)
    change = torch.zeros_like(kspace)
    for weight, coefficient in zip(weights, coefficients):  # one segment at a time bounds memory
        change += coefficient[:, None] * fft2c(coil_images * weight)
    return kspace + change
