"""ConvDecoder / Deep Decoder fitting: shapes, loss, best iterate, data consistency, scale, seeds, batching."""

from __future__ import annotations

import functools

import pytest
import torch

from mrirobust.data.synthetic import SynthConfig, generate_volume
from mrirobust.methods.base import build, checked_reconstruct
from mrirobust.methods.untrained import ConvDecoder, DeepDecoder, consistent_coil_images, upsample_sizes
from mrirobust.metrics import ssim
from mrirobust.physics.combine import rss, zero_filled_rss
from mrirobust.physics.fft import fft2c

N, COILS = 48, 4
TINY = dict(layers=4, channels=16, input_size=(6, 4))


@functools.cache
def _slices() -> tuple[torch.Tensor, torch.Tensor]:
    """Two smooth synthetic brain slices: k-space (2, C, N, N) and RSS targets (2, N, N)."""
    config = SynthConfig(anatomy="brain", num_volumes=1, slices_per_volume=2, num_coils=COILS, shape=(N, N), detail=0.0)
    kspace, target, _ = generate_volume(config, 0)
    return torch.from_numpy(kspace), torch.from_numpy(target)


def _mask() -> torch.Tensor:
    """4x equispaced columns plus 6 centre columns."""
    mask = torch.zeros(N, dtype=torch.bool)
    mask[1::4] = True
    mask[N // 2 - 3 : N // 2 + 3] = True
    return mask


def _tiny(cls: type = ConvDecoder, **settings: object) -> ConvDecoder:
    return cls(**{**TINY, **settings})


def test_registry_traits_and_config_roundtrip() -> None:
    for name in ("convdecoder", "deepdecoder", "convdecoder-small", "deepdecoder-small"):
        method = build(name)
        assert (method.family, method.differentiable, method.trainable, method.optimisation_based) == \
            ("untrained", False, False, True)
        assert build(method.config()) == method
    assert build("convdecoder").config()["channels"] == 256 and build("deepdecoder").kernel == 1


def test_upsample_sizes_grow_geometrically_to_output() -> None:
    sizes = upsample_sizes((10, 5), (320, 160), 8)
    assert len(sizes) == 7 and sizes[-1] == (320, 160)
    ratios = torch.tensor([[b / a for a, b in zip(p, q)] for p, q in zip([(10, 5)] + sizes[:-1], sizes)])
    assert torch.allclose(ratios, torch.full_like(ratios, 32 ** (1 / 7)), rtol=0.15)


@pytest.mark.parametrize("cls, settings", [(ConvDecoder, dict(iters=150)),
                                           (DeepDecoder, dict(layers=5, channels=32, iters=200))])
def test_shapes_and_beats_zero_filled(cls: type, settings: dict) -> None:
    kspace, target = _slices()
    kspace, target, mask = kspace[:1], target[:1], _mask()
    method = _tiny(cls, lr=0.02, **settings)
    image = checked_reconstruct(method, kspace, mask)
    assert image.shape == (1, N, N)
    zero_filled = zero_filled_rss(kspace, mask)
    data_range = target.max()
    assert float(ssim(target, image, data_range)) > float(ssim(target, zero_filled, data_range)) + 0.05


def test_best_iterate_and_data_consistency() -> None:
    kspace, _ = _slices()
    mask = _mask()
    method = _tiny(iters=40, lr=0.05)  # a large step makes the loss non-monotone
    image, state = method.fit(kspace, mask)
    losses = state.losses
    assert losses.shape == (41, 2) and (losses.min(0).values < 0.2 * losses[0]).all()
    # the kept output is the lowest-loss iterate of each slice
    best_loss = method.data_loss(state, kspace * mask, mask, state.best)
    torch.testing.assert_close(best_loss, losses.min(0).values, rtol=1e-5, atol=0)
    # sampled entries come from y exactly; the image is the RSS of those coil images
    coils = consistent_coil_images(state.best * state.scale.view(-1, 1, 1, 1), kspace * mask, mask)
    sampled = fft2c(coils)[..., mask]
    torch.testing.assert_close(sampled, kspace[..., mask], rtol=1e-5, atol=1e-5 * kspace.abs().max().item())
    torch.testing.assert_close(image, rss(coils))


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * expected.abs().max().item())


def test_scale_equivariant_and_deterministic() -> None:
    kspace, _ = _slices()
    kspace, mask = kspace[:1], _mask()
    method = _tiny(iters=30)
    image = method.reconstruct(kspace, mask)
    assert torch.equal(method.reconstruct(kspace, mask), image)
    assert torch.equal(method.reconstruct(1024 * kspace, mask), 1024 * image)  # power-of-two scale: exact
    assert not torch.equal(_tiny(iters=30, seed=1).reconstruct(kspace, mask), image)
    # other factors round differently; Adam amplifies rounding, so compare in float64
    kspace = kspace.to(torch.complex128)
    _close(method.reconstruct(1000 * kspace, mask), 1000 * method.reconstruct(kspace, mask), 1e-8)


@pytest.mark.parametrize("cls", [ConvDecoder, DeepDecoder])
def test_batch_equals_single(cls: type) -> None:
    kspace, _ = _slices()
    mask = _mask()
    method = _tiny(cls, iters=30)
    for dtype, tol in ((torch.complex128, 1e-8), (torch.complex64, 1e-2)):  # float32 rounding grows in Adam
        batched = method.reconstruct(kspace.to(dtype), mask)
        single = torch.cat([method.reconstruct(kspace[i : i + 1].to(dtype), mask) for i in range(2)])
        _close(batched, single, tol)


def test_optimisers_run_and_differ() -> None:
    kspace, _ = _slices()
    kspace, mask = kspace[:1], _mask()
    images = {}
    for name, settings in {"adam": dict(beta1=0.9), "adam98": dict(beta1=0.98),
                           "gd": dict(optimizer="gd-linear", lr=0.5, lr_growth=0.02)}.items():
        method = _tiny(iters=30, **settings)
        images[name], state = method.fit(kspace, mask)
        assert state.losses[-1] < 0.5 * state.losses[0], name
    assert not torch.allclose(images["adam"], images["adam98"], rtol=1e-3)
    assert not torch.allclose(images["adam"], images["gd"], rtol=1e-3)


def test_continuing_a_fit_and_extra_loss() -> None:
    kspace, _ = _slices()
    kspace, mask = kspace[:1], _mask()
    method = _tiny(iters=20)
    _, state = method.fit(kspace, mask)
    first = state.losses[-1]
    _, state = method.fit(kspace, mask, iters=20, state=state)
    assert torch.equal(state.losses[0], first) and state.losses[-1] < first
    # an extra term that pulls the image towards zero lowers the image energy
    plain, _ = method.fit(kspace, mask)
    pulled, _ = method.fit(kspace, mask, extra_loss=lambda x: 10 * x.pow(2).mean(dim=(1, 2)) / plain.pow(2).mean())
    assert pulled.pow(2).sum() < plain.pow(2).sum()
