"""Column masks against fastMRI's mask functions; Poisson-disc masks by property and against sigpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastmri.data.subsample import create_mask_for_mask_type
from fastmri.data.transforms import VarNetDataTransform
from scipy import ndimage
from scipy.spatial import cKDTree

from mrirobust.errors import ConfigError
from mrirobust.physics.masks import (
    COLUMN_KINDS,
    MaskSpec,
    _dart_throw,
    _poisson_geometry,
    mask_spec,
    poisson_disc_mask,
    seed_from_filename,
)

WIDTHS = (368, 372, 396, 320)  # k-space 640x368, 640x372, 768x396, 320x320
SEEDS = range(51)
SETTINGS = [((0.08,), (4,)), ((0.04,), (8,))]
NAMES = ("file1000001.h5", "file_brain_AXT2_200_2000019.h5", "x")


def assert_matches_fastmri(spec: MaskSpec, width: int, seed, offset=None) -> None:
    reference = type(create_mask_for_mask_type(spec.kind, [0.08], [4]))(
        list(spec.center_fractions), list(spec.accelerations), spec.allow_any_combination
    )
    expected, expected_low = reference((1, 640, width, 2), offset, seed)
    mask, num_low = spec.sample(width, seed, offset)
    assert mask.dtype == torch.bool and mask.shape == (width,)
    assert torch.equal(mask, expected.flatten().bool()), (spec, width, seed, offset)
    assert num_low == expected_low


@pytest.mark.parametrize("kind", COLUMN_KINDS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_matches_fastmri_over_seeds_and_widths(kind, setting):
    spec = MaskSpec(kind, *setting)
    for width in WIDTHS:
        for seed in SEEDS:
            assert_matches_fastmri(spec, width, seed)


@pytest.mark.parametrize("kind", COLUMN_KINDS)
@pytest.mark.parametrize("any_combination", [False, True])
def test_matches_fastmri_with_several_settings(kind, any_combination):
    accelerations = (4, 8, 6) if any_combination else (4, 8)
    spec = MaskSpec(kind, (0.08, 0.04), accelerations, allow_any_combination=any_combination)
    for width in WIDTHS:
        for seed in SEEDS:
            assert_matches_fastmri(spec, width, seed)
    # both centre fractions are drawn at some seed, so the choice itself was compared too
    assert {spec.sample(368, seed)[1] for seed in SEEDS} == {29, 15}


@pytest.mark.parametrize("kind", COLUMN_KINDS)
def test_matches_fastmri_with_tuple_seeds_and_offsets(kind):
    for accelerations, fraction in [(4, 0.08), (8, 0.04), (3, 0.1), (5, 0.06), (6, 0.05), (10, 0.04)]:
        spec = mask_spec(kind, fraction, accelerations)
        for width in (*WIDTHS, 33, 34):
            for name in NAMES:
                assert_matches_fastmri(spec, width, seed_from_filename(name))
            for offset in range(accelerations + 2):
                assert_matches_fastmri(spec, width, 7, offset)


def test_per_file_seed_matches_fastmri_transform():
    kspace = np.ones((2, 4, 372), dtype=np.complex64)
    attrs = {"padding_left": 0, "padding_right": 372, "recon_size": (320, 320), "max": 1.0}
    for kind in COLUMN_KINDS:
        spec = mask_spec(kind, 0.08, 4)
        transform = VarNetDataTransform(create_mask_for_mask_type(kind, [0.08], [4]))
        for name in NAMES:
            expected = transform(kspace, None, None, attrs, name, 0)
            mask, num_low = spec.sample(372, seed_from_filename(name))
            assert torch.equal(mask, expected.mask.flatten())
            assert num_low == expected.num_low_frequencies


def test_masks_have_the_nominal_acceleration():
    masks = torch.stack([mask_spec("random", 0.08, 4).sample(368, seed)[0] for seed in SEEDS])
    assert masks.float().mean().item() == pytest.approx(1 / 4, rel=0.03)
    mask, num_low = mask_spec("equispaced_fraction", 0.08, 4).sample(368, 0)
    assert mask.sum().item() == pytest.approx(368 / 4, abs=2) and num_low == 29
    assert mask[(368 - 29 + 1) // 2 :][:29].all()


@pytest.mark.parametrize(
    ("kind", "fractions", "accelerations", "field"),
    [
        ("gaussian", (0.08,), (4,), "mask kind"),
        ("random", (0.08,), (0,), "accelerations"),
        ("random", (0.08,), (2.5,), "accelerations"),
        ("random", (0.0,), (4,), "center_fractions"),
        ("random", (1.0,), (4,), "center_fractions"),
        ("random", (0.08, 0.04), (4,), "center_fractions/accelerations"),
    ],
)
def test_rejects_bad_settings(kind, fractions, accelerations, field):
    with pytest.raises(ConfigError) as error:
        MaskSpec(kind, fractions, accelerations)
    assert error.value.field == field


@pytest.mark.parametrize(("kind", "fraction"), [("equispaced_fraction", 0.25), ("equispaced_fraction", 0.3),
                                                ("magic_fraction", 0.3)])
def test_rejects_centre_that_fills_the_budget_like_fastmri(kind, fraction):
    """fastMRI fails (division by zero or an empty random range) where these raise ConfigError."""
    with pytest.raises((ValueError, ZeroDivisionError)):
        create_mask_for_mask_type(kind, [fraction], [4])((1, 640, 320, 2), None, 0)
    with pytest.raises(ConfigError):
        mask_spec(kind, fraction, 4).sample(320, 0)


def test_rejects_negative_offset():
    with pytest.raises(ConfigError):
        mask_spec("equispaced", 0.08, 4).sample(320, 0, offset=-1)


# --- Poisson disc ------------------------------------------------------------------------------


def radial_bands(shape, calib, edges=(0.25, 0.5, 0.75, 1.0)):
    rho, fixed, _ = _poisson_geometry(*shape, calib)
    return [(~fixed) & (rho >= low) & (rho < high) for low, high in zip((0.0, *edges[:-1]), edges)]


def test_poisson_is_seeded():
    first = poisson_disc_mask((96, 80), 6, calib=(16, 16), seed=3)
    assert torch.equal(first, poisson_disc_mask((96, 80), 6, calib=(16, 16), seed=3))
    assert not torch.equal(first, poisson_disc_mask((96, 80), 6, calib=(16, 16), seed=4))


@pytest.mark.parametrize(("shape", "acceleration", "calib"),
                         [((320, 320), 8, (24, 24)), ((128, 128), 4, (16, 16)), ((97, 66), 6, (12, 9))])
def test_poisson_acceleration_and_calibration(shape, acceleration, calib):
    mask = poisson_disc_mask(shape, acceleration, calib=calib, seed=0)
    assert mask.dtype == torch.bool and mask.shape == shape
    assert mask.numel() / mask.sum().item() == pytest.approx(acceleration, rel=0.1)
    top, left = shape[0] // 2 - calib[0] // 2, shape[1] // 2 - calib[1] // 2
    box = mask[top : top + calib[0], left : left + calib[1]]
    assert box.shape == calib and box.all()


def test_poisson_density_falls_with_radius():
    mask = poisson_disc_mask((128, 128), 8, calib=(16, 16), seed=1).numpy()
    fractions = [mask[band].mean() for band in radial_bands((128, 128), (16, 16))]
    assert fractions[0] > 2 * fractions[-1]
    assert all(inner > outer for inner, outer in zip(fractions, fractions[1:]))


@pytest.mark.parametrize("slope", [0.5, 2.0, 4.0])
def test_dart_throwing_is_a_maximal_poisson_disc_set(slope):
    shape, calib = (90, 60), (12, 10)
    rho, fixed, spacing = _poisson_geometry(*shape, calib)
    free = ~fixed & (rho < 1)
    radius = 1 + slope * rho
    mask = _dart_throw(radius, spacing, fixed, free, np.random.default_rng(0).random(shape))
    assert (mask[fixed]).all() and not mask[~fixed & ~free].any()
    # every pair of samples, one outside the box, is at least the smaller of their radii apart
    points = np.argwhere(mask) * np.array(spacing)
    outside = ~fixed[mask]
    radii = radius[mask]
    pairs = np.array(sorted(cKDTree(points).query_pairs(radii.max())))
    pairs = pairs[outside[pairs].any(axis=1)]
    distance = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
    assert (distance >= radii[pairs].min(axis=1) - 1e-9).all()
    assert len(pairs) > 0 and (distance < radii[pairs].max(axis=1) * 1.5).any()  # the check has teeth
    # maximal: every free pixel left out is closer than its radius to a sample
    nearest = ndimage.distance_transform_edt(~mask, sampling=spacing)
    assert (nearest[free & ~mask] < radius[free & ~mask]).all()


def test_poisson_density_profile_resembles_sigpy():
    sigpy_mri = pytest.importorskip("sigpy.mri")
    shape, calib, acceleration = (128, 128), (16, 16), 8
    ours = poisson_disc_mask(shape, acceleration, calib=calib, seed=0).numpy()
    theirs = np.abs(sigpy_mri.poisson(shape, acceleration, calib=calib, seed=0)) > 0
    assert ours.size / ours.sum() == pytest.approx(theirs.size / theirs.sum(), rel=0.1)
    for band in radial_bands(shape, calib):
        # sigpy floors continuous positions to the grid, so it is denser just outside the box
        assert ours[band].mean() == pytest.approx(theirs[band].mean(), abs=0.15)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"acceleration": 1.0}, "acceleration"), ({"acceleration": 200.0}, "acceleration"),
     ({"acceleration": 4.0, "calib": (200, 10)}, "calib")],
)
def test_poisson_rejects_impossible_settings(kwargs, field):
    with pytest.raises(ConfigError) as error:
        poisson_disc_mask((64, 64), seed=0, **kwargs)
    assert error.value.field == field
