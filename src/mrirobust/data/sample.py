"""The `Sample` type: what readers produce and methods consume.

Conventions shared by every module (docs/architecture.md):
- k-space is complex64 with shape (coils, H, W) for one sample and (batch, coils, H, W) batched;
  H is the readout (frequency-encode) direction, W the phase-encode direction.
- a 1-D column mask is bool with shape (W,), a 2-D mask (H, W); batched masks are (batch, 1, 1, W)
  and (batch, 1, H, W) (`physics.masks.stack_masks`), so they broadcast over coils.
- images are real (H, W) / (batch, H, W); complex images where a method needs the phase.
- the target is the reference magnitude image (fastMRI `reconstruction_rss`, usually a centre
  crop of the RSS of the fully sampled coil images).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mrirobust.errors import DataError
from mrirobust.physics.masks import Columns, MaskSpec, Seed, acquired_only, seed_from_filename

NO_TARGET = ("has no reconstruction_rss target to score against (test/challenge files carry none; "
             "score on train/val files)")


@dataclass(frozen=True)
class SampleMeta:
    """Where a sample came from and what SSIM needs to score it."""

    file: str
    slice: int
    acquisition: str = ""
    anatomy: str = ""
    patient_id: str = ""
    max_value: float | None = None  # the target volume's maximum (fastMRI attr `max`), SSIM data_range
    encoded_size: tuple[int, int, int] | None = None  # (x, y, z) from the ISMRMRD header
    recon_size: tuple[int, int, int] | None = None
    padding_left: int | None = None  # fastMRI: encoded k-space columns that were zero-padded
    padding_right: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One 2-D multi-coil slice: k-space, an optional mask, target and coil maps, and metadata.

    `mask` is set for test/challenge files that are already under-sampled; for fully sampled
    data it is None and the experiment draws a mask.
    """

    kspace: torch.Tensor  # (coils, H, W) complex64
    meta: SampleMeta
    target: torch.Tensor | None = None  # (h, w) float32
    mask: torch.Tensor | None = None  # (W,) or (H, W) bool
    maps: torch.Tensor | None = None  # (coils, H, W) complex64

    @property
    def num_coils(self) -> int:
        return int(self.kspace.shape[-3])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.kspace.shape[-2]), int(self.kspace.shape[-1])

    def require_target(self) -> torch.Tensor:
        """The target, or DataError naming the file when it has none (scoring needs it)."""
        if self.target is None:
            raise DataError(self.meta.file, f"slice {self.meta.slice} {NO_TARGET}")
        return self.target

    def to(self, device: torch.device | str) -> "Sample":
        """The same sample with its tensors on `device`."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, kspace=move(self.kspace), target=move(self.target),
                       mask=move(self.mask), maps=move(self.maps))


def draw_mask(sample: Sample, spec: MaskSpec, seed: Seed | None = None) -> tuple[torch.Tensor, Seed | None]:
    """The sample's own mask (test files, seed None) or one drawn from `spec` ((W,), or (H, W) for poisson).

    The default seed is fastMRI's per-file seed (the same mask for every slice of a volume, as
    fastMRI's validation transforms use); training passes its own seeds. Columns outside the
    acquired k-space (the header's padding) are never sampled, as in fastMRI's VarNet transform.
    """
    if sample.mask is not None:
        return sample.mask.bool(), None
    if seed is None:
        seed = seed_from_filename(Path(sample.meta.file).name)
    return acquired_only(spec.draw(tuple(sample.shape), seed=seed), acquired_columns(sample.meta)), seed


def acquired_columns(meta: SampleMeta) -> Columns:
    """The header's acquired columns [padding_left, padding_right), or None (no padding recorded)."""
    left, right = meta.padding_left, meta.padding_right
    return None if left is None or right is None else (left, right)
