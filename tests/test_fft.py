"""Centred FFTs and cropping against fastMRI, plus unitarity."""

from __future__ import annotations

import fastmri
import pytest
import torch
from fastmri.data.transforms import center_crop as fastmri_center_crop

from mrirobust.physics.fft import center_crop, fft2c, ifft2c

SHAPES = [(5, 7), (6, 8), (7, 6), (2, 3, 9, 6), (3, 1, 8, 11)]


def random_complex(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=torch.complex128, generator=generator)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("ours", "theirs"), [(fft2c, fastmri.fft2c), (ifft2c, fastmri.ifft2c)])
def test_matches_fastmri(shape, ours, theirs):
    x = random_complex(shape)
    expected = torch.view_as_complex(theirs(torch.view_as_real(x)).contiguous())
    torch.testing.assert_close(ours(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_unitary(shape):
    x = random_complex(shape, seed=1)
    k = fft2c(x)
    torch.testing.assert_close(torch.linalg.vector_norm(k), torch.linalg.vector_norm(x))
    torch.testing.assert_close(ifft2c(k), x)
    torch.testing.assert_close(fft2c(ifft2c(x)), x)


@pytest.mark.parametrize(("height", "width"), [(6, 8), (7, 5)])
def test_centred_delta_has_flat_spectrum(height, width):
    """The image centre (index n // 2) is the origin of the centred transform."""
    x = torch.zeros(height, width, dtype=torch.complex64)
    x[height // 2, width // 2] = 1
    expected = torch.full((height, width), (height * width) ** -0.5, dtype=torch.complex64)
    torch.testing.assert_close(fft2c(x), expected)
    torch.testing.assert_close(ifft2c(x), expected)


def test_batch_is_independent():
    x = random_complex((4, 2, 6, 5), seed=2)
    torch.testing.assert_close(fft2c(x)[3, 1], fft2c(x[3, 1]))


@pytest.mark.parametrize("size", [(9, 6), (8, 7), (3, 1, 10, 11)])
@pytest.mark.parametrize("crop", [(4, 4), (5, 3), (1, 1), (8, 6)])
def test_center_crop_matches_fastmri(size, crop):
    x = torch.arange(torch.Size(size).numel(), dtype=torch.float32).reshape(size)
    assert torch.equal(center_crop(x, crop), fastmri_center_crop(x, crop))


def test_center_crop_rejects_larger_shape():
    with pytest.raises(ValueError):
        center_crop(torch.zeros(4, 4), (5, 4))
