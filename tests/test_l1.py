"""l1-ESPIRiT by FISTA: optimisation properties, scale invariance, autograd, and BART / sigpy references.

PSNR convention in this file: magnitude images at the full 96 x 96 k-space size against the
noise-free ground truth (RSS of the noise-free fully sampled coil images), data range = the
ground truth's maximum, MSE over all pixels (`mrirobust.metrics.psnr`).
"""

from __future__ import annotations

import numpy as np
import pytest
import sigpy.mri.app
import torch

from mrirobust.data.simulate import simulate_kspace
from mrirobust.data.synthetic import SynthConfig, render_volume
from mrirobust.errors import ConfigError
from mrirobust.methods.base import build, checked_reconstruct
from mrirobust.methods.l1 import (L1, absolute_lambda, cycle_shifts, fista, l1_objective, lipschitz_bound,
                                  normal_operator, proximal)
from mrirobust.metrics import psnr
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.masks import mask_spec
from mrirobust.physics.operator import MultiCoilOperator, power_norm
from tests.bart import bart, bart_available

N, COILS = 96, 8


@pytest.fixture(scope="module")
def knee() -> dict[str, torch.Tensor]:
    """A 96 x 96 8-coil slice (smooth synthetic brain) at 25 dB SNR, 4x equispaced mask, ESPIRiT maps once."""
    image = render_volume(SynthConfig(anatomy="brain", shape=(N, N), slices_per_volume=2, detail=0.0), 0)[:1]
    kspace, _, true_maps = simulate_kspace(image, num_coils=COILS, seed=1, snr_db=25)
    clean, truth, _ = simulate_kspace(image, num_coils=COILS, seed=1, snr_db=None)
    mask, _ = mask_spec("equispaced", 0.16, 4).sample(N, seed=0)
    y = kspace * mask
    return dict(y=y, mask=mask, maps=espirit_maps(y), truth=truth, clean=clean, true_maps=true_maps[None])


def _psnr(truth: torch.Tensor, image: torch.Tensor | np.ndarray) -> float:
    image = torch.as_tensor(np.abs(np.asarray(image))).reshape(truth.shape).to(truth.dtype)
    return float(psnr(truth, image, truth.max()))


def test_registry_traits_and_config_round_trip() -> None:
    for name, transform in (("l1", "wavelet"), ("l1-dct", "dct"), ("l1-fourier", "fourier")):
        method = build(name, lam=0.01, iters=7)
        assert type(method) is L1 and method.transform == transform and method.name == name
        assert (method.family, method.differentiable, method.optimisation_based, method.trainable) == ("l1", True, True, False)
        assert build(method.config()).config() == method.config()
    assert L1().config()["wavelet"] == "db3" and L1().config()["levels"] == 3
    with pytest.raises(ConfigError, match="lam"):
        L1(lam=-1.0)
    with pytest.raises(ConfigError, match="iters"):
        L1(iters=0)
    with pytest.raises(ConfigError, match="transform"):
        L1(transform="curvelet")


def test_fista_objective_decreases_to_the_optimum(knee) -> None:
    op = MultiCoilOperator(knee["maps"], knee["mask"])
    method = L1(lam=0.002, cycle_spinning=False)
    lam_abs = absolute_lambda(method.lam, op, knee["y"])

    def objective(iters: int) -> float:
        image = fista(op, method.sparsifier, knee["y"], lam_abs, iters)
        return float(l1_objective(op, method.sparsifier, image, knee["y"], lam_abs))

    quarter, full, optimum = objective(10), objective(40), objective(1000)
    assert optimum <= full < quarter
    assert (full - optimum) / optimum < 2e-3
    assert (quarter - optimum) / optimum > 5 * (full - optimum) / optimum
    solved = method.solve(knee["y"], knee["mask"], maps=knee["maps"])  # the class uses this same solver
    torch.testing.assert_close(float(method.objective(solved, knee["y"], knee["mask"], knee["maps"])),
                               objective(method.iters))


@pytest.mark.parametrize("transform", ["wavelet", "dct", "fourier"])
def test_lam_zero_fully_sampled_with_true_maps_reproduces_the_image(knee, transform: str) -> None:
    full = torch.ones(N, dtype=torch.bool)
    recon = checked_reconstruct(L1(lam=0.0, iters=5, transform=transform), knee["clean"], full, maps=knee["true_maps"])
    torch.testing.assert_close(recon, knee["truth"], rtol=1e-4, atol=1e-4 * float(knee["truth"].max()))


def test_batch_equals_per_slice_and_scale_invariance(knee) -> None:
    """Two slices at intensity scales 1 and 1000 (ESPIRiT inside): each equals its own run, scaled."""
    method = L1(iters=30)
    y, mask = knee["y"], knee["mask"]
    single = method.reconstruct(y, mask)
    batch = method.reconstruct(torch.cat([y, 1000 * y]), mask)
    torch.testing.assert_close(batch[:1], single, rtol=1e-4, atol=1e-5 * float(single.max()))
    torch.testing.assert_close(batch[1:], 1000 * single, rtol=1e-4, atol=1e-5 * 1000 * float(single.max()))


def test_gradient_reaches_the_input_kspace(knee) -> None:
    y = knee["y"].clone().requires_grad_(True)
    recon = L1(iters=10).reconstruct(y, knee["mask"])
    recon.square().sum().backward()
    grad = torch.view_as_real(y.grad)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def _best(psnrs: list[float], label: str) -> float:
    best = int(np.argmax(psnrs))
    assert 0 < best < len(psnrs) - 1, f"{label}: the lambda grid does not bracket the best PSNR: {psnrs}"
    return psnrs[best]


