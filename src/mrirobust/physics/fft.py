"""Centred, orthonormal FFTs on complex tensors (fastMRI's `fft2c`/`ifft2c` convention).

fastMRI's functions take real tensors with a trailing (real, imag) axis; these take native
complex tensors and transform the last two axes (or one given axis).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two axes: image -> k-space."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D inverse FFT over the last two axes: k-space -> image."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=dims), norm="ortho"), dim=dims)


def center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Crop the last two axes to `shape` around the centre (fastMRI's `center_crop` offsets)."""
    height, width = x.shape[-2], x.shape[-1]
    if shape[0] > height or shape[1] > width:
        raise ValueError(f"cannot crop {(height, width)} to the larger {tuple(shape)}")
    top = (height - shape[0]) // 2
    left = (width - shape[1]) // 2
    return x[..., top : top + shape[0], left : left + shape[1]]


def pad_to(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Zero-pad the last two axes to `shape`, the inverse of `center_crop`'s placement."""
    (height, width), (h, w) = shape, image.shape[-2:]
    top, left = (height - h) // 2, (width - w) // 2
    return F.pad(image, [left, width - w - left, top, height - h - top])
