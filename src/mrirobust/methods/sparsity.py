"""Sparsifying transforms for l1 reconstruction, and complex soft-thresholding.

Each transform maps complex images (B, H, W) to complex coefficients (B, ...) and back, and is an
isometry (||H x|| = ||x||, adjoint = left inverse). Where it is also onto (unitary: always for
the DCT and Fourier, for wavelets when H and W are divisible by 2^levels), H^H soft(H x) is the
exact proximal step of ||H x||_1.

- `Wavelet`: orthogonal Daubechies-family wavelets from ptwt's matrix transform with
  orthogonalised boundary filters (no wrap-around, unitary on sizes divisible by 2^levels).
  Other sizes are zero-padded at the bottom/right to the next multiple of 2^levels and cropped
  back (an isometry, not unitary). Real and imaginary parts are transformed separately.
- `DCT`: the orthonormal 2-D DCT-II (scipy's `dctn(norm="ortho")`), computed with torch FFTs.
- `Fourier`: the centred unitary 2-D FFT (the paper's appendix A.3 variant).
"""

from __future__ import annotations

import math
import warnings
from typing import Protocol

import ptwt
import pywt
import torch

from mrirobust.errors import ConfigError, ShapeError
from mrirobust.physics.fft import fft2c, ifft2c

TRANSFORMS = ("wavelet", "dct", "fourier")


class SparsifyingTransform(Protocol):
    """An isometry from complex images (B, H, W) to complex coefficients (B, ...)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def adjoint(self, c: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Coefficients -> images (B, H, W) of size `shape` = (H, W)."""
        ...


def soft_threshold(c: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """Shrink magnitudes by `threshold` (scalar or per batch element, (B,)), keep the phase.

    Written as c * relu(|c| - t) / |c| so that autograd stays finite at c = 0 (where the
    gradient is 0), unlike the form c - t sgn(c) selected by torch.where.
    """
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.reshape(-1, *[1] * (c.ndim - 1))
    magnitude = c.abs()
    scale = torch.relu(magnitude - threshold) / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny)
    return c * scale


def _check_image(x: torch.Tensor) -> None:
    if x.ndim != 3 or not x.is_complex():
        raise ShapeError(f"expected complex images (B, H, W), got {x.dtype} {tuple(x.shape)}")


class Fourier:
    """The centred unitary 2-D FFT: sparsity in k-space (the paper's Fourier variant)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        return fft2c(x)

    def adjoint(self, c: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        return ifft2c(c)


def _dct(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Orthonormal DCT-II along `dim` of complex x, from the 2N FFT of its even extension.

    With v = [x, flip(x)], V = fft(v): X[k] = exp(-i pi k / 2N) V[k] / 2 for k < N, which holds
    for complex x (no real-part trick), so real and imaginary parts need no separate passes.
    """
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    spectrum = torch.fft.fft(torch.cat([x, x.flip(-1)], dim=-1), dim=-1)[..., :n]
    k = torch.arange(n, device=x.device, dtype=x.real.dtype)
    weights = torch.full((n,), math.sqrt(2 / n), device=x.device, dtype=x.real.dtype)
    weights[0] = math.sqrt(1 / n)
    out = spectrum * torch.polar(weights / 2, -math.pi * k / (2 * n))
    return out.movedim(-1, dim)


