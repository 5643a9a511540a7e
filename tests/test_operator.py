"""The multi-coil operator A = M F S: adjointness, linearity, normal operator, sigpy, ||A||^2."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy as sp
import sigpy.mri
import torch

from mrirobust.errors import ShapeError
from mrirobust.physics.operator import MultiCoilOperator, power_norm
from tests.helper import assert_adjoint, assert_linear, assert_normal, random_tensor

B, C, H, W = 2, 3, 12, 10


def _masks() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {
        "column": torch.rand(W, generator=generator) > 0.5,
        "2d": torch.rand(H, W, generator=generator) > 0.5,
        "batched-column": torch.rand(B, 1, 1, W, generator=generator) > 0.5,
        "batched-2d": torch.rand(B, 1, H, W, generator=generator) > 0.5,
    }


@pytest.mark.parametrize("kind", list(_masks()))
def test_operator_properties(kind: str) -> None:
    op = MultiCoilOperator(random_tensor((B, C, H, W), seed=11), _masks()[kind])
    assert_adjoint(op.forward, op.adjoint, (B, H, W), (B, C, H, W))
    assert_linear(op.forward, (B, H, W))
    assert_linear(op.adjoint, (B, C, H, W))
    assert_normal(op.forward, op.adjoint, op.normal, (B, H, W))


def test_batched_masks_act_per_sample() -> None:
    maps, masks = random_tensor((B, C, H, W), seed=12), _masks()["batched-column"]
    x = random_tensor((B, H, W), seed=13)
    batched = MultiCoilOperator(maps, masks).forward(x)
    for b in range(B):
        single = MultiCoilOperator(maps[b : b + 1], masks[b, 0, 0]).forward(x[b : b + 1])
        torch.testing.assert_close(batched[b : b + 1], single)


@pytest.mark.parametrize("kind", ["column", "2d"])
def test_matches_sigpy_sense(kind: str) -> None:
    maps = random_tensor((1, C, H, W), dtype=torch.complex128, seed=14)
    mask = _masks()[kind]
    op = MultiCoilOperator(maps, mask)
    sense = sp.mri.linop.Sense(maps[0].numpy(), weights=np.broadcast_to(mask.numpy(), (H, W)).astype(float))
    x = random_tensor((1, H, W), dtype=torch.complex128, seed=15)
    y = random_tensor((1, C, H, W), dtype=torch.complex128, seed=16)
    np.testing.assert_allclose(op.forward(x)[0].numpy(), sense * x[0].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.adjoint(y)[0].numpy(), sense.H * y[0].numpy(), rtol=1e-10, atol=1e-12)


def test_gradients_flow_through_the_operator() -> None:
    maps = random_tensor((1, 2, 4, 4), dtype=torch.complex128, seed=17)
    op = MultiCoilOperator(maps, torch.tensor([True, False, True, True]))
    x = random_tensor((1, 4, 4), dtype=torch.complex128, seed=18).requires_grad_()
    assert torch.autograd.gradcheck(op.forward, (x,))
    assert torch.autograd.gradcheck(op.normal, (x,))


def test_power_norm_fully_sampled_is_max_coil_energy() -> None:
    # With every sample kept, A^H A is pixel-wise multiplication by sum_i |S_i|^2.
    maps = random_tensor((B, C, H, W), seed=19)
    op = MultiCoilOperator(maps, torch.ones(W, dtype=torch.bool))
    expected = (maps.abs() ** 2).sum(1).amax(dim=(-2, -1))
    torch.testing.assert_close(power_norm(op, iters=300), expected, rtol=1e-3, atol=0)


def test_power_norm_matches_sigpy_max_eig() -> None:
    maps = random_tensor((1, C, H, W), dtype=torch.complex128, seed=20)
    mask = _masks()["column"]
    sense = sp.mri.linop.Sense(maps[0].numpy(), weights=mask.numpy().astype(float))
    reference = sp.app.MaxEig(sense.N, dtype=np.complex128, max_iter=500, show_pbar=False).run()
    estimate = power_norm(MultiCoilOperator(maps, mask), iters=500, seed=3)
    assert estimate.shape == (1,)
    assert estimate.item() == pytest.approx(reference, rel=1e-4)


def test_power_norm_is_reproducible() -> None:
    op = MultiCoilOperator(random_tensor((B, C, H, W), seed=21), _masks()["2d"])
    torch.testing.assert_close(power_norm(op, iters=5, seed=1), power_norm(op, iters=5, seed=1), rtol=0, atol=0)


def test_shape_errors() -> None:
    maps = random_tensor((B, C, H, W), seed=22)
    with pytest.raises(ShapeError, match="mask width"):
        MultiCoilOperator(maps, torch.ones(W + 1, dtype=torch.bool))
    with pytest.raises(ShapeError, match="complex"):
        MultiCoilOperator(maps.real, torch.ones(W, dtype=torch.bool))
    op = MultiCoilOperator(maps, torch.ones(W, dtype=torch.bool))
    with pytest.raises(ShapeError, match="does not fit coil maps"):
        op.forward(random_tensor((B, H, W + 1)))
    with pytest.raises(ShapeError, match="does not fit coil maps"):
        op.adjoint(random_tensor((B, C + 1, H, W)))
