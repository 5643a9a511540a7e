"""Multi-coil simulation: targets, oversampling, SNR, against fastMRI's RSS."""

import math

import fastmri
import numpy as np
import pytest
import torch
from fastmri.data import transforms as T

from mrirobust.data.simulate import simulate_kspace
from mrirobust.errors import ShapeError
from mrirobust.physics.coils import birdcage_maps
from mrirobust.physics.fft import center_crop, ifft2c


def _image(h=32, w=24):
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return ((x**2 / 0.7 + y**2 / 0.8) < 1).float() * (1 + 0.5 * torch.cos(4 * x))


def test_normalised_maps_give_the_image_back():
    image = _image()
    maps = birdcage_maps(6, image.shape)
    kspace, target, out_maps = simulate_kspace(image, num_coils=6, seed=0, maps=maps)
    assert kspace.shape == (6, 32, 24) and kspace.dtype == torch.complex64
    torch.testing.assert_close(target, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_maps, maps)


def test_default_maps_shade_and_stay_consistent():
    image = _image()
    kspace, target, maps = simulate_kspace(image, num_coils=8, seed=1)
    shading = target[image > 0] / image[image > 0]
    assert shading.max() / shading.min() > 1.1  # coil shading, as in fastMRI RSS images
    torch.testing.assert_close((maps.abs() ** 2).sum(0), torch.ones(32, 24), atol=1e-5, rtol=0)
    # coil images are the normalised maps times one common complex image of magnitude `target`
    combined = (maps.conj() * ifft2c(kspace)).sum(0)
    torch.testing.assert_close(ifft2c(kspace), maps * combined, atol=1e-5, rtol=0)
    torch.testing.assert_close(combined.abs(), target, atol=1e-5, rtol=0)


def test_target_matches_fastmri_rss_and_oversampling_crop():
    image = _image()
    kspace, target, maps = simulate_kspace(image, num_coils=4, seed=2, snr_db=20.0, oversample=True)
    assert kspace.shape == (4, 64, 24) and maps.shape == (4, 64, 24) and target.shape == (32, 24)
    reference = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(T.to_tensor(kspace.numpy()))), dim=0)
    torch.testing.assert_close(target, T.center_crop(reference, (32, 24)), atol=1e-5, rtol=1e-5)
    # without noise the embedded image fills exactly the centre rows of the 2x field of view
    clean, clean_target, _ = simulate_kspace(image, num_coils=4, seed=2, oversample=True)
    full = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(T.to_tensor(clean.numpy()))), dim=0)
    assert full[:16].abs().max() < 1e-5 and full[48:].abs().max() < 1e-5
    torch.testing.assert_close(center_crop(full, (32, 24)), clean_target, atol=1e-5, rtol=0)


@pytest.mark.parametrize("snr_db", [10.0, 25.0])
def test_snr_is_the_requested_one(snr_db):
    image = _image(64, 64)
    clean, _, _ = simulate_kspace(image, num_coils=8, seed=5)
    noisy, _, _ = simulate_kspace(image, num_coils=8, seed=5, snr_db=snr_db)
    noise = noisy - clean
    signal_power = (ifft2c(clean).abs() ** 2).mean()  # noise-free coil images over the H x W image
    measured = 10 * math.log10(signal_power / (noise.abs() ** 2).mean())
    assert abs(measured - snr_db) < 0.1
    assert abs(noise.real.var() / noise.imag.var() - 1) < 0.05  # circular complex noise


def test_seeds_and_batches():
    image = _image()
    a = simulate_kspace(image, num_coils=3, seed=7, snr_db=15.0)[0]
    b = simulate_kspace(image, num_coils=3, seed=7, snr_db=15.0)[0]
    c = simulate_kspace(image, num_coils=3, seed=8, snr_db=15.0)[0]
    assert torch.equal(a, b) and not torch.allclose(a, c)
    batch = torch.stack([image, 2 * image])
    kspace, target, maps = simulate_kspace(batch, num_coils=3, seed=7, oversample=True)
    assert kspace.shape == (2, 3, 64, 24) and target.shape == (2, 32, 24) and maps.shape == (3, 64, 24)
    assert np.isfinite(kspace.numpy()).all()


def test_bad_inputs():
    with pytest.raises(ShapeError):
        simulate_kspace(torch.zeros(2, 3, 4, 5), num_coils=2, seed=0)
    with pytest.raises(ShapeError):
        simulate_kspace(torch.zeros(8, 8), num_coils=2, seed=0, maps=torch.ones(3, 8, 8, dtype=torch.complex64))
