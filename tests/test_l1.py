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
from mrirobust.methods.l1 import L1, absolute_lambda, fista, l1_objective
from mrirobust.metrics import psnr
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.masks import mask_spec
from mrirobust.physics.operator import MultiCoilOperator
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
