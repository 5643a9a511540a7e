"""Small-feature recovery (paper section 6, appendix C): artificial features and annotated pathologies.

Artificial feature. For a fully sampled slice with coil images c = F^-1 y, ESPIRiT maps S are
estimated from y (BART `ecalib -m1` settings, but `maps_crop` 0 by default so that a feature in
the background still reaches the coils). A k x k window f, filled with `value` (default: the
target's maximum, as in the paper), is added to the complex image x behind c: the coil images
become c + S f, i.e. the k-space becomes y + F(S f), so the feature obeys the same physics as the
anatomy. Positions (top, left) are pixels of the target frame (the centre crop of the image that
`reconstruct` returns); on the k-space grid the window sits at (top + dh, left + dw) with
(dh, dw) the centre-crop offsets. The modified k-space is under-sampled with the slice's mask and
reconstructed. The reference (`reference`):
- "rss" (default): the RSS of the modified fully sampled coil images, centre-cropped, i.e. the
  fastMRI target of a patient who had the feature;
- "added": the stored target plus `value` inside the window (the paper's wording; it differs from
  "rss" where the image's phase is not zero).
The score is the MSE inside the window; `normalize="value"` divides it by value^2 (the fraction of
the feature's energy lost, "information loss" of Figure 17). Heat maps are normalised per method to
[0, 1] (Figure 7). Many placements go through one batched reconstruction: the batch axis carries
placements (un-trained networks fit them as one batch).

The experiments that place features (heat maps, window sizes, annotated boxes) are in
`mrirobust.experiments.features`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mrirobust.data.sample import Sample, draw_mask
from mrirobust.errors import ConfigError, DataError
from mrirobust.methods.base import checked_reconstruct
from mrirobust.metrics import region_mse
from mrirobust.physics.combine import rss
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.fft import center_crop, fft2c, ifft2c
from mrirobust.physics.masks import MaskSpec, stack_masks

REFERENCES = ("rss", "added")
NORMALIZE = ("none", "value")


def window_images(boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Indicator images (P, H, W) of boxes (P, 4) = (top, left, height, width) on an (H, W) grid."""
    rows = torch.arange(shape[0], device=boxes.device)
    cols = torch.arange(shape[1], device=boxes.device)
    top, left, height, width = boxes.unbind(-1)
    inside_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    return (inside_rows[:, :, None] & inside_cols[:, None, :]).float()


def insert_features(kspace: torch.Tensor, maps: torch.Tensor, boxes: torch.Tensor, value: float,
                    target_shape: tuple[int, int]) -> torch.Tensor:
    """Fully sampled k-space (P, C, H, W) of one slice (C, H, W) with feature p of `value` in box p.

    Boxes (P, 4) are in the target frame; they are shifted by the centre-crop offsets onto the grid.
    """
    height, width = kspace.shape[-2:]
    offset = torch.tensor([(height - target_shape[0]) // 2, (width - target_shape[1]) // 2, 0, 0],
                          device=boxes.device)
    feature = value * window_images(boxes + offset, (height, width)).to(kspace.dtype)
    return kspace + fft2c(maps * feature[:, None])


def reference_images(modified: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor, value: float,
                     reference: str) -> torch.Tensor:
    """The ground truth with the feature (P, h, w): see the module docstring."""
    if reference == "rss":
        return center_crop(rss(ifft2c(modified)), tuple(target.shape[-2:]))
    return target + value * window_images(boxes, tuple(target.shape[-2:]))


def heatmap_boxes(shape: tuple[int, int], window: int, stride: int) -> torch.Tensor:
    """Every placement (top, left, window, window) of the window on a grid with `stride` (P, 4)."""
    if window < 1 or window > min(shape):
        raise ConfigError("--window", f"{window} must be between 1 and the image size {shape[0]}x{shape[1]}")
    if stride < 1:
        raise ConfigError("--stride", f"{stride} must be >= 1")
    tops = torch.arange(0, shape[0] - window + 1, stride)
    lefts = torch.arange(0, shape[1] - window + 1, stride)
    grid = torch.cartesian_prod(tops, lefts)
    return torch.cat([grid, torch.full_like(grid, window)], dim=1)


def random_boxes(shape: tuple[int, int], window: int, count: int, seed: int) -> torch.Tensor:
    """`count` seeded uniform placements of the window inside the image (count, 4)."""
    heatmap_boxes(shape, window, 1)  # checks the window
    generator = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, shape[0] - window + 1, (count,), generator=generator)
    lefts = torch.randint(0, shape[1] - window + 1, (count,), generator=generator)
    return torch.stack([tops, lefts, torch.full_like(tops, window), torch.full_like(tops, window)], dim=1)


class FeatureImage:
    """One fully sampled slice on the device: k-space, mask, target, ESPIRiT maps, feature value."""

    def __init__(self, sample: Sample, spec: MaskSpec, device: str | torch.device, maps_crop: float,
                 value: float | None) -> None:
        if sample.target is None:
            raise DataError(sample.meta.file, f"slice {sample.meta.slice} has no target to score against")
        if sample.mask is not None:
            raise DataError(sample.meta.file, "features need fully sampled k-space; this file is under-sampled")
        self.sample = sample
        self.kspace = sample.kspace.to(device)
        self.target = sample.target.to(device)
        mask, seed = draw_mask(sample, spec)
        self.mask = mask.to(device)
        self.mask_seed = Path(sample.meta.file).name if seed is not None else "from-file"
        self.maps = espirit_maps(self.kspace, crop=maps_crop)
        self.value = float(self.target.max()) if value is None else float(value)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.target.shape[-2:])

    def feature_mse(self, method: Any, boxes: torch.Tensor, reference: str) -> torch.Tensor:
        """MSE inside each box (P,) of the reconstruction of the slice with the feature in that box."""
        boxes = boxes.to(self.kspace.device)
        modified = insert_features(self.kspace, self.maps, boxes, self.value, self.shape)
        masks = stack_masks([self.mask] * len(boxes))
        with torch.no_grad():
            prepare = getattr(method, "precompute", None)  # l1: maps of the slice without a feature, once
            meta = {key: value.expand(len(boxes), *value.shape[1:]) for key, value in
                    (prepare(self.kspace[None] * self.mask, self.mask) if prepare else {}).items()}
            image = checked_reconstruct(method, modified * masks, masks, target_shape=self.shape, **meta)
        truth = reference_images(modified, self.target, boxes, self.value, reference)
        return region_mse(truth, center_crop(image, self.shape), boxes)


