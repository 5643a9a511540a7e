"""Our U-net against fastmri.models.Unet (same weights, same outputs) and the `unet` method's pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastmri.data.transforms import UnetDataTransform
from fastmri.models import Unet as FastmriUnet

from mrirobust.errors import ConfigError
from mrirobust.methods.base import build, checked_reconstruct
from mrirobust.methods.unet import UNET_VARIANTS, Unet, UnetRecon, crop_size
from mrirobust.physics.combine import zero_filled_rss
from mrirobust.physics.masks import mask_spec, stack_masks


def _layout(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _pair(chans: int = 8, pools: int = 3, in_chans: int = 1, out_chans: int = 1) -> tuple[torch.nn.Module, Unet]:
    torch.manual_seed(0)
    reference = FastmriUnet(in_chans, out_chans, chans=chans, num_pool_layers=pools)
    ours = Unet(in_chans, out_chans, chans=chans, num_pool_layers=pools)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


@pytest.mark.parametrize("shape", [(32, 32), (33, 47), (41, 40), (20, 27)])
def test_matches_fastmri_unet_including_odd_sizes(shape: tuple[int, int]) -> None:
    reference, ours = _pair(in_chans=2, out_chans=2)
    x = torch.randn(2, 2, *shape, generator=torch.Generator().manual_seed(1))
    expected = reference(x)
    assert ours(x).shape == expected.shape == x.shape
    assert (ours(x) - expected).abs().max() <= 1e-5


def test_full_size_layout_and_parameter_count() -> None:
    reference, ours = FastmriUnet(1, 1, chans=32, num_pool_layers=4), Unet(1, 1, chans=32, num_pool_layers=4)
    assert _layout(ours) == _layout(reference)
    assert sum(p.numel() for p in ours.parameters()) == 7_756_097
    assert sum(p.numel() for p in build("unet-ref").model.parameters()) == 7_756_097


@pytest.mark.parametrize("name", sorted(UNET_VARIANTS))
def test_variants_have_fastmri_layout(name: str) -> None:
    arch = UNET_VARIANTS[name]
    method = build(name)
    assert method.name == name and method.config()["chans"] == arch["chans"]
    assert _layout(method.model) == _layout(FastmriUnet(1, 1, arch["chans"], arch["num_pool_layers"]))
    assert build(method.config()).config() == method.config()


def _kspace(coils: int = 4, height: int = 48, width: int = 40) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(2, coils, height, width, dtype=torch.complex64, generator=generator)


def test_pipeline_matches_fastmri_transform_and_module() -> None:
    """UnetDataTransform (crop, RSS, normalise, clamp) -> Unet -> * std + mean, slice by slice."""
    reference, _ = _pair(chans=8, pools=2)
    method = UnetRecon(chans=8, num_pool_layers=2)
    method.model.load_state_dict(reference.state_dict())
    kspace = _kspace()
    spec = mask_spec("random", 0.08, 4)
    mask = stack_masks([spec.sample(40, seed=s)[0] for s in (3, 4)])
    target_shape = (32, 32)
    ours = checked_reconstruct(method, kspace * mask, mask, target_shape=target_shape)
    assert ours.shape == (2, 48, 40)
    transform = UnetDataTransform("multicoil")
    for i in range(2):
        masked = (kspace[i] * mask[i]).numpy()
        sample = transform(masked, None, np.zeros(target_shape, np.float32), {}, "f.h5", 0)
        expected = reference(sample.image[None, None])[0, 0] * sample.std + sample.mean
        assert (ours[i, 8:40, 4:36] - expected).abs().max() <= 1e-5
    outside = torch.ones(48, 40, dtype=torch.bool)
    outside[8:40, 4:36] = False
    assert (ours[:, outside] == 0).all()  # zero-padded back to the k-space size


def test_default_crop_is_central_square() -> None:
    assert crop_size(640, 368, None) == (368, 368)
    assert crop_size(640, 368, (320, 320)) == (320, 320)
    assert crop_size(320, 300, (320, 320)) == (320, 300)
    method = UnetRecon(chans=4, num_pool_layers=2)
    out = method.reconstruct(_kspace(height=40, width=32), torch.ones(32, dtype=torch.bool))
    assert out.shape == (2, 40, 32)
    assert (out[:, :4] == 0).all() and (out[:, 36:] == 0).all() and (out[:, 4:36] != 0).any()


def test_scale_equivariant_and_differentiable() -> None:
    """Per-instance normalisation makes the output scale with the input; gradients reach k-space."""
    method = UnetRecon(chans=4, num_pool_layers=2)
    kspace = _kspace().requires_grad_()
    mask = torch.ones(40, dtype=torch.bool)
    out = method.reconstruct(kspace, mask, target_shape=(32, 32))
    scaled = method.reconstruct(kspace.detach() * 1e-4, mask, target_shape=(32, 32))
    assert torch.allclose(scaled, out.detach() * 1e-4, rtol=1e-4, atol=1e-9)
    out.sum().backward()
    assert kspace.grad is not None and kspace.grad.abs().sum() > 0
    assert method.family == "trained" and method.differentiable and method.trainable


def test_loads_lightning_and_plain_checkpoints(tmp_path) -> None:
    reference, _ = _pair(chans=4, pools=2)
    plain = tmp_path / "plain.pt"
    torch.save(reference.state_dict(), plain)
    lightning = tmp_path / "epoch=49.ckpt"
    state = {f"unet.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state | {"loss.w": torch.ones(1, 1, 7, 7)}, "epoch": 49,
                "hyper_parameters": {"chans": 4, "lr": 1e-3}}, lightning)
    x = torch.randn(1, 1, 24, 24)
    for path in (plain, lightning):
        method = build({"name": "unet", "checkpoint": str(path), "chans": 4, "num_pool_layers": 2})
        # fastMRI's weights, our instance norm (a group norm: equal up to float round-off)
        torch.testing.assert_close(method.model(x), reference(x), rtol=1e-5, atol=1e-5)
        assert method.config()["checkpoint"] == str(path)


def test_a_checkpoint_trained_without_residual_is_refused_by_the_residual_preset(tmp_path) -> None:
    reference, _ = _pair(chans=4, pools=2)
    small = {"name": "unet-small", "chans": 4, "num_pool_layers": 2}
    older = tmp_path / "older.ckpt"  # our trainer's record from before `residual` existed: trained without it
    torch.save({"method": {**small, "drop_prob": 0.0}, "state_dict": reference.state_dict()}, older)
    with pytest.raises(ConfigError, match=r"^residual: .*older\.ckpt: trained with residual=False; build it with "
                                          r"`residual: false`"):
        build({**small, "checkpoint": str(older)})
    assert build({**small, "checkpoint": str(older), "residual": False}).residual is False
    newer = tmp_path / "newer.ckpt"
    torch.save({"method": {**small, "residual": True}, "state_dict": reference.state_dict()}, newer)
    assert build({**small, "checkpoint": str(newer)}).residual is True
    with pytest.raises(ConfigError, match="trained with residual=True"):
        build({**small, "checkpoint": str(newer), "residual": False})
    plain = tmp_path / "plain.pt"  # fastMRI's files record nothing: the config decides
    torch.save(reference.state_dict(), plain)
    assert build({**small, "checkpoint": str(plain)}).residual is True


def test_mismatching_checkpoint_names_first_key(tmp_path) -> None:
    path = tmp_path / "wrong.pt"
    torch.save(FastmriUnet(1, 1, chans=4, num_pool_layers=2).state_dict(), path)
    with pytest.raises(ConfigError, match=r"down_sample_layers\.0\.layers\.0\.weight.*shape"):
        UnetRecon(checkpoint=str(path), chans=8, num_pool_layers=2)
    with pytest.raises(ConfigError, match=r"'down_sample_layers\.2\.layers\.0\.weight' is missing"):
        UnetRecon(checkpoint=str(path), chans=4, num_pool_layers=3)
    with pytest.raises(ConfigError, match="no such file"):
        UnetRecon(checkpoint=str(tmp_path / "absent.pt"))


@pytest.mark.parametrize("kind, message", [
    ("text", "not a PyTorch weights file"), ("empty", "not a PyTorch weights file"),
    ("directory", "is a directory"), ("tensor", "holds a Tensor, not a state_dict"),
    ("other architecture", r"key 'down_sample_layers\.0\.layers\.0\.weight' has shape \(4, 1, 3, 3\), expected \(8, 1, 3, 3\)"),
])
def test_bad_checkpoint_files_are_one_short_line_naming_the_file(tmp_path, kind, message) -> None:
    path = tmp_path / "weights.ckpt"
    if kind == "text":
        path.write_text("not a checkpoint\n" * 500)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        torch.save({"state_dict": {f"unet.{k}": v for k, v in FastmriUnet(1, 1, chans=4, num_pool_layers=2)
                                   .state_dict().items()}}, path)
    with pytest.raises(ConfigError, match=message) as error:
        build({"name": "unet", "checkpoint": str(path), "chans": 8, "num_pool_layers": 2})
    text = str(error.value)
    assert text.startswith(f"checkpoint: {path}: ") and "\n" not in text and len(text) - len(str(path)) < 200


def test_zero_filled_input_is_what_the_network_sees() -> None:
    """With the network's output replaced by its input, the method returns the cropped zero-filled RSS."""
    method = UnetRecon(chans=4, num_pool_layers=2)
    method.model = torch.nn.Identity()
    kspace, mask = _kspace(), torch.arange(40) % 3 == 0
    out = method.reconstruct(kspace, mask, target_shape=(32, 32))
    expected = zero_filled_rss(kspace, mask)[:, 8:40, 4:36]
    assert torch.allclose(out[:, 8:40, 4:36], expected, rtol=1e-5, atol=1e-6)  # no clamping at +-6 here


