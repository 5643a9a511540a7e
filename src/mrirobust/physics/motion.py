"""Rigid in-plane motion of the object under fixed coil maps, simulated per pose group.

A multi-shot scan acquires its phase-encode lines (columns of the (B, C, H, W) k-space) in shots;
between shots the patient may move. Lines acquired at the same pose form a pose group. The object
image x is recovered once from the measured k-space through the coil maps (one adjoint FFT), each
moved pose T_g x is taken back to k-space through the same maps (one forward FFT per group, all
groups in one batched call), and each group's lines are replaced by

    y + F S (T_g x - x),

the measured data plus the change the motion makes. Lines of the reference pose (group 0) keep
the measured values exactly, so no motion is the identity, and data that fit the maps
(y = F S x) give exactly F S T_g x.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mrirobust.errors import ShapeError
from mrirobust.physics.combine import sense_combine
from mrirobust.physics.fft import fft2c, ifft2c


def _centred_frequencies(n: int, device: torch.device) -> torch.Tensor:
    """k-space indices of a centred FFT axis of length n, in cycles per field of view."""
    return torch.arange(n, device=device, dtype=torch.float64) - n // 2


def translate(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift complex images (N, H, W) by (N, 2) pixels (rows, columns), circularly and sub-pixel.

    A linear phase in k-space (the Fourier shift theorem): an integer shift is torch.roll.
    """
    height, width = images.shape[-2:]
    ky = _centred_frequencies(height, images.device)
    kx = _centred_frequencies(width, images.device)
    shifts = shifts.to(torch.float64)
    rows, cols = shifts[:, 0, None, None] / height, shifts[:, 1, None, None] / width
    phase = ky[None, :, None] * rows + kx[None, None, :] * cols
    ramp = torch.polar(torch.ones_like(phase), -2 * math.pi * phase).to(images.dtype)
    return ifft2c(fft2c(images) * ramp)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate complex images (N, H, W) by (N,) degrees about the array centre, bilinearly.

    The centre is ((H - 1) / 2, (W - 1) / 2), the centre torch.rot90 turns about, so +90 degrees
    on a square image is torch.rot90(images, 1, dims=(-2, -1)). Pixels from outside are zero.
    """
    height, width = images.shape[-2:]
    theta = torch.deg2rad(degrees.to(torch.float64))[:, None, None]
    rows = (torch.arange(height, device=images.device, dtype=torch.float64) - (height - 1) / 2)[None, :, None]
    cols = (torch.arange(width, device=images.device, dtype=torch.float64) - (width - 1) / 2)[None, None, :]
    source_rows = torch.cos(theta) * rows + torch.sin(theta) * cols
    source_cols = -torch.sin(theta) * rows + torch.cos(theta) * cols
    # grid_sample's normalised coordinates (align_corners=False): pixel i sits at (2i + 1) / n - 1.
    grid = torch.stack([(2 * source_cols + width) / width - 1, (2 * source_rows + height) / height - 1], dim=-1)
    real = torch.view_as_real(images).permute(0, 3, 1, 2)  # (N, 2, H, W)
    sampled = F.grid_sample(real, grid.to(real.dtype), mode="bilinear",
                            padding_mode="zeros", align_corners=False)
    return torch.view_as_complex(sampled.permute(0, 2, 3, 1).contiguous())


def move(images: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """Apply rigid poses (N, 3) = (row shift px, column shift px, rotation degrees) to (N, H, W)."""
    return translate(rotate(images, poses[:, 2]), poses[:, :2])


def rigid_motion_kspace(
    kspace: torch.Tensor, maps: torch.Tensor, poses: torch.Tensor, line_group: torch.Tensor
) -> torch.Tensor:
    """Multi-coil k-space (B, C, H, W) with each phase-encode line acquired at its group's pose.

    poses (G, 3): the moved poses of groups 1..G, as in `move`; group 0 is the reference pose.
    line_group (B, W) long: the pose group of every column of every slice (0 keeps the line).
    Cost: one adjoint FFT for the object and one forward FFT of G moved objects (batched).
    """
    batch, coils, height, width = kspace.shape
    if maps.shape[-3:] != kspace.shape[-3:] or maps.shape[0] not in (1, batch):
        raise ShapeError(f"coil maps {tuple(maps.shape)} do not fit k-space {tuple(kspace.shape)}")
    if line_group.shape != (batch, width):
        raise ShapeError(f"line groups {tuple(line_group.shape)} do not fit k-space {tuple(kspace.shape)}")
    groups = poses.shape[0]
    if groups == 0:
        return kspace
    image = sense_combine(ifft2c(kspace), maps)  # (B, H, W)
    moved = move(image.repeat_interleave(groups, dim=0), poses.to(image.device).repeat(batch, 1))
    change = (moved.reshape(batch, groups, height, width) - image[:, None])  # (B, G, H, W)
    delta = fft2c(maps[:, None] * change[:, :, None])  # (B, G, C, H, W)
    # Pick, for every column, the change of its own group (group 0: no change).
    index = (line_group - 1).clamp_min(0)[:, None, None, None, :].expand(batch, 1, coils, height, width)
    chosen = torch.gather(delta, 1, index)[:, 0]
    moved_line = (line_group > 0)[:, None, None, :]
    return torch.where(moved_line, kspace + chosen, kspace)