@pytest.mark.skipif(not bart_available(), reason="bart is not installed")
def test_best_psnr_within_half_a_db_of_bart_and_sigpy(knee) -> None:
    """Each method tuned on the same relative lambda grid (lambda / max|A^H y|), 100 iterations each."""
    y, mask, maps, truth = knee["y"], knee["mask"], knee["maps"], knee["truth"]
    scale = float(MultiCoilOperator(maps, mask).adjoint(y).abs().max())
    grid = [2 ** (k / 2) for k in range(-24, -13)]
    y_bart = y[0].permute(1, 2, 0).numpy()[:, :, None, :]  # BART: [x, y, z, coils]
    maps_bart = maps[0].permute(1, 2, 0).numpy()[:, :, None, :]
    weights = mask.numpy().astype(np.float32)
    ours = [_psnr(truth, L1(lam=lam, iters=100).reconstruct(y, mask, maps=maps)) for lam in grid]
    theirs_bart = [_psnr(truth, bart(f"pics -S -l1 -r {lam * scale} -i 100", y_bart, maps_bart)) for lam in grid]
    theirs_sigpy = [
        _psnr(truth, sigpy.mri.app.L1WaveletRecon(y[0].numpy(), maps[0].numpy(), lam * scale, weights=weights,
                                                  max_iter=100, show_pbar=False).run())
        for lam in grid
    ]
    best, best_bart, best_sigpy = _best(ours, "ours"), _best(theirs_bart, "bart"), _best(theirs_sigpy, "sigpy")
    assert best >= best_bart - 0.5 and best >= best_sigpy - 0.5, (best, best_bart, best_sigpy)


def test_column_normal_operator_equals_the_operator_and_passes_gradients(knee) -> None:
    """1-D FFTs on the maps' support equal A^H A for column masks (single and batched); 2-D masks fall back."""
    maps = torch.cat([knee["maps"], knee["maps"].roll(7, dims=-2)])
    maps[1, :, :9] = 0  # rows without support: skipped, and still exact
    x = torch.randn(2, N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    for mask in (knee["mask"], torch.stack([knee["mask"], knee["mask"].roll(3)])[:, None, None]):
        op = MultiCoilOperator(maps, mask)
        fast, reference = normal_operator(op)(x), op.normal(x)
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5 * float(reference.detach().abs().max()))
        (grad,) = torch.autograd.grad(fast.abs().square().sum(), x)
        (grad_reference,) = torch.autograd.grad(reference.abs().square().sum(), x)
        torch.testing.assert_close(grad, grad_reference, rtol=1e-4, atol=1e-4 * float(grad_reference.abs().max()))
    two_d = MultiCoilOperator(maps, torch.rand(N, N, generator=torch.Generator().manual_seed(1)) < 0.3)
    assert normal_operator(two_d) == two_d.normal


def test_lipschitz_bound_is_an_upper_bound_and_tight_for_espirit_maps(knee) -> None:
    op = MultiCoilOperator(knee["maps"], knee["mask"])
    estimate = power_norm(op, iters=300)
    assert (2 * estimate <= lipschitz_bound(op) * (1 + 1e-5)).all()
    assert (lipschitz_bound(op) <= 2 * estimate * 1.01).all()
    unnormalised = MultiCoilOperator(3 * knee["true_maps"], torch.ones(N, dtype=torch.bool))
    torch.testing.assert_close(lipschitz_bound(unnormalised), 2 * power_norm(unnormalised, iters=300), rtol=1e-3, atol=0)


def test_within_a_tenth_of_a_db_of_the_previous_solver(knee) -> None:
    """The previous solver (power-iteration step 1 / (2.04 ||A||^2), 2-D FFTs) at the default settings."""
    y, mask, maps, truth = knee["y"], knee["mask"], knee["maps"], knee["truth"]
    method = L1()
    op = MultiCoilOperator(maps, mask)
    rhs, lipschitz = op.adjoint(y), 2 * 1.02 * power_norm(op, iters=30)
    threshold, shifts = absolute_lambda(method.lam, op, y) / lipschitz, cycle_shifts(method.iters, 2**method.levels)
    current = extrapolated = torch.zeros_like(rhs)
    momentum = 1.0
    for shift in shifts:
        descent = extrapolated - 2 * (op.normal(extrapolated) - rhs) / lipschitz
        previous, current = current, proximal(method.sparsifier, descent, threshold, shift)
        next_momentum = (1 + (1 + 4 * momentum**2) ** 0.5) / 2
        extrapolated, momentum = current + (momentum - 1) / next_momentum * (current - previous), next_momentum
    previous_psnr, new_psnr = _psnr(truth, current), _psnr(truth, method.reconstruct(y, mask, maps=maps))
    assert abs(new_psnr - previous_psnr) < 0.1, (new_psnr, previous_psnr)


def test_precompute_reused_as_meta_gives_the_same_reconstruction(knee) -> None:
    method = L1(iters=10)
    precomputed = method.precompute(knee["y"], knee["mask"])
    assert set(precomputed) == {"maps"} and not precomputed["maps"].requires_grad
    torch.testing.assert_close(method.reconstruct(knee["y"], knee["mask"], **precomputed),
                               method.reconstruct(knee["y"], knee["mask"]), rtol=0, atol=0)
