"""Training-data augmentation: mirrored and transposed slices.

The embedded dataset has few patients, so a network can learn their orientation (the knee's
horizontal edges, its off-centre field of view) as if it were anatomy. A transformed slice is an
exact new training example: the coil images are transformed, k-space recomputed from them, and
the target transformed with them, so the centre crop of the new coil images still lines up with
the new target (`center_crop`'s offsets are floor((N - n) / 2), so an odd margin is re-centred by
a one-pixel roll after a flip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from mrirobust.data.sample import Sample
from mrirobust.physics.fft import center_crop, fft2c, ifft2c, pad_to


def _mirror(x: torch.Tensor, dims: Sequence[int], crop: tuple[int, int] | None) -> torch.Tensor:
    """`x` flipped along `dims` (-2, -1), rolled so that a centre crop to `crop` is the flipped crop."""
    x = torch.flip(x, list(dims))
    if crop is None:
        return x
    shifts = [-((x.shape[d] - crop[d]) % 2) for d in dims]
    return torch.roll(x, shifts, list(dims)) if any(shifts) else x


def _transpose(x: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """The centre crop (square) of `x` transposed, zero-padded back to the size of `x`."""
    return pad_to(center_crop(x, crop).transpose(-2, -1), tuple(x.shape[-2:]))


def _mirrored_padding(left: int, right: int, width: int) -> dict[str, int]:
    """The acquired columns [left, right) after a left-right image flip: column c of centred k-space
    holds frequency c - width // 2, which the flip negates (c -> 2 (width // 2) - c mod width)."""
    if right <= left:
        return {"padding_left": left, "padding_right": right}
    mapped = (2 * (width // 2) - torch.arange(left, right)) % width
    return {"padding_left": int(mapped.min()), "padding_right": int(mapped.max()) + 1}


def transformed(sample: Sample, dims: Sequence[int], transpose: bool = False) -> Sample:
    """`sample` transposed (its square target region; the rest of the field of view is emptied),
    then mirrored along image axes `dims` (-2: up-down, -1: left-right; none and no transpose:
    unchanged).

    K-space, target and coil maps are transformed consistently; a left-right flip mirrors the
    header's k-space padding columns, a transpose drops them (every column carries signal then).
    A sample with a mask of its own (test files) is refused: its unmeasured lines would move too.
    """
    dims = sorted({int(d) for d in dims})
    if not dims and not transpose:
        return sample
    if any(d not in (-2, -1) for d in dims):
        raise ValueError(f"flip dims must be -2 and/or -1, got {dims}")
    if sample.mask is not None:
        raise ValueError(f"{sample.meta.file}: an under-sampled sample cannot be transformed for training")
    crop = tuple(sample.target.shape[-2:]) if sample.target is not None else None
    if transpose and (crop is None or crop[0] != crop[1]):
        raise ValueError(f"{sample.meta.file}: only a square target can be transposed, not {crop}")

    def apply(x: torch.Tensor) -> torch.Tensor:
        return _mirror(_transpose(x, crop) if transpose else x, dims, crop)

    kspace = fft2c(apply(ifft2c(sample.kspace))).to(sample.kspace.dtype)
    target = None if sample.target is None else torch.flip(sample.target.transpose(-2, -1) if transpose
                                                           else sample.target, dims)
    meta = sample.meta
    if transpose:
        meta = replace(meta, padding_left=None, padding_right=None)
    elif -1 in dims and meta.padding_left is not None and meta.padding_right is not None:
        meta = replace(meta, **_mirrored_padding(meta.padding_left, meta.padding_right, sample.shape[1]))
    return replace(sample, kspace=kspace, target=target, maps=None if sample.maps is None else apply(sample.maps),
                   meta=meta)
