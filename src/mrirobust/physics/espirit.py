"""ESPIRiT coil sensitivities (Uecker et al., MRM 2014), matching BART 0.8 `ecalib -m1`.

Steps, batched over slices and all in torch (CPU or GPU):

1. Calibration matrix: every kernel_size^2 window of the centred calib_size^2 region, one row
   per window, kernel_size^2 * C columns. Its right singular vectors with singular value above
   sqrt(threshold) * s_max span the signal subspace (BART thresholds the eigenvalues of A^H A,
   i.e. the squared singular values, at `threshold`).
2. Image-space projection operator: with w_j(x) the C-vector of the inverse DFT of kernel j, the
   per-pixel C x C operator is G(x) = sum_j w_j(x) w_j(x)^H / kernel_size^2 (eigenvalues <= 1,
   coil sensitivities are its eigenvectors with eigenvalue 1).
3. G is a trigonometric polynomial with frequencies |delta| < kernel_size (cross-correlations of
   the kernels). Like BART, we evaluate it on a 2*kernel_size grid, where that is exact, take its
   Fourier coefficients and evaluate them on the H x W pixel grid (BART's sinc zero-padding; here
   a separable DFT of 2*kernel_size terms, done in blocks of rows so memory stays bounded).
4. Per pixel the top eigenvector by repeated squaring of G (power iteration with 2^n steps in n
   batched C x C products), eigenvalue by the Rayleigh quotient; pixels with eigenvalue <= crop
   are zeroed (BART's hard crop).
5. Phase: like BART's default (no `-P`), each pixel is rotated so that the map's projection on
   the first principal component of the calibration data (a "virtual coil") is real positive;
   that component's own phase is fixed as LAPACK leaves it in BART (last coil entry real), so
   our maps equal BART's including phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mrirobust.errors import ConfigError, MriRobustError, ShapeError

_SQUARINGS = 5  # G^32, about BART's 30 orthogonal-iteration steps
_ROW_BLOCK_ELEMENTS = 2**22  # complex entries of G per block of rows (32 MiB of complex64)


@dataclass(frozen=True)
class EspiritSettings:
    """The ESPIRiT settings a method (CG-SENSE, l1) or an experiment estimates maps with.

    Defaults are BART `ecalib -m1`'s; a method's config holds them as one nested mapping
    (`espirit: {calib_size: 24, ...}`).
    """

    calib_size: int = 24
    kernel_size: int = 6
    threshold: float = 0.001
    crop: float = 0.8

    def __post_init__(self) -> None:
        if isinstance(self.calib_size, bool) or not isinstance(self.calib_size, int) or self.calib_size < 1:
            raise ConfigError("calib_size", f"{self.calib_size!r} must be an integer >= 1")
        if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int) \
                or not 1 <= self.kernel_size <= self.calib_size:
            raise ConfigError("kernel_size", f"{self.kernel_size!r} must be an integer between 1 and "
                                             f"calib_size={self.calib_size}")
        for name, value, high in (("threshold", self.threshold, 1.0), ("crop", self.crop, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < high:
                raise ConfigError(name, f"{value!r} must be a number in [0, {high:g})")

    def maps(self, kspace: torch.Tensor) -> torch.Tensor:
        """`espirit_maps` of (under-sampled) k-space with these settings."""
        return espirit_maps(kspace, calib_size=self.calib_size, kernel_size=self.kernel_size,
                            threshold=self.threshold, crop=self.crop)


def espirit_maps(
    kspace: torch.Tensor,
    *,
    calib_size: int = 24,
    kernel_size: int = 6,
    threshold: float = 0.001,
    crop: float = 0.8,
) -> torch.Tensor:
    """One set of ESPIRiT maps, (B, C, H, W) complex64, from k-space (B, C, H, W) or (C, H, W).

    Defaults are BART `ecalib -m1`'s. The calibration region is the largest fully sampled
    centred block of at most calib_size x calib_size; maps are unit-norm over coils where kept and zero where cropped.
    """
    single = kspace.ndim == 3
    batch = kspace[None] if single else kspace
    if batch.ndim != 4 or not batch.is_complex():
        raise ShapeError(
            f"k-space must be complex (B, C, H, W) or (C, H, W), got {tuple(kspace.shape)} {kspace.dtype}"
        )
    if not 1 <= kernel_size <= calib_size:
        raise ConfigError("kernel_size", f"{kernel_size} must be between 1 and calib_size={calib_size}")
    batch = batch.to(torch.complex64)
    calib = _calibration_region(batch, calib_size, kernel_size)
    kernels = _signal_kernels(calib, kernel_size, threshold)
    coefficients = _operator_coefficients(kernels, kernel_size)
    maps = _top_eigenvectors(coefficients, batch.shape[-2:], crop)
    empty = (maps == 0).flatten(1).all(dim=1)
    if bool(empty.any()):  # one check per call: silently empty maps would zero every reconstruction
        raise MriRobustError(
            f"ESPIRiT kept no pixel (eigenvalue > crop={crop}) in slice(s) {empty.nonzero().flatten().tolist()} "
            f"with a {calib.shape[-2]}x{calib.shape[-1]} calibration region: sample more centre lines, or "
            "lower crop"
        )
    maps = _rotate_phase(maps, calib)
    maps = maps.contiguous()  # the block layout above leaves permuted strides
    return maps[0] if single else maps


def _calibration_region(kspace: torch.Tensor, size: int, kernel_size: int) -> torch.Tensor:
    """The largest centred block of at most size x size that is fully sampled in every slice.

    Like BART's ecalib, `size` is an upper bound: with fewer fully sampled centre lines (a
    narrow fastMRI centre, say) the region shrinks to them, down to the kernel size.
    """
    height, width = kspace.shape[-2:]
    if size > height or size > width:
        raise ShapeError(f"calibration region {size}x{size} is larger than the k-space {height}x{width}")
    sampled = (kspace != 0).any(dim=1).all(dim=0)  # (H, W): measured by some coil in every slice

    def fully_sampled(h: int, w: int) -> bool:
        top, left = height // 2 - h // 2, width // 2 - w // 2
        return bool(sampled[top : top + h, left : left + w].all())

    candidates = range(size, kernel_size - 1, -1)
    w = next((w for w in candidates if fully_sampled(kernel_size, w)), 0)
    h = next((h for h in candidates if w and fully_sampled(h, w)), 0)
    if not h:
        raise MriRobustError(
            f"no fully sampled centre of at least {kernel_size}x{kernel_size} k-space positions "
            "(the ESPIRiT kernel size); ESPIRiT needs a fully sampled calibration region "
            "(use a mask with more centre lines or a smaller kernel_size)"
        )
    top, left = height // 2 - h // 2, width // 2 - w // 2
    return kspace[..., top : top + h, left : left + w]


def _signal_kernels(calib: torch.Tensor, kernel_size: int, threshold: float) -> torch.Tensor:
    """Signal-subspace k-space kernels (B, K, C, k, k); discarded ones are zero, so K is shared."""
    b, c = calib.shape[:2]
    windows = calib.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # (B, C, n, n, k, k)
    matrix = windows.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * kernel_size**2)
    _, singular, rows = torch.linalg.svd(matrix, full_matrices=False)
    keep = singular > math.sqrt(threshold) * singular[:, :1]
    kernels = rows * keep[..., None]  # rows of Vh span the windows' row space
    return kernels.reshape(b, -1, c, kernel_size, kernel_size)


def _operator_coefficients(kernels: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Fourier coefficients R(delta) of G(x) = sum_delta R(delta) e^{2 pi i delta x}, (B, C, C, g, g).

    Computed on a g = 2*kernel_size grid, which holds every delta in (-kernel_size, kernel_size)
    without aliasing; index i of the last two axes is delta = i for i < g/2, else i - g.
    """
    grid = 2 * kernel_size
    images = torch.fft.ifft2(kernels, s=(grid, grid), norm="forward")  # sum_d v(d) e^{+2 pi i d x}
    gram = torch.einsum("bjcxy,bjdxy->bcdxy", images, images.conj()) / kernel_size**2
    return torch.fft.fft2(gram, norm="forward")


