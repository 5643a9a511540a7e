"""ESPIRiT maps: against BART `ecalib -m1`, and against the coil images they must explain."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy
import sigpy.mri
import torch

from mrirobust.errors import MriRobustError, ShapeError
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.fft import fft2c
from tests.bart import bart, bart_available, read_cfl, write_cfl

COILS = 8


def coil_images(shape: tuple[int, int], phase: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Shepp-Logan with a smooth phase times SigPy birdcage maps: (coil images (C, H, W), object mask)."""
    height, width = shape
    image = sigpy.shepp_logan(shape).astype(np.complex64)
    yy, xx = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    image = image * np.exp(1j * phase * (xx + 0.5 * yy**2)).astype(np.complex64)
    sens = sigpy.mri.birdcage_maps((COILS, height, width)).astype(np.complex64)
    return torch.from_numpy(sens * image), torch.from_numpy(np.abs(image) > 0.05)


def column_mask(width: int, centre: int, acceleration: int = 4, seed: int = 0) -> torch.Tensor:
    """A random column mask with `width / acceleration` columns in all, `centre` of them in the middle."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(width, dtype=bool)
    mask[width // 2 - centre // 2 : width // 2 - centre // 2 + centre] = True
    outer = np.flatnonzero(~mask)
    mask[rng.choice(outer, width // acceleration - centre, replace=False)] = True
    return torch.from_numpy(mask)


def bart_maps(kspace: torch.Tensor) -> torch.Tensor:
    """`bart ecalib -m1` on (C, H, W) k-space, returned as (C, H, W)."""
    maps = bart("ecalib -m1", kspace.permute(1, 2, 0).numpy()[:, :, None, :])  # [x, y, z, coils]
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(maps.reshape(*kspace.shape[1:], -1), -1, 0)))


def test_cfl_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((5, 3, 1, 4)) + 1j * rng.standard_normal((5, 3, 1, 4))).astype(np.complex64)
    write_cfl(tmp_path / "a", array)
    assert (tmp_path / "a.hdr").read_text().splitlines()[1] == "5 3 1 4"
    stored = np.fromfile(tmp_path / "a.cfl", dtype=np.complex64)
    assert np.array_equal(stored[:5], array[:, 0, 0, 0])  # column-major: the first axis runs fastest
    assert np.array_equal(read_cfl(tmp_path / "a"), array)


@pytest.mark.skipif(not bart_available(), reason="bart is not on PATH")
def test_bart_reads_our_layout() -> None:
    """bart sees our axes as we do: transposing x and y through bart equals numpy's transpose."""
    array = np.arange(12, dtype=np.complex64).reshape(3, 4) * (1 + 2j)
    assert np.array_equal(bart("transpose 0 1", array), array.T)


@pytest.mark.skipif(not bart_available(), reason="bart is not on PATH")
@pytest.mark.parametrize("shape, acceleration", [((128, 96), 1), ((160, 160), 4)])
def test_maps_match_bart_ecalib(shape: tuple[int, int], acceleration: int) -> None:
    coils, inside = coil_images(shape)
    kspace = fft2c(coils)
    if acceleration > 1:
        kspace = kspace * column_mask(shape[1], centre=28, acceleration=acceleration)
    ours, reference = espirit_maps(kspace), bart_maps(kspace)
    inner = (reference.conj() * ours).sum(0).abs()
    norms = torch.linalg.vector_norm(reference, dim=0) * torch.linalg.vector_norm(ours, dim=0)
    similarity = inner / norms.clamp_min(1e-12)
    assert similarity[inside].median() >= 0.98  # the acceptance criterion
    # beyond it: same crop and the same phase (BART's virtual-coil rotation), pixel by pixel
    kept = (norms > 0) & inside
    assert kept.sum() >= 0.9 * inside.sum()
    assert torch.linalg.vector_norm(ours - reference, dim=0)[kept].max() < 1e-2


def test_maps_explain_the_coil_images() -> None:
    coils, inside = coil_images((128, 96))
    maps = espirit_maps(fft2c(coils))
    kept = inside & (maps.abs().sum(0) > 0)
    assert kept.sum() >= 0.9 * inside.sum()
    torch.testing.assert_close(torch.linalg.vector_norm(maps, dim=0)[kept], torch.ones(int(kept.sum())))
    combined = (maps.conj() * coils).sum(0)
    rss = torch.linalg.vector_norm(coils, dim=0)
    nmse = (combined.abs() - rss)[kept].square().sum() / rss[kept].square().sum()
    assert nmse < 0.01
    residual = coils - maps * combined
    assert torch.linalg.vector_norm(residual[:, kept]) < 0.05 * torch.linalg.vector_norm(coils[:, kept])


def test_batched_equals_per_slice() -> None:
    first, _ = coil_images((128, 96), phase=1.0)
    second, _ = coil_images((128, 96), phase=-2.0)
    kspace = fft2c(torch.stack([first, second.roll(7, dims=-1)]))
    batched = espirit_maps(kspace)
    assert batched.shape == kspace.shape and batched.dtype == torch.complex64
    for b in range(2):
        torch.testing.assert_close(batched[b], espirit_maps(kspace[b]), rtol=0, atol=1e-4)


@pytest.mark.skipif(not bart_available(), reason="bart is not on PATH")
def test_calibration_region_shrinks_to_the_sampled_centre_like_bart() -> None:
    coils, _ = coil_images((128, 96))
    kspace = fft2c(coils) * column_mask(96, centre=16)
    # calib_size is an upper bound: a 16-line centre gives a 24 x 16 region, as BART's ecalib does.
    ours = espirit_maps(kspace)
    reference = bart_maps(kspace)
    inside = (ours.abs().sum(0) > 0) & (reference.abs().sum(0) > 0)
    similarity = (ours.conj() * reference).sum(0).abs() / (ours.norm(dim=0) * reference.norm(dim=0)).clamp_min(1e-12)
    assert float(similarity[inside].median()) >= 0.98
    with pytest.raises(MriRobustError, match="no fully sampled centre"):
        espirit_maps(fft2c(coils) * column_mask(96, centre=4))


def test_empty_maps_are_an_error_not_zeros() -> None:
    coils, _ = coil_images((128, 96))
    with pytest.raises(MriRobustError, match="kept no pixel"):
        espirit_maps(fft2c(coils), crop=1.01)  # no eigenvalue exceeds 1
    with pytest.raises(ShapeError, match="larger than the k-space"):
        espirit_maps(fft2c(coils)[:, :20, :20])
