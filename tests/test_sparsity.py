"""Sparsifying transforms: isometry, inverse = adjoint, references (scipy DCT, pywt Haar), soft-thresholding."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import scipy.fft
import torch

from mrirobust.errors import ConfigError
from mrirobust.methods.sparsity import DCT, Fourier, Wavelet, make_transform, soft_threshold

SHAPES = [(96, 96), (97, 90), (64, 50)]  # square, odd and not a multiple of 2^levels, non-square
TRANSFORMS = {"wavelet-db3": lambda: Wavelet("db3", 3), "wavelet-db4": lambda: Wavelet("db4", 2),
              "dct": DCT, "fourier": Fourier}


def _complex(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_isometry_perfect_reconstruction_and_adjoint(name: str, shape: tuple[int, int]) -> None:
    transform = TRANSFORMS[name]()
    x = _complex((2, *shape), 0)
    c = transform.forward(x)
    torch.testing.assert_close(torch.linalg.vector_norm(c, dim=tuple(range(1, c.ndim))),
                               torch.linalg.vector_norm(x, dim=(1, 2)), rtol=1e-12, atol=0)
    torch.testing.assert_close(transform.adjoint(c, shape), x, rtol=0, atol=1e-12)
    d = _complex(tuple(c.shape), 1)
    lhs = torch.vdot(c.flatten(), d.flatten())
    rhs = torch.vdot(x.flatten(), transform.adjoint(d, shape).flatten())
    assert abs(complex(lhs - rhs)) < 1e-10 * abs(complex(lhs))


@pytest.mark.parametrize("shape", [(96, 96), (7, 10), (640, 368)])
def test_dct_matches_scipy(shape: tuple[int, int]) -> None:
    x = _complex((2, *shape), 2)
    expected = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(DCT().forward(x).numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(DCT().adjoint(torch.from_numpy(expected), shape).numpy(), x.numpy(), atol=1e-12)


def test_haar_matches_pywt_periodization() -> None:
    """Haar has no boundary filters, so ptwt's boundary wavelets must equal pywt's periodised transform."""
    x = _complex((2, 16, 24), 3)
    ours = Wavelet("haar", 2).forward(x)
    for part, values in (("real", x.real), ("imag", x.imag)):
        approx, *details = pywt.wavedec2(values.numpy(), "haar", mode="periodization", level=2)
        bands = [approx] + [band for h, v, d in details for band in (v, h, d)]  # ptwt swaps h and v
        expected = np.concatenate([band.reshape(2, -1) for band in bands], axis=1)
        np.testing.assert_allclose(getattr(ours, part).numpy(), expected, atol=1e-12)


def test_padded_wavelet_sizes() -> None:
    assert Wavelet("db3", 3).padded_shape(97, 90) == (104, 96)
    assert Wavelet("db3", 3).forward(_complex((1, 97, 90), 4)).shape == (1, 104 * 96)


def test_soft_threshold_shrinks_magnitude_keeps_phase_and_has_finite_gradient() -> None:
    c = torch.tensor([[3 + 4j, 0.3 - 0.4j, 0j, -2j]], dtype=torch.complex128, requires_grad=True)
    out = soft_threshold(c, torch.tensor([1.0], dtype=torch.float64))
    expected = torch.tensor([[3 + 4j, 0, 0, -2j]], dtype=torch.complex128) * torch.tensor([[4 / 5, 0, 0, 1 / 2]])
    torch.testing.assert_close(out.detach(), expected)
    out.abs().sum().backward()
    assert torch.isfinite(torch.view_as_real(c.grad)).all()
    torch.testing.assert_close(c.grad[0, 2], torch.tensor(0j, dtype=torch.complex128))
    c0 = torch.zeros(1, 3, dtype=torch.complex64, requires_grad=True)  # threshold 0 at c = 0
    soft_threshold(c0, 0.0).abs().sum().backward()
    assert torch.isfinite(torch.view_as_real(c0.grad)).all()


def test_bad_settings_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="transform"):
        make_transform("curvelet")
    with pytest.raises(ConfigError, match="wavelet"):
        Wavelet("nope")
    with pytest.raises(ConfigError, match="not orthogonal"):
        Wavelet("bior2.2")
    with pytest.raises(ConfigError, match="levels"):
        Wavelet("db3", 0)
    with pytest.raises(ConfigError, match="at least"):
        Wavelet("db3", 4).forward(_complex((1, 64, 64), 5))
