"""Our VarNet against fastmri.models.VarNet (same weights, same outputs) and the `varnet` method."""

from __future__ import annotations

import pytest
import torch
from fastmri import ifft2c as fastmri_ifft2c
from fastmri import rss_complex
from fastmri.data.transforms import batched_mask_center
from fastmri.models import VarNet as FastmriVarNet
from fastmri.models.varnet import SensitivityModel as FastmriSensitivityModel

from mrirobust.errors import ConfigError, ShapeError
from mrirobust.methods.base import build, checked_reconstruct
from mrirobust.methods.varnet import VARNET_VARIANTS, VarNet, VarnetRecon, low_frequency_count
from mrirobust.physics.combine import zero_filled_rss
from mrirobust.physics.fft import fft2c, ifft2c
from mrirobust.physics.masks import mask_spec, stack_masks

SMALL = {"num_cascades": 2, "sens_chans": 4, "sens_pools": 2, "chans": 8, "pools": 2}
SPEC = mask_spec("random", 0.08, 4)


def _layout(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _pair(**arch: int) -> tuple[torch.nn.Module, VarNet]:
    torch.manual_seed(0)
    reference = FastmriVarNet(**(SMALL | arch))
    ours = VarNet(**(SMALL | arch))
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def _data(height: int = 48, width: int = 40, batch: int = 2, coils: int = 4) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Masked k-space, a batched fastMRI random mask (B, 1, 1, W) and its centre width."""
    drawn = [SPEC.sample(width, seed=(7, i)) for i in range(batch)]
    mask = stack_masks([m for m, _ in drawn])
    kspace = torch.randn(batch, coils, height, width, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    return kspace * mask, mask, drawn[0][1]


def _fastmri(model: torch.nn.Module, kspace: torch.Tensor, mask: torch.Tensor, low: int | None) -> torch.Tensor:
    return model(torch.view_as_real(kspace), mask[..., None], low)


@pytest.mark.parametrize("shape", [(48, 40), (45, 37)])
@pytest.mark.parametrize("use_low", [True, False])
def test_matches_fastmri_varnet(shape: tuple[int, int], use_low: bool) -> None:
    reference, ours = _pair()
    kspace, mask, low = _data(*shape)
    low_arg = low if use_low else None
    expected = _fastmri(reference, kspace, mask, low_arg)
    got = ours(kspace, mask, low_arg)
    assert got.shape == expected.shape == (2, *shape)
    assert (got - expected).abs().max() <= 1e-5


def test_low_frequency_count_matches_fastmri() -> None:
    masks = torch.stack([SPEC.sample(w, seed=(5, w))[0] for w in [40] * 6])[:, None, None, :]
    # a sampled column just outside an even centre, and an odd centre width
    masks[0, ..., :] = False
    masks[0, ..., 17:24] = True
    masks[1, ..., :] = False
    masks[1, ..., 18:22] = True
    masks[1, ..., 30] = True
    _, expected = FastmriSensitivityModel(2, 1).get_pad_and_num_low_freqs(masks[..., None])
    assert torch.equal(low_frequency_count(masks), expected)


def test_full_size_layout_and_parameter_count() -> None:
    reference, ours = FastmriVarNet(), VarNet()
    assert _layout(ours) == _layout(reference)
    assert sum(p.numel() for p in ours.parameters()) == 29_936_966
    assert sum(p.numel() for p in build("varnet-ref").model.parameters()) == 29_936_966


@pytest.mark.parametrize("name", sorted(VARNET_VARIANTS))
def test_variants_have_fastmri_layout(name: str) -> None:
    method = build(name)
    assert method.name == name
    architecture = {k: v for k, v in VARNET_VARIANTS[name].items() if k != "residual"}
    assert _layout(method.model) == _layout(FastmriVarNet(**architecture))
    assert build(method.config()).config() == method.config()


def test_method_matches_fastmri_with_column_mask_and_meta_centre() -> None:
    reference, _ = _pair()
    method = VarnetRecon(**SMALL)
    method.model.load_state_dict(reference.state_dict())
    kspace, mask, low = _data(batch=1)
    column = mask[0, 0, 0]  # (W,): broadcast to the batch inside
    got = checked_reconstruct(method, kspace, column, num_low_frequencies=low, target_shape=(32, 32))
    assert (got - _fastmri(reference, kspace, mask, low)).abs().max() <= 1e-5
    assert method.family == "trained" and method.differentiable and method.trainable


def test_new_residual_varnet_is_zero_filling_with_acs_maps() -> None:
    """A new residual VarNet returns the zero-filled RSS image, with fastMRI's ACS coil images
    over their RSS as its maps; two training steps move it off both."""
    torch.manual_seed(0)
    model = VarNet(**SMALL, residual=True)
    kspace, mask, low = _data()
    assert torch.allclose(model(kspace, mask, low), zero_filled_rss(kspace, mask), rtol=1e-5, atol=1e-6)
    pad, count = FastmriSensitivityModel(4, 2).get_pad_and_num_low_freqs(mask[..., None], low)
    acs = fastmri_ifft2c(batched_mask_center(torch.view_as_real(kspace), pad, pad + count))
    expected = torch.view_as_complex(acs / rss_complex(acs, dim=1)[:, None, ..., None])
    assert torch.allclose(model.sens_net(kspace, mask, low), expected, rtol=1e-4, atol=1e-5)

    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # the maps get a gradient once the cascades' last layers are no longer zero
        optimiser.zero_grad()
        model(kspace, mask, low).sum().backward()
        optimiser.step()
    with torch.no_grad():
        assert not torch.allclose(model(kspace, mask, low), zero_filled_rss(kspace, mask), rtol=1e-3, atol=1e-4)
        assert not torch.allclose(model.sens_net(kspace, mask, low), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("residual", [False, True])
def test_output_scales_with_the_kspace(residual: bool) -> None:
    """Every U-net sees its input normalised and the maps are RSS-normalised, so VarNet(a k) = a VarNet(k):
    k-space of real images at another intensity scale (x250 here) is no different to it."""
    torch.manual_seed(0)
    model = VarNet(**SMALL, residual=residual)
    for cascade in model.cascades:  # a trained-like state: non-zero updates
        torch.nn.init.normal_(cascade.model.unet.up_conv[-1][-1].weight, std=0.1)
    kspace, mask, low = _data()
    with torch.no_grad():
        out = model(kspace, mask, low)
        assert torch.allclose(model(250 * kspace, mask, low), 250 * out, rtol=1e-4, atol=1e-4 * float(out.abs().max()))


def test_checkpointed_cascades_give_same_output_and_gradients() -> None:
    _, plain = _pair()
    _, checkpointed = _pair()
    checkpointed.checkpoint_cascades = True
    kspace, mask, low = _data()
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        inp = kspace.clone().requires_grad_()
        out = model(inp, mask, low)
        out.square().sum().backward()
        grads.append((out.detach(), inp.grad, [p.grad for p in model.parameters()]))
    (out_a, in_a, p_a), (out_b, in_b, p_b) = grads
    assert torch.equal(out_a, out_b)
    assert torch.allclose(in_a, in_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(p_a, p_b, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_resolution_fix_keeps_scale_and_shape() -> None:
    """Stanford-like k-space (H = 24 rows) fed to a net trained on H = 48: image-domain zero padding.

    Without cascades VarNet returns the zero-filled RSS image, so the fix must return exactly the
    zero-filled RSS of the original k-space: same pixels, same scale.
    """
    kspace, mask, _ = _data(height=24)
    zero_cascades = VarnetRecon(**(SMALL | {"num_cascades": 0}), resolution_fix=48)
    out = zero_cascades.reconstruct(kspace, mask)
    assert out.shape == (2, 24, 40)
    assert torch.allclose(out, zero_filled_rss(kspace, mask), rtol=1e-4, atol=1e-5)

    method = VarnetRecon(**SMALL, resolution_fix=48)
    seen = []
    method.model.sens_net.register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    out = method.reconstruct(kspace, mask)
    assert seen == [(2, 4, 48, 40)] and out.shape == (2, 24, 40) and torch.isfinite(out).all()
    # what the network saw: the coil images padded along the readout, i.e. a finer k-space grid
    padded = fft2c(torch.nn.functional.pad(ifft2c(kspace), [0, 0, 12, 12]))
    expected = method.model(padded, mask)[:, 12:36]
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match="column mask"):
        method.reconstruct(kspace, mask.expand(2, 1, 24, 40))


def test_loads_lightning_and_plain_checkpoints(tmp_path) -> None:
    reference, _ = _pair()
    plain = tmp_path / "varnet_state_dict.pt"
    torch.save(reference.state_dict(), plain)
    lightning = tmp_path / "best.ckpt"
    state = {f"varnet.{k}": v for k, v in reference.state_dict().items()} | {"loss.w": torch.ones(1, 1, 7, 7)}
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"num_cascades": 2}}, lightning)
    kspace, mask, low = _data(batch=1)
    expected = _fastmri(reference, kspace, mask, low)
    for path in (plain, lightning):
        method = build("varnet", checkpoint=str(path), **SMALL)
        assert (method.reconstruct(kspace, mask, num_low_frequencies=low) - expected).abs().max() <= 1e-5
    with pytest.raises(ConfigError, match=r"'cascades\.2\.dc_weight' is missing"):
        VarnetRecon(checkpoint=str(lightning), **(SMALL | {"num_cascades": 3}))
    with pytest.raises(ConfigError, match=r"unexpected key 'cascades\.1\.dc_weight'"):
        VarnetRecon(checkpoint=str(lightning), **(SMALL | {"num_cascades": 1}))


def test_bad_settings_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="resolution_fix"):
        VarnetRecon(**SMALL, resolution_fix=0)
    with pytest.raises(ConfigError, match="chans"):
        VarnetRecon(chans=0)