def _centred_exponentials(size: int, grid: int, device: torch.device) -> torch.Tensor:
    """e^{2 pi i delta x / size} for centred pixels x (fft2c convention) and the grid's deltas, (size, grid)."""
    x = torch.arange(size, device=device, dtype=torch.float64) - size // 2
    delta = torch.fft.fftfreq(grid, 1.0 / grid, device=device, dtype=torch.float64)
    return torch.exp(2j * math.pi * torch.outer(x, delta) / size).to(torch.complex64)


def _top_eigenvectors(coefficients: torch.Tensor, shape: torch.Size, crop: float) -> torch.Tensor:
    """Per-pixel top eigenvector of G(x), zeroed where its eigenvalue is <= crop, (B, C, H, W)."""
    b, c, _, grid, _ = coefficients.shape
    height, width = shape
    device = coefficients.device
    rows_e = _centred_exponentials(height, grid, device)
    cols_e = _centred_exponentials(width, grid, device)
    along_cols = torch.einsum("bcdpq,wq->pbwcd", coefficients, cols_e).reshape(grid, -1)
    block = max(1, _ROW_BLOCK_ELEMENTS // (b * width * c * c))
    maps = torch.empty(height, b, width, c, dtype=torch.complex64, device=device)
    for start in range(0, height, block):
        rows = rows_e[start : start + block]
        gram = (rows @ along_cols).reshape(len(rows), b, width, c, c)
        maps[start : start + block] = _dominant_eigenvector(gram, crop)
    return maps.permute(1, 3, 0, 2)


def _dominant_eigenvector(gram: torch.Tensor, crop: float) -> torch.Tensor:
    """Top eigenvector of Hermitian PSD (..., C, C) matrices, times 1[eigenvalue > crop]."""
    tiny = torch.finfo(torch.float32).tiny
    power = gram
    for _ in range(_SQUARINGS):
        power = power / _trace(power).clamp_min(tiny)[..., None, None]
        power = power @ power
    # power ~ u u^H: its column with the largest diagonal entry is the most reliable multiple of u
    column = torch.diagonal(power, dim1=-2, dim2=-1).real.argmax(dim=-1)
    vector = torch.take_along_dim(power, column[..., None, None], dim=-1)  # (..., C, 1)
    vector = gram @ vector  # one plain power step on G removes the squarings' rounding
    vector = vector / torch.linalg.vector_norm(vector, dim=-2, keepdim=True).clamp_min(tiny)
    eigenvalue = (vector.conj() * (gram @ vector)).sum(dim=-2).real
    return (vector * (eigenvalue > crop)[..., None]).squeeze(-1)


def _trace(matrices: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(matrices, dim1=-2, dim2=-1).sum(dim=-1).real


def _rotate_phase(maps: torch.Tensor, calib: torch.Tensor) -> torch.Tensor:
    """Make sum_c conj(v_c) S_c real positive per pixel, v = principal coil vector of the calibration data."""
    flat = calib.flatten(2)  # (B, C, n*n)
    _, vectors = torch.linalg.eigh(flat @ flat.conj().transpose(1, 2))
    principal = vectors[..., -1]  # (B, C), largest eigenvalue last
    principal = principal * torch.sgn(principal[:, -1:]).conj()  # LAPACK's (BART's) choice: last entry real
    projection = torch.einsum("bc,bchw->bhw", principal.conj(), maps)
    return maps * torch.sgn(projection).conj()[:, None]
