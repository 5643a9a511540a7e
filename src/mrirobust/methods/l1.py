"""l1-regularised SENSE reconstruction (compressed sensing), solved by FISTA.

    min_x  sum_i ||y_i - M F S_i x||^2 + lam_abs ||H x||_1

S are ESPIRiT maps of the under-sampled k-space (or meta `maps=`), H a sparsifying transform
(`sparsity.py`: wavelet, DCT or Fourier). FISTA's proximal step H^H soft(H v) is exact for unitary
H (DCT, Fourier, wavelets on sizes divisible by 2^levels; other sizes are zero-padded, where it is
the usual approximation). Wavelets use cycle spinning by default, like BART's `pics -l1` random
shifts: step k thresholds in the shifted basis W R_k (shifts drawn once from a fixed seed). That
removes the blocking of a shift-variant basis (+0.7 dB PSNR on the test phantom, on par with BART)
but means no single objective is minimised; `cycle_spinning=False` gives plain FISTA.

Scale-free lambda: lam_abs = lam * max_pixels |A^H y| per slice. Scaling y by s scales A^H y and
lam_abs by s, so the minimiser (and every FISTA iterate) scales by s: one tuned `lam` transfers
across files of different intensity scales, and slices of a batch do not influence each other.

The step is 1 / L with L = 2 max_pixels sum_i |S_i|^2 >= 2 ||A||^2 (`lipschitz_bound`: the mask is a
projection and F unitary, so ||A x||^2 <= ||S x||^2 <= max sum_i |S_i|^2 ||x||^2; for ESPIRiT maps
it is 2 and within 0.1% of power iteration), free where 30 power iterations cost a third of a
100-iteration solve. For column masks A^H A needs only 1-D FFTs along the phase-encode axis
(`normal_operator`: F^H M F = F_W^H M F_W, since M commutes with the readout FFT), about half the
FFT work. The iteration count is fixed (no convergence test, no host sync), so autograd
differentiates the whole solve end to end. ESPIRiT maps computed here are constants for autograd
(computed from detached k-space): the method is then a differentiable function of y for fixed
maps. `precompute` returns the per-measurement work (the maps) for callers that reconstruct the
same measurement many times (attack steps, eps values, feature placements) to pass back as meta.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mrirobust.methods.base import Reconstructor, register, register_preset
from mrirobust.methods.settings import at_least, one_of
from mrirobust.methods.sparsity import TRANSFORMS, SparsifyingTransform, make_transform, soft_threshold
from mrirobust.physics.espirit import EspiritSettings
from mrirobust.physics.operator import MultiCoilOperator


def absolute_lambda(lam: float, op: MultiCoilOperator, kspace: torch.Tensor) -> torch.Tensor:
    """lam_abs = lam * max |A^H y| per slice, shape (B,)."""
    return lam * op.adjoint(kspace).abs().flatten(1).amax(dim=1)


def l1_objective(
    op: MultiCoilOperator, transform: SparsifyingTransform, image: torch.Tensor, kspace: torch.Tensor,
    lam_abs: torch.Tensor,
) -> torch.Tensor:
    """||A x - y||^2 + lam_abs ||H x||_1 per slice, shape (B,)."""
    misfit = (op.forward(image) - kspace * op.mask).abs().square().flatten(1).sum(dim=1)
    return misfit + lam_abs * transform.forward(image).abs().flatten(1).sum(dim=1)


def proximal(
    transform: SparsifyingTransform, image: torch.Tensor, threshold: torch.Tensor, shift: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """H^H soft(H x, t) with H = W R, R a circular shift: the exact prox of t ||H x||_1 for unitary W."""
    shifted = image.roll(shift, dims=(-2, -1))
    shrunk = transform.adjoint(soft_threshold(transform.forward(shifted), threshold), tuple(image.shape[-2:]))
    return shrunk.roll((-shift[0], -shift[1]), dims=(-2, -1))


def cycle_shifts(iters: int, period: int, seed: int = 0) -> list[tuple[int, int]]:
    """A reproducible per-iteration shift (dy, dx) in [0, period)^2 for cycle spinning."""
    generator = torch.Generator().manual_seed(seed)
    return [tuple(pair) for pair in torch.randint(period, (iters, 2), generator=generator).tolist()]


def lipschitz_bound(op: MultiCoilOperator) -> torch.Tensor:
    """L = 2 max_pixels sum_i |S_i|^2 per slice (B,): a Lipschitz constant of the data term's gradient."""
    bound = 2 * op.maps.detach().abs().square().sum(dim=-3).flatten(1).amax(dim=1)
    return bound.clamp_min(torch.finfo(bound.dtype).tiny)


