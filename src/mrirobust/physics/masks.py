"""Sampling masks.

Convention: a mask is a bool tensor that broadcasts against k-space (batch, coils, H, W) by
plain torch broadcasting. One slice's column mask is (W,) (every row of a sampled column), a
2-D mask (H, W); batched masks are (batch, 1, 1, W) and (batch, 1, H, W) (`stack_masks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mrirobust.errors import ShapeError


def check_mask(mask: torch.Tensor, kspace_shape: Sequence[int]) -> torch.Tensor:
    """Return `mask` as bool after checking that it broadcasts against k-space of `kspace_shape`."""
    if mask.shape[-1] != kspace_shape[-1]:
        raise ShapeError(f"mask width {mask.shape[-1]} does not match k-space width {kspace_shape[-1]}")
    try:
        torch.broadcast_shapes(tuple(mask.shape), tuple(kspace_shape))
    except RuntimeError:
        raise ShapeError(
            f"mask of shape {tuple(mask.shape)} does not broadcast against k-space {tuple(kspace_shape)}"
        ) from None
    return mask.bool()


def stack_masks(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-slice masks, (W,) or (H, W), into a batch that broadcasts over coils."""
    stacked = torch.stack([m.bool() for m in masks])
    if stacked.ndim == 2:  # column masks
        return stacked[:, None, None, :]
    return stacked[:, None, :, :]