def test_plain_output_is_fastmri_formula_bit_for_bit() -> None:
    """residual=False (fastMRI's, the default): network output times std plus mean, exactly."""
    torch.manual_seed(0)
    method = UnetRecon(chans=4, num_pool_layers=2)
    assert not method.residual and not build("unet").residual and not build("unet-ref").residual
    kspace, mask = _kspace(), torch.arange(40) % 3 == 0
    image = zero_filled_rss(kspace, mask)[:, 8:40, 4:36]
    mean, std = image.mean(dim=(-2, -1), keepdim=True), image.std(dim=(-2, -1), keepdim=True)
    expected = method.model((((image - mean) / (std + 1e-11)).clamp(-6, 6))[:, None])[:, 0] * std + mean
    out = method.reconstruct(kspace, mask, target_shape=(32, 32))
    assert torch.equal(out[:, 8:40, 4:36], expected)


def test_residual_new_network_is_zero_filled_exactly() -> None:
    """residual=True: a fresh model (zero last layer) or a zero-output one returns the zero-filled image."""
    kspace, mask = _kspace(), torch.arange(40) % 3 == 0
    expected = zero_filled_rss(kspace, mask)[:, 8:40, 4:36]
    fresh = build("unet-small")
    assert fresh.residual
    zero = UnetRecon(chans=4, num_pool_layers=2, residual=True)
    zero.model = ZeroOutput()
    for method in (fresh, zero):
        out = method.reconstruct(kspace, mask, target_shape=(32, 32))
        assert torch.equal(out[:, 8:40, 4:36], expected) and not out[:, :8].any()


