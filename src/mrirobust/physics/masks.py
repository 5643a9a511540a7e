"""Sampling masks.

Convention: a mask is a bool tensor that broadcasts against k-space (batch, coils, H, W) by
plain torch broadcasting. One slice's column mask is (W,) (every row of a sampled column), a
2-D mask (H, W); batched masks are (batch, 1, 1, W) and (batch, 1, H, W) (`stack_masks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from mrirobust.errors import ConfigError, ShapeError


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


Columns = tuple[int, int] | None  # the acquired k-space columns [left, right); None: every column


def acquired_only(mask: torch.Tensor, columns: Columns) -> torch.Tensor:
    """`mask` (any shape ending in W) without the columns outside the acquired k-space: fastMRI's
    zero-padded columns hold no data, so a mask never samples them (as fastMRI's VarNet transform)."""
    if columns is None:
        return mask
    keep = torch.zeros(mask.shape[-1], dtype=torch.bool, device=mask.device)
    keep[columns[0]:columns[1]] = True
    return mask & keep


def stack_masks(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-slice masks, (W,) or (H, W), into a batch that broadcasts over coils."""
    stacked = torch.stack([m.bool() for m in masks])
    if stacked.ndim == 2:  # column masks
        return stacked[:, None, None, :]
    return stacked[:, None, :, :]


# --- 1-D column masks with fastMRI's semantics -------------------------------------------------
#
# fastMRI's mask functions (fastmri.data.subsample) are reproduced bit for bit: the same draws
# from a numpy RandomState in the same order, so a file seeded with `seed_from_filename` gets the
# mask that fastMRI's transforms would give it. Masks are built on the host (a few hundred
# columns, once per file) and then moved to `device`.

COLUMN_KINDS = ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction")
POISSON = "poisson"  # the 2-D variable-density Poisson-disc mask (below); an (H, W) mask
MASK_KINDS = (*COLUMN_KINDS, POISSON)

Seed = int | tuple[int, ...] | None


def seed_from_filename(name: str) -> tuple[int, ...]:
    """fastMRI's per-file seed: the character codes of the file name (e.g. 'file1000001.h5')."""
    return tuple(map(ord, name))


@dataclass(frozen=True)
class MaskSpec:
    """A fastMRI-style mask family: column masks, or `poisson` 2-D Poisson-disc masks.

    Each call picks one (centre fraction, acceleration): the pair at one random index, or with
    `allow_any_combination` one of each independently, exactly as fastMRI's `MaskFunc` does.
    A poisson mask's calibration box is the centre fraction of each axis (`draw`).
    """

    kind: str
    center_fractions: tuple[float, ...]
    accelerations: tuple[int, ...]
    allow_any_combination: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ConfigError("mask kind", f"unknown {self.kind!r}; choose one of {', '.join(MASK_KINDS)}")
        fractions = tuple(float(f) for f in self.center_fractions)
        accelerations = tuple(self.accelerations)
        if not fractions or not accelerations:
            raise ConfigError("center_fractions/accelerations", "give at least one of each")
        if len(fractions) != len(accelerations) and not self.allow_any_combination:
            raise ConfigError(
                "center_fractions/accelerations",
                f"{len(fractions)} centre fractions but {len(accelerations)} accelerations; they must "
                "pair up unless allow_any_combination is set",
            )
        for fraction in fractions:
            if not 0 < fraction < 1:
                raise ConfigError("center_fractions", f"{fraction} is not in (0, 1)")
        for acceleration in accelerations:
            if isinstance(acceleration, bool) or int(acceleration) != acceleration or acceleration < 1:
                raise ConfigError("accelerations", f"{acceleration} is not an integer >= 1")
        object.__setattr__(self, "center_fractions", fractions)
        object.__setattr__(self, "accelerations", tuple(int(a) for a in accelerations))

    def describe(self) -> str:
        """A compact label recorded with results, e.g. "random 4x cf0.08"."""
        pairs = ",".join(f"{a}x cf{f:g}" for a, f in zip(self.accelerations, self.center_fractions))
        any_combination = " any-combination" if self.allow_any_combination else ""
        return f"{self.kind} {pairs}{any_combination}"

    @property
    def two_dimensional(self) -> bool:
        return self.kind == POISSON

    def draw(self, shape: tuple[int, int], seed: Seed = None, *,
             device: torch.device | str | None = None) -> torch.Tensor:
        """A mask for k-space of `shape` (H, W): (W,) for the column kinds, (H, W) for poisson."""
        if not self.two_dimensional:
            return self.sample(shape[-1], seed=seed, device=device)[0]
        fraction, acceleration = self._choose(np.random.RandomState(seed))
        calib = tuple(max(1, round(n * fraction)) for n in shape)
        return poisson_disc_mask(tuple(shape), float(acceleration), calib=calib, seed=seed, device=device)

    def check_width(self, width: int) -> None:
        """ConfigError('acceleration') unless every setting is achievable on `width` columns.

        The fully sampled centre alone must fit in the width / acceleration budget; otherwise the
        mask would be labelled with an acceleration it cannot have (1000x on 368 columns is 12.7x).
        """
        pairs = ([(f, a) for f in self.center_fractions for a in self.accelerations] if self.allow_any_combination
                 else list(zip(self.center_fractions, self.accelerations)))
        for fraction, acceleration in pairs:
            num_low = 1 if self.kind == "magic_fraction" else round(width * fraction)
            if acceleration > width or max(num_low, 1) * acceleration > width:
                most = width / max(num_low, 1)
                raise ConfigError("acceleration", f"{acceleration}x is not achievable on {width} k-space columns "
                                                  f"with centre fraction {fraction:g} ({num_low} centre columns "
                                                  f"allow at most {most:.1f}x)")

    def sample(
        self,
        width: int,
        seed: Seed = None,
        offset: int | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Draw a bool (width,) column mask and its number of fully sampled centre columns.

        `seed` None draws fresh entropy. `offset` fixes the first sampled outer column of the
        equispaced and magic kinds (fastMRI draws it when None); `random` ignores it. A poisson
        mask has no columns: ConfigError (use `draw`).
        """
        if self.two_dimensional:
            raise ConfigError("mask type", "poisson is a 2-D mask, not a column mask; this step needs a column "
                                           f"mask ({', '.join(COLUMN_KINDS)})")
        if offset is not None and offset < 0:
            raise ConfigError("offset", f"{offset} is negative")
        rng = np.random.RandomState(seed)
        fraction, acceleration = self._choose(rng)
        num_low = round(width * fraction)
        if self.kind == "magic_fraction":
            num_low, acceleration = _magic_fraction_budget(width, num_low, acceleration)
        if num_low >= width:
            raise ConfigError("center_fractions", f"centre fraction {fraction} covers all {width} columns")
        outer = _OUTER_COLUMNS[self.kind](rng, width, acceleration, offset, num_low)
        mask = _centre_columns(width, num_low) | outer
        return torch.from_numpy(mask).to(device), num_low

    def _choose(self, rng: np.random.RandomState) -> tuple[float, int]:
        if self.allow_any_combination:
            fraction = float(rng.choice(self.center_fractions))
            acceleration = int(rng.choice(self.accelerations))
            return fraction, acceleration
        index = rng.randint(len(self.center_fractions))
        return self.center_fractions[index], self.accelerations[index]


def mask_spec(kind: str, center_fraction: float, acceleration: int) -> MaskSpec:
    """A MaskSpec with a single (centre fraction, acceleration) setting."""
    return MaskSpec(kind, (center_fraction,), (acceleration,))


def _centre_columns(width: int, num_low: int) -> np.ndarray:
    """`num_low` contiguous columns around the centre (fastMRI's placement for odd remainders)."""
    mask = np.zeros(width, dtype=bool)
    start = (width - num_low + 1) // 2
    mask[start : start + num_low] = True
    return mask


def _random_columns(
    rng: np.random.RandomState, width: int, acceleration: int, offset: int | None, num_low: int
) -> np.ndarray:
    """Each column with the probability that makes the expected total width / acceleration."""
    probability = (width / acceleration - num_low) / (width - num_low)
    return rng.uniform(size=width) < probability


def _equispaced_columns(
    rng: np.random.RandomState, width: int, acceleration: int, offset: int | None, num_low: int
) -> np.ndarray:
    """Every `acceleration`-th column from `offset` (the centre is added on top)."""
    if offset is None:
        offset = rng.randint(0, high=acceleration)
    mask = np.zeros(width, dtype=bool)
    mask[offset::acceleration] = True
    return mask


def _equispaced_fraction_columns(
    rng: np.random.RandomState, width: int, acceleration: int, offset: int | None, num_low: int
) -> np.ndarray:
    """Columns at a fractional spacing chosen so centre + outer hit width / acceleration on average.

    The rounded positions are not exactly equispaced (fastMRI issue #54); kept because fastMRI's
    public multi-coil test masks were made this way.
    """
    if num_low * acceleration >= width:
        raise ConfigError(
            "center_fractions",
            f"{num_low} centre columns already reach acceleration {acceleration} for width {width}; "
            "equispaced_fraction needs centre fraction < 1 / acceleration",
        )
    spacing = acceleration * (width - num_low) / (width - num_low * acceleration)
    if offset is None:
        offset = rng.randint(0, high=round(spacing))
    mask = np.zeros(width, dtype=bool)
    mask[np.around(np.arange(offset, width - 1, spacing)).astype(np.int64)] = True
    return mask


def _magic_columns(
    rng: np.random.RandomState, width: int, acceleration: int, offset: int | None, num_low: int
) -> np.ndarray:
    """Defazio's offset sampling: equispaced on each side of the centre, the two sides offset.

    Column `width // 2 + i` (i >= 0) and column `width // 2 - 1 - i` are the positive and negative
    frequency sides; the sides start at different phases so that, by conjugate symmetry, the
    missing columns of one side are observed mirrored on the other.
    """
    if offset is None:
        offset = rng.randint(0, high=acceleration)
    first_positive, first_negative = (offset + 1, offset + 2) if offset % 2 == 0 else (offset + 2, offset - 1)
    centre = width // 2
    positive = np.arange(width - centre)  # column centre + i, i >= 0
    negative = np.arange(centre)  # column centre - 1 - i
    mask = np.zeros(width, dtype=bool)
    mask[centre + positive] = _every(acceleration, positive, first_positive)
    mask[centre - 1 - negative] = _every(acceleration, negative, first_negative)
    return mask


def _every(step: int, index: np.ndarray, first: int) -> np.ndarray:
    """`index[first::step]` as a boolean mask over `index`."""
    return (index >= first) & ((index - first) % step == 0)


def _magic_fraction_budget(width: int, num_low: int, acceleration: int) -> tuple[int, int]:
    """fastMRI's magic_fraction: clamp the centre to the column budget, space the rest to fill it."""
    budget = round(width / acceleration)
    num_low = max(min(num_low, budget), 1)
    outer = budget - num_low
    if outer <= 0:
        raise ConfigError(
            "center_fractions",
            f"magic_fraction at acceleration {acceleration} on width {width} leaves no columns outside "
            f"the {num_low} centre columns; lower the centre fraction or the acceleration",
        )
    return num_low, round(width / outer)


_OUTER_COLUMNS = {
    "random": _random_columns,
    "equispaced": _equispaced_columns,
    "equispaced_fraction": _equispaced_fraction_columns,
    "magic": _magic_columns,
    "magic_fraction": _magic_columns,
}


# --- 2-D variable-density Poisson-disc masks ---------------------------------------------------
#
# For data with two phase-encoded axes (k_y, k_z). Samples keep a minimum distance r(p) that grows
# linearly with the distance of p from the calibration box, r = 1 + slope * rho (rho in [0, 1] at
# the box edge .. border), so density falls off like 1 / r^2, as in sigpy.mri.poisson. The slope
# is solved for the requested acceleration with a density model, corrected by each sampled count.


def poisson_disc_mask(
    shape: tuple[int, int],
    acceleration: float,
    *,
    calib: tuple[int, int] = (24, 24),
    seed: Seed,
    crop_corner: bool = True,
    tol: float = 0.05,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A bool (H, W) variable-density Poisson-disc mask with a fully sampled calibration box.

    Acceleration is H * W / (number of samples), reached within relative `tol`. `crop_corner`
    leaves out the corners beyond the ellipse inscribed in k-space (sigpy's default).
    """
    height, width = shape
    if height < 1 or width < 1:
        raise ConfigError("shape", f"{tuple(shape)} is not a positive 2-D shape")
    if not 0 <= calib[0] <= height or not 0 <= calib[1] <= width:
        raise ConfigError("calib", f"calibration box {tuple(calib)} does not fit in {tuple(shape)}")
    if acceleration <= 1:
        raise ConfigError("acceleration", f"{acceleration} must be greater than 1")
    rho, fixed, spacing = _poisson_geometry(height, width, calib)
    free = ~fixed & (rho < 1 if crop_corner else True)
    target = height * width / acceleration
    if fixed.sum() >= target * (1 + tol):
        raise ConfigError("acceleration", f"{acceleration} is too high for a {tuple(calib)} calibration box")
    # Cap the slope so that the radius grows by at most 1/2 per unit distance, which keeps the
    # dart-throwing windows small (see `_dart_throw`).
    max_slope = 0.5 / _growth(rho, spacing)
    cell = spacing[0] * spacing[1]  # k-space area of one pixel in scaled units
    priority = np.random.default_rng(seed).random(shape)
    packing = 0.55  # samples per r^2 of area in a maximal packing on the grid (fitted, refined below)
    for _ in range(8):
        slope = _solve_slope(rho[free], cell, packing, target - fixed.sum(), max_slope)
        radius = 1 + slope * rho
        mask = _dart_throw(radius, spacing, fixed, free, priority)
        achieved = height * width / mask.sum()
        if abs(achieved - acceleration) <= tol * acceleration:
            return torch.from_numpy(mask).to(device)
        predicted = _expected_samples(rho[free], slope, cell, packing)
        packing *= (mask.sum() - fixed.sum()) / predicted
    raise ConfigError(
        "acceleration",
        f"could not reach {acceleration} on {tuple(shape)} (last {achieved:.2f}); a radius >= 1 pixel "
        "cannot give densities between 1 and about 1/2, so low accelerations may be out of reach",
    )


def _poisson_geometry(height: int, width: int, calib: tuple[int, int]):
    """Normalised distance from the calibration box, the box itself, and per-axis pixel spacing.

    Distances are measured in units where both axes span max(H, W), so that radii scale with each
    axis' length and an (H, W) mask has the same relative density along both axes.
    """
    axes = []
    for n, c in ((height, calib[0]), (width, calib[1])):
        outside = np.maximum(np.abs(np.arange(n) - n // 2) - c / 2, 0)
        axes.append(outside / max(outside.max(), 1))
    rho = np.hypot(axes[0][:, None], axes[1][None, :])
    fixed = np.zeros((height, width), dtype=bool)
    top, left = height // 2 - calib[0] // 2, width // 2 - calib[1] // 2
    fixed[top : top + calib[0], left : left + calib[1]] = True
    longest = max(height, width)
    return rho, fixed, (longest / height, longest / width)


def _expected_samples(rho: np.ndarray, slope: float, cell: float, packing: float) -> float:
    """Model of the sample count: density packing / r^2 per unit area, at most one per pixel."""
    return float(np.minimum(1, packing * cell / (1 + slope * rho) ** 2).sum())


def _solve_slope(rho: np.ndarray, cell: float, packing: float, count: float, max_slope: float) -> float:
    """Bisect the slope at which the model gives `count` samples (it falls as the slope grows)."""
    if _expected_samples(rho, max_slope, cell, packing) > count:
        return max_slope
    low, high = 0.0, max_slope
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if _expected_samples(rho, middle, cell, packing) > count else (low, middle)
    return (low + high) / 2


def _dart_throw(
    radius: np.ndarray,
    spacing: tuple[float, float],
    fixed: np.ndarray,
    free: np.ndarray,
    priority: np.ndarray,
) -> np.ndarray:
    """Maximal variable-radius Poisson-disc set on the grid, in parallel rounds.

    Each round drops candidates closer than their radius to an accepted point (a Euclidean
    distance transform), then accepts every candidate whose priority is lowest among candidates
    within the largest radius it can conflict with, r(p) / (1 - |grad r|): no two accepted in one
    round conflict. Every accepted p keeps distance >= r(p) from all points accepted before or
    with it, so any pair is at least min(r(p), r(q)) apart, as in Bridson's variable-density
    sampling.
    """
    growth = _growth(radius, spacing)
    if growth >= 1:
        raise ValueError(f"radius grows too fast ({growth:.2f} per unit distance) for parallel rounds")
    accepted = fixed.copy()
    alive = free.copy()
    windows = np.ceil(radius / (1 - growth)).astype(np.int64)
    while alive.any():
        if accepted.any():
            alive &= ndimage.distance_transform_edt(~accepted, sampling=spacing) >= radius
        candidates = np.where(alive, priority, np.inf)
        lowest = np.full(radius.shape, np.inf)
        for window in np.unique(windows[alive]):
            here = alive & (windows == window)
            size = tuple(2 * int(window / s) + 1 for s in spacing)
            lowest[here] = ndimage.minimum_filter(candidates, size=size, mode="constant", cval=np.inf)[here]
        chosen = alive & (candidates == lowest)
        accepted |= chosen
        alive &= ~chosen
    return accepted


def _growth(values: np.ndarray, spacing: tuple[float, float]) -> float:
    """Largest change of `values` per unit distance between grid neighbours."""
    return max(np.abs(np.diff(values, axis=axis)).max(initial=0) / spacing[axis] for axis in (0, 1))
