"""The multi-coil forward operator A = M F S and its adjoint.

y_i = M F S_i x: S_i complex coil maps, F the centred orthonormal 2-D FFT (`fft2c`), M a bool
sampling mask. Plain torch ops on the inputs' device, so autograd differentiates through A
(the attacks need that) and one code path serves CPU and GPU.
"""

from __future__ import annotations

import torch

from mrirobust.errors import ShapeError
from mrirobust.physics.fft import fft2c, ifft2c
from mrirobust.physics.masks import check_mask


class MultiCoilOperator:
    """A = M F S for a batch of slices: maps (B, C, H, W) complex, mask broadcasting against them."""

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor) -> None:
        if maps.ndim != 4 or not maps.is_complex():
            raise ShapeError(f"coil maps must be complex (batch, coils, H, W), got {maps.dtype} {tuple(maps.shape)}")
        self.maps = maps
        self.mask = check_mask(mask, maps.shape).to(maps.device)

    @property
    def device(self) -> torch.device:
        return self.maps.device

    @property
    def dtype(self) -> torch.dtype:
        return self.maps.dtype

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (B, H, W) of the images this operator acts on."""
        batch, _, height, width = self.maps.shape
        return batch, height, width

    def _check_image(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-2:] != self.maps.shape[-2:] or x.shape[0] not in (1, self.maps.shape[0]):
            raise ShapeError(f"image of shape {tuple(x.shape)} does not fit coil maps {tuple(self.maps.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, H, W) -> masked multi-coil k-space (B, C, H, W)."""
        self._check_image(x)
        return fft2c(self.maps * x[:, None]) * self.mask

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """k-space (B, C, H, W) -> image (B, H, W): sum_i conj(S_i) F^H M y_i."""
        if y.ndim != 4 or y.shape[-3:] != self.maps.shape[-3:]:
            raise ShapeError(f"k-space of shape {tuple(y.shape)} does not fit coil maps {tuple(self.maps.shape)}")
        return (self.maps.conj() * ifft2c(y * self.mask)).sum(dim=-3)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x, applying the mask once since M^H M = M."""
        self._check_image(x)
        return (self.maps.conj() * ifft2c(fft2c(self.maps * x[:, None]) * self.mask)).sum(dim=-3)

    __call__ = forward


@torch.no_grad()
def power_norm(
    op: MultiCoilOperator, shape: tuple[int, ...] | None = None, iters: int = 30, seed: int = 0
) -> torch.Tensor:
    """Estimate ||A||^2 (largest eigenvalue of A^H A) per batch element by power iteration.

    Solvers use 1 / ||A||^2 as a step size, so this is detached from autograd. `shape` is the
    image shape (B, H, W), by default `op.image_shape`; `seed` makes the start vector reproducible.
    """
    shape = tuple(op.image_shape if shape is None else shape)
    generator = torch.Generator(device=op.device).manual_seed(seed)
    x = torch.randn(shape, generator=generator, device=op.device, dtype=op.dtype)
    dims = tuple(range(1, len(shape)))
    x = x / torch.linalg.vector_norm(x, dim=dims, keepdim=True)
    norm = torch.zeros(shape[0], device=op.device, dtype=x.real.dtype)
    for _ in range(iters):
        x = op.normal(x)
        norm = torch.linalg.vector_norm(x, dim=dims)
        x = x / norm.clamp_min(torch.finfo(norm.dtype).tiny).reshape(-1, *[1] * len(dims))
    return norm
