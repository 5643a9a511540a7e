"""Zero-filled and CG-SENSE baselines on simulated multi-coil data (sigpy phantom and coil maps)."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy as sp
import sigpy.mri
import torch

from mrirobust.methods.base import build, checked_reconstruct
from mrirobust.methods.baselines import CGSense, ZeroFilled, conjugate_gradient
from mrirobust.physics.combine import rss
from mrirobust.physics.espirit import EspiritSettings
from mrirobust.physics.fft import ifft2c
from mrirobust.physics.masks import stack_masks
from mrirobust.physics.operator import MultiCoilOperator

N, COILS = 64, 8


def _phantom(dtype: torch.dtype = torch.complex64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shepp-Logan image with a smooth phase (1, N, N), birdcage maps (1, C, N, N), full k-space."""
    numpy_dtype = np.complex64 if dtype == torch.complex64 else np.complex128
    image = torch.from_numpy(sp.shepp_logan((N, N), dtype=numpy_dtype))[None]
    image = image * torch.exp(1j * torch.linspace(0, 1, N)).to(dtype)
    maps = torch.from_numpy(sp.mri.birdcage_maps((COILS, N, N), dtype=numpy_dtype))[None]
    kspace = MultiCoilOperator(maps, torch.ones(N, dtype=torch.bool)).forward(image)
    return image, maps, kspace


def _mask(offset: int) -> torch.Tensor:
    """Equispaced 4x column mask starting at `offset`, plus 8 centre columns.

    Equispaced rather than random: with N = 64 a random mask leaves gaps that 8 smooth birdcage
    coils cannot bridge, so SENSE would not converge to the image.
    """
    mask = torch.zeros(N, dtype=torch.bool)
    mask[offset::4] = True
    mask[N // 2 - 4 : N // 2 + 4] = True
    return mask


def _nmse(estimate: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(estimate - target) ** 2 / torch.linalg.vector_norm(target) ** 2)


def test_zero_filled_fully_sampled_is_rss_of_coil_images() -> None:
    image, maps, kspace = _phantom()
    recon = checked_reconstruct(build("zero-filled"), kspace, torch.ones(N, dtype=torch.bool))
    torch.testing.assert_close(recon, rss(maps * image[:, None]), rtol=1e-5, atol=1e-5)


def test_sense_fully_sampled_recovers_image() -> None:
    image, maps, kspace = _phantom()
    recon = checked_reconstruct(CGSense(iters=10, l2=0.0), kspace, torch.ones(N, dtype=torch.bool), maps=maps)
    assert _nmse(recon, image.abs()) < 1e-10


def test_cg_data_residual_decreases_and_sense_beats_zero_filled() -> None:
    image, maps, kspace = _phantom()
    mask = _mask(0)
    op = MultiCoilOperator(maps, mask)
    y = kspace * mask
    misfits = [
        float(torch.linalg.vector_norm(op.forward(conjugate_gradient(op.normal, op.adjoint(y), k)[0]) - y))
        for k in range(0, 12)
    ]
    assert all(later <= earlier * (1 + 1e-5) for earlier, later in zip(misfits, misfits[1:]))
    _, norms = conjugate_gradient(op.normal, op.adjoint(y), 30)
    assert norms.shape == (31, 1) and norms[-1, 0] < 1e-2 * norms[0, 0]

    sense = checked_reconstruct(CGSense(iters=40, l2=0.0), y, mask, maps=maps)
    zero_filled = checked_reconstruct(ZeroFilled(), y, mask)
    assert _nmse(sense, image.abs()) < 0.05 * _nmse(zero_filled, image.abs())


def test_cg_tolerance_stops_early() -> None:
    _, maps, kspace = _phantom()
    op = MultiCoilOperator(maps, _mask(1))
    _, norms = conjugate_gradient(op.normal, op.adjoint(kspace), 100, tol=1e-2)
    assert len(norms) < 101 and norms[-1, 0] <= 1e-2 * norms[0, 0]


def test_sense_matches_sigpy_sense_recon() -> None:
    image, maps, kspace = _phantom(torch.complex128)
    mask = _mask(2)
    y = kspace * mask
    ours = CGSense(iters=15, l2=1e-3).reconstruct(y, mask, maps=maps)
    reference = sp.mri.app.SenseRecon(
        y[0].numpy(), maps[0].numpy(), lamda=1e-3, weights=mask.numpy().astype(float), max_iter=15, show_pbar=False
    ).run()
    np.testing.assert_allclose(ours[0].numpy(), np.abs(reference), rtol=1e-6, atol=1e-8)


def test_batch_with_different_masks_equals_single_runs() -> None:
    _, maps, kspace = _phantom()
    masks = [_mask(1), _mask(2)]
    kspace2, maps2 = kspace.repeat(2, 1, 1, 1), maps.repeat(2, 1, 1, 1)
    method = CGSense(iters=20)
    batched = method.reconstruct(kspace2, stack_masks(masks), maps=maps2)
    for b, mask in enumerate(masks):
        single = method.reconstruct(kspace, mask, maps=maps)
        torch.testing.assert_close(batched[b : b + 1], single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", [ZeroFilled(), CGSense(iters=5)], ids=["zero-filled", "sense"])
def test_baselines_are_differentiable_in_kspace(method) -> None:
    _, maps, kspace = _phantom()
    mask = _mask(3)
    y = (kspace * mask).requires_grad_()
    method.reconstruct(y, mask, maps=maps).sum().backward()
    assert method.differentiable and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_sense_default_maps_come_from_espirit() -> None:
    pytest.importorskip("mrirobust.physics.espirit")
    image, _, kspace = _phantom()
    mask = _mask(0)
    recon = checked_reconstruct(CGSense(iters=30, espirit=EspiritSettings(calib_size=8, kernel_size=4)), kspace * mask, mask)
    zero_filled = rss(ifft2c(kspace * mask))
    assert _nmse(recon, image.abs()) < _nmse(zero_filled, image.abs())


def test_zero_filled_sense_matches_sigpy_adjoint_over_map_energy() -> None:
    """|A^H y| / sum_i |S_i|^2 with sigpy's SENSE operator as the reference, under-sampled."""
    image, maps, kspace = _phantom()
    mask = _mask(1)
    recon = checked_reconstruct(build("zero-filled-sense"), kspace * mask, mask, maps=maps)
    sense = sp.mri.linop.Sense(maps[0].numpy(), weights=mask.numpy().astype(np.float32))
    reference = np.abs(sense.H * (kspace[0] * mask).numpy()) / (np.abs(maps[0].numpy()) ** 2).sum(axis=0)
    np.testing.assert_allclose(recon[0].numpy(), reference, rtol=1e-4, atol=1e-5)
    full = checked_reconstruct(build("zero-filled-sense"), kspace, torch.ones(N, dtype=torch.bool), maps=maps)
    torch.testing.assert_close(full, image.abs(), rtol=1e-4, atol=1e-5)  # fully sampled: the image itself


def test_zero_filled_sense_with_espirit_maps_equals_rss_when_fully_sampled() -> None:
    """ESPIRiT maps are unit-norm over coils, so for S x data the SENSE combination is the RSS where kept."""
    _, _, kspace = _phantom()
    full = torch.ones(N, dtype=torch.bool)
    method = build("zero-filled-sense", espirit={"calib_size": 16, "kernel_size": 4, "crop": 0.0})
    torch.testing.assert_close(checked_reconstruct(method, kspace, full), rss(ifft2c(kspace)), rtol=2e-3, atol=2e-3)