class ZeroOutput(torch.nn.Module):
    """A network whose correction is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_residual_loads_fastmri_weights_and_adds_the_correction(tmp_path) -> None:
    """A fastMRI state_dict loads into a residual U-net unchanged (not zeroed), and its output is
    the zero-filled image plus fastMRI's network output times std."""
    reference, _ = _pair(chans=4, pools=2)
    path = tmp_path / "unet.pt"
    torch.save(reference.state_dict(), path)
    method = UnetRecon(checkpoint=str(path), chans=4, num_pool_layers=2, residual=True)
    plain = UnetRecon(checkpoint=str(path), chans=4, num_pool_layers=2)
    kspace, mask = _kspace(), torch.arange(40) % 3 == 0
    image = zero_filled_rss(kspace, mask)[:, 8:40, 4:36]
    mean = image.mean(dim=(-2, -1), keepdim=True)
    out = method.reconstruct(kspace, mask, target_shape=(32, 32))[:, 8:40, 4:36]
    out_plain = plain.reconstruct(kspace, mask, target_shape=(32, 32))[:, 8:40, 4:36]
    assert torch.allclose(out - image, out_plain - mean, rtol=1e-5, atol=1e-5)
    assert (out - image).abs().max() > 1e-3  # the loaded last layer is not zeroed