def _idct(c: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse (= transpose) of `_dct`: x[n] = sum_k w_k c[k] cos(pi k (2n + 1) / 2N).

    Writing cos as two exponentials gives one length-2N inverse FFT of
    b = [2 a_0, a_k e^{i pi k/2N} (0 < k < N), 0, a_k e^{-i pi k/2N} at 2N - k], a_k = w_k c[k].
    """
    c = c.movedim(dim, -1)
    n = c.shape[-1]
    k = torch.arange(n, device=c.device, dtype=c.real.dtype)
    weights = torch.full((n,), math.sqrt(2 / n), device=c.device, dtype=c.real.dtype)
    weights[0] = 2 * math.sqrt(1 / n)
    a = c * weights
    up = a * torch.polar(torch.ones_like(k), math.pi * k / (2 * n))
    down = (a * torch.polar(torch.ones_like(k), -math.pi * k / (2 * n)))[..., 1:].flip(-1)
    b = torch.cat([up, torch.zeros_like(a[..., :1]), down], dim=-1)
    x = torch.fft.ifft(b, dim=-1)[..., :n] * n
    return x.movedim(-1, dim)


class DCT:
    """The orthonormal 2-D DCT-II of complex images (equals scipy.fft.dctn(norm="ortho"))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        return _dct(_dct(x, -1), -2)

    def adjoint(self, c: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        return _idct(_idct(c, -2), -1)


class Wavelet:
    """Orthogonal 2-D wavelet transform (ptwt boundary-filter matrices); coefficients (B, N) packed.

    Packed order: approximation, then the detail triples from coarse to fine, as pywt's
    `wavedec2` (periodization mode for Haar) but with each triple's first two bands swapped.
    ptwt's matrices depend on size, device and dtype, so they are cached per combination.
    """

    def __init__(self, name: str = "db3", levels: int = 3) -> None:
        try:
            wavelet = pywt.Wavelet(name)
        except ValueError:
            raise ConfigError("wavelet", f"unknown wavelet {name!r}; e.g. db1..db38, sym2.., coif1..") from None
        if not wavelet.orthogonal:
            raise ConfigError("wavelet", f"{name!r} is not orthogonal; soft-thresholding needs an orthogonal one")
        if isinstance(levels, bool) or int(levels) != levels or levels < 1:
            raise ConfigError("levels", f"{levels} is not an integer >= 1")
        self.name, self.levels = name, int(levels)
        self._filter_length = wavelet.dec_len
        self._cache: dict[tuple, tuple[ptwt.MatrixWavedec2, ptwt.MatrixWaverec2]] = {}

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        """The size the image is zero-padded to: the next multiples of 2^levels."""
        block = 2**self.levels
        return -(-height // block) * block, -(-width // block) * block

    def _matrices(self, shape: tuple[int, int], x: torch.Tensor) -> tuple[ptwt.MatrixWavedec2, ptwt.MatrixWaverec2]:
        key = (shape, x.device, x.real.dtype)
        if key not in self._cache:
            coarsest = min(shape) // 2**self.levels
            if coarsest < self._filter_length:
                raise ConfigError("levels", f"{self.levels} levels of {self.name} need images of at least "
                                            f"{self._filter_length * 2**self.levels} pixels a side, got {shape}")
            decompose, recompose = ptwt.MatrixWavedec2(self.name, self.levels), ptwt.MatrixWaverec2(self.name)
            with warnings.catch_warnings():  # ptwt's sparse-tensor "beta" notices, once per build
                warnings.simplefilter("ignore", UserWarning)
                recompose(decompose(torch.zeros(1, *shape, device=x.device, dtype=x.real.dtype)))  # builds both
            self._cache[key] = (decompose, recompose)
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x)
        height, width = x.shape[-2:]
        padded = self.padded_shape(height, width)
        x = torch.nn.functional.pad(x, (0, padded[1] - width, 0, padded[0] - height))
        decompose, _ = self._matrices(padded, x)
        coefficients = decompose(torch.cat([x.real, x.imag]))
        parts = [coefficients[0]] + [band for detail in coefficients[1:] for band in detail]
        flat = torch.cat([part.flatten(1) for part in parts], dim=1)
        return torch.complex(*flat.chunk(2))

    def adjoint(self, c: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        padded = self.padded_shape(*shape)
        _, recompose = self._matrices(padded, c)
        flat = torch.cat([c.real, c.imag])
        sizes = [(padded[0] >> level, padded[1] >> level) for level in range(self.levels, 0, -1)]
        counts = [sizes[0][0] * sizes[0][1]] + [3 * h * w for h, w in sizes]
        pieces = flat.split(counts, dim=1)
        coefficients = [pieces[0].reshape(-1, *sizes[0])]
        for piece, size in zip(pieces[1:], sizes):
            coefficients.append(tuple(band.reshape(-1, *size) for band in piece.chunk(3, dim=1)))
        image = torch.complex(*recompose(tuple(coefficients)).chunk(2))
        return image[..., : shape[0], : shape[1]]


def make_transform(name: str, wavelet: str = "db3", levels: int = 3) -> SparsifyingTransform:
    """A transform by name: "wavelet" (with `wavelet`, `levels`), "dct" or "fourier"."""
    if name == "wavelet":
        return Wavelet(wavelet, levels)
    if name == "dct":
        return DCT()
    if name == "fourier":
        return Fourier()
    raise ConfigError("transform", f"unknown {name!r}; choose from {', '.join(TRANSFORMS)}")
