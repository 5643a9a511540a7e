"""Coil combination against fastMRI (RSS) and on simulated coil data (SENSE combination)."""

from __future__ import annotations

import fastmri
import numpy as np
import pytest
import sigpy as sp
import sigpy.mri
import torch

from mrirobust.errors import ShapeError
from mrirobust.physics.combine import rss, sense_combine, zero_filled_rss
from tests.helper import random_tensor


@pytest.mark.parametrize("dim", [0, 1, -3])
def test_rss_real_matches_fastmri(dim: int) -> None:
    x = random_tensor((3, 4, 5, 6), dtype=torch.float32, seed=1)
    torch.testing.assert_close(rss(x, dim=dim), fastmri.rss(x, dim=dim))


def test_rss_complex_matches_fastmri() -> None:
    x = random_tensor((2, 4, 8, 6), seed=2)
    torch.testing.assert_close(rss(x, dim=1), fastmri.rss_complex(torch.view_as_real(x), dim=1))


def test_zero_filled_rss_matches_fastmri_pipeline() -> None:
    kspace = random_tensor((2, 4, 8, 6), seed=3)
    mask = torch.tensor([True, False, True, True, False, True])
    masked = torch.view_as_real(kspace * mask)
    expected = fastmri.rss_complex(fastmri.ifft2c(masked), dim=1)
    torch.testing.assert_close(zero_filled_rss(kspace, mask), expected)


def _simulated(nc: int = 4, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Shepp-Logan image (1, n, n) and birdcage maps (1, nc, n, n) (sigpy normalises their RSS to
    one), zeroed outside a disc."""
    image = torch.from_numpy(sp.shepp_logan((n, n), dtype=np.complex64))[None]
    maps = torch.from_numpy(sp.mri.birdcage_maps((nc, n, n), dtype=np.complex64))[None]
    yy, xx = torch.meshgrid(torch.arange(n) - n / 2, torch.arange(n) - n / 2, indexing="ij")
    support = (yy**2 + xx**2) < (0.45 * n) ** 2
    return image, maps * support


def test_sense_combine_recovers_image_for_unnormalised_maps() -> None:
    image, maps = _simulated()
    maps = maps * torch.linspace(0.2, 3.0, maps.shape[-1])  # energy varies across the image
    recovered = sense_combine(maps * image[:, None], maps)
    support = (maps.abs() ** 2).sum(1) > 0
    torch.testing.assert_close(recovered[support], image[support], rtol=1e-5, atol=1e-6)
    assert torch.all(recovered[~support] == 0)


def test_sense_combine_gradients_are_finite_off_support() -> None:
    image, maps = _simulated(nc=2, n=16)
    coil_images = (maps * image[:, None]).requires_grad_()
    sense_combine(coil_images, maps).abs().sum().backward()
    assert torch.isfinite(coil_images.grad).all()


def test_sense_combine_matches_rss_for_normalised_maps() -> None:
    # With sum |S|^2 = 1 and a real positive image, |SENSE| equals RSS of the coil images.
    image, maps = _simulated()
    image = image.abs()
    coil_images = maps * image[:, None]
    torch.testing.assert_close(sense_combine(coil_images, maps).abs(), rss(coil_images), rtol=1e-5, atol=1e-6)


def test_sense_combine_shape_error() -> None:
    with pytest.raises(ShapeError, match="coil maps"):
        sense_combine(random_tensor((1, 3, 4, 4)), random_tensor((1, 2, 4, 4)))