def normal_operator(op: MultiCoilOperator) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> A^H A x; with a column mask by 1-D FFTs along W, else `op.normal`.

    With a column mask each readout row is independent, so rows where every map is zero (outside
    ESPIRiT's support; about a quarter of an oversampled knee) are skipped: their output is zero.
    The centred shifts leave the coil loop: ifftshift is applied once to the maps and the mask
    (here) and to the image (per call), fftshift once to the coil-summed result.
    """
    mask = op.mask
    if mask.ndim >= 2 and mask.shape[-2] != 1:
        return op.normal
    rows = op.maps.detach().abs().sum(dim=(0, 1, 3)).nonzero().flatten()  # one host sync per solve
    maps = torch.fft.ifftshift(op.maps.index_select(-2, rows), dim=-1)
    conj_maps = maps.conj()
    mask = torch.fft.ifftshift(mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape)), dim=-1).to(maps.real.dtype)

    def normal(x: torch.Tensor) -> torch.Tensor:
        # in place on the FFTs' fresh outputs (autograd keeps only the constant factors): two
        # coil-sized temporaries fewer, about 2x faster on a CPU
        image = torch.fft.ifftshift(x.index_select(-2, rows), dim=-1)
        coils = torch.fft.fft(maps * image[:, None], dim=-1, norm="ortho").mul_(mask)
        combined = torch.fft.ifft(coils, dim=-1, norm="ortho").mul_(conj_maps).sum(dim=-3)
        return torch.zeros_like(x).index_copy(-2, rows, torch.fft.fftshift(combined, dim=-1))

    return normal


def fista(
    op: MultiCoilOperator, transform: SparsifyingTransform, kspace: torch.Tensor, lam_abs: torch.Tensor,
    iters: int, shifts: list[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """`iters` FISTA steps from zero; returns the complex image (B, H, W).

    `shifts`, one per iteration, make the transform of step k the shifted W R_k (cycle spinning,
    as BART's random shifts, but reproducible): each step is still an exact proximal step, but the
    problem changes from step to step, so then no single objective is minimised.
    """
    rhs = op.adjoint(kspace)
    normal = normal_operator(op)
    lipschitz = lipschitz_bound(op)  # (B,), detached
    step = (2 / lipschitz).reshape(-1, 1, 1)  # 1 / L times the gradient's factor 2
    threshold = lam_abs / lipschitz
    current = torch.zeros_like(rhs)
    previous, extrapolated, momentum = current, current, 1.0
    for k in range(iters):
        descent = extrapolated - step * (normal(extrapolated) - rhs)
        previous, current = current, proximal(transform, descent, threshold, shifts[k] if shifts else (0, 0))
        next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
        extrapolated = current + ((momentum - 1) / next_momentum) * (current - previous)
        momentum = next_momentum
    return current


@register("l1")
@dataclass
class L1(Reconstructor):
    """l1-ESPIRiT reconstruction; `transform` "wavelet" (db3, 3 levels, as the authors), "dct", "fourier".

    `lam` is relative (see the module docstring); `cycle_spinning` applies to wavelets only;
    ESPIRiT settings are BART `ecalib -m1`'s.
    """

    lam: float = 0.002
    iters: int = 100
    transform: str = "wavelet"
    wavelet: str = "db3"
    levels: int = 3
    cycle_spinning: bool = True
    espirit: EspiritSettings = EspiritSettings()
    sparsifier: SparsifyingTransform = field(init=False, repr=False, compare=False)

    family = "l1"
    differentiable = True
    optimisation_based = True

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        at_least(settings, 0, "lam")
        at_least(settings, 1, "iters", "levels")
        one_of(settings, "transform", TRANSFORMS)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sparsifier = make_transform(self.transform, self.wavelet, self.levels)

    def operator(self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None) -> MultiCoilOperator:
        """A = M F S with the given maps, or ESPIRiT maps of the (detached) under-sampled k-space."""
        if maps is None:
            with torch.no_grad():
                maps = self.espirit.maps(kspace.detach() * mask.to(kspace.device))
        return MultiCoilOperator(maps.to(device=kspace.device, dtype=kspace.dtype), mask)

    def precompute(self, kspace: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-measurement work, {"maps": ESPIRiT maps}, to pass back as meta (`**precomputed`).

        For callers that reconstruct one measurement many times (PGD steps, eps values, feature
        placements): maps are then those of the clean measurement instead of being re-estimated
        from each perturbed one. The step size needs no precompute (`lipschitz_bound` is free).
        """
        return {"maps": self.operator(kspace, mask).maps}

    def solve(self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None) -> torch.Tensor:
        """The complex image (B, H, W) after `iters` FISTA steps."""
        op = self.operator(kspace, mask, maps)
        shifts = cycle_shifts(self.iters, 2**self.levels) if self.cycle_spinning and self.transform == "wavelet" else None
        return fista(op, self.sparsifier, kspace, absolute_lambda(self.lam, op, kspace), self.iters, shifts)

    def objective(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """This method's loss of a complex image (B, H, W) given k-space and maps, per slice (B,).

        Without cycle spinning, `solve` minimises it; with it, this is the unshifted basis' loss.
        """
        op = self.operator(kspace, mask, maps)
        return l1_objective(op, self.sparsifier, image, kspace, absolute_lambda(self.lam, op, kspace))

    def reconstruct(
        self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None, **meta: Any
    ) -> torch.Tensor:
        return self.solve(kspace, mask, maps).abs()

    # --- the two-step attack's protocol (mrirobust.robustness.attacks.OptimisationAttackable) ---
    def attack_variables(
        self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None, **meta: Any
    ) -> list[torch.Tensor]:
        """[v, maps, scale, energy]: the image x = scale v starts at this method's solution.

        scale = max |A^H y| per slice keeps v of order one, so one optimiser step size fits every
        intensity scale; only v requires grad. Maps, scale (hence lam_abs = lam scale) and the
        data energy ||y||^2 are fixed from the clean data.
        """
        with torch.no_grad():
            op = self.operator(kspace, mask, maps)
            scale = op.adjoint(kspace).abs().flatten(1).amax(dim=1).clamp_min(torch.finfo(kspace.real.dtype).tiny)
            image = self.solve(kspace, mask, op.maps) / scale.reshape(-1, 1, 1)
            energy = (kspace * op.mask).abs().square().flatten(1).sum(dim=1).clamp_min(torch.finfo(scale.dtype).tiny)
        return [image.requires_grad_(), op.maps, scale, energy]

    def attack_image(self, variables: list[torch.Tensor]) -> torch.Tensor:
        """|x| = |scale v|, (B, H, W)."""
        image, _, scale, _ = variables
        return (scale.reshape(-1, 1, 1) * image).abs()

    def attack_loss(self, variables: list[torch.Tensor], kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(||A x - y||^2 + lam_abs ||H x||_1) / ||y_clean||^2 per slice: the objective, scale-free."""
        image, maps, scale, energy = variables
        op = MultiCoilOperator(maps, mask)
        return l1_objective(op, self.sparsifier, scale.reshape(-1, 1, 1) * image, kspace, self.lam * scale) / energy


# Appendix A.3's l1 variants: the orthonormal 2-D DCT and the unitary 2-D Fourier transform.
register_preset("l1-dct", L1, {"transform": "dct"})
register_preset("l1-fourier", L1, {"transform": "fourier"})
