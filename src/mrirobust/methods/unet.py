"""fastMRI's U-net: the network, checkpoint loading, and the image-domain reconstruction pipeline.

`Unet` has exactly the parameter layout of `fastmri.models.Unet` (same `state_dict` keys and
shapes), so published fastMRI weights load unchanged (`load_weights`). The `unet` method is
fastMRI's U-net baseline: zero-filled RSS image cropped to the target size, per-instance
normalisation, U-net, normalisation undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mrirobust.errors import ConfigError
from mrirobust.methods.base import Reconstructor, register, register_preset
from mrirobust.methods.settings import at_least
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import center_crop, ifft2c, pad_to
from mrirobust.physics.masks import check_mask

# --- the network -------------------------------------------------------------------------------


class InstanceNorm(nn.Module):
    """Instance norm without affine parameters or running statistics (`nn.InstanceNorm2d`'s
    defaults, so no state-dict entries), computed as a group norm with one channel per group:
    the same numbers, and training steps 1.12-1.15x faster on CPU (bench/bench_norm.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, x.shape[1])


class ConvBlock(nn.Module):
    """(3x3 conv -> instance norm -> LeakyReLU(0.2) -> channel dropout) twice.

    The norms, activations and dropouts sit in `layers` between the convolutions so the two
    convolutions get fastMRI's parameter names (`layers.0`, `layers.4`).
    """

    def __init__(self, in_chans: int, out_chans: int, drop_prob: float) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        for chans in (in_chans, out_chans):
            stages += [
                nn.Conv2d(chans, out_chans, kernel_size=3, padding=1, bias=False),
                InstanceNorm(),
                nn.LeakyReLU(negative_slope=0.2, inplace=True),
                nn.Dropout2d(drop_prob),
            ]
        self.layers = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class UpBlock(nn.Module):
    """2x2 stride-2 transposed conv -> instance norm -> LeakyReLU(0.2): doubles H and W."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            InstanceNorm(),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Unet(nn.Module):
    """fastMRI's U-net (Ronneberger et al. 2015 with instance norm, average pooling, no biases).

    (N, in_chans, H, W) -> (N, out_chans, H, W) for any H, W >= 2**num_pool_layers: odd sizes
    are handled by reflect-padding the up-sampled features by one pixel on the bottom/right, as
    fastMRI does. Channel widths: chans * 2**level, the bottleneck twice the deepest.
    """

    def __init__(self, in_chans: int, out_chans: int, chans: int = 32, num_pool_layers: int = 4,
                 drop_prob: float = 0.0) -> None:
        super().__init__()
        widths = [chans * 2**level for level in range(num_pool_layers)]
        self.down_sample_layers = nn.ModuleList(
            ConvBlock(c_in, c_out, drop_prob) for c_in, c_out in zip([in_chans, *widths[:-1]], widths)
        )
        self.conv = ConvBlock(widths[-1], 2 * widths[-1], drop_prob)
        self.up_conv = nn.ModuleList(ConvBlock(2 * w, w, drop_prob) for w in reversed(widths[1:]))
        self.up_conv.append(nn.Sequential(ConvBlock(2 * chans, chans, drop_prob),
                                          nn.Conv2d(chans, out_chans, kernel_size=1)))
        self.up_transpose_conv = nn.ModuleList(UpBlock(2 * w, w) for w in reversed(widths))

    def zero_output(self) -> None:
        """Zero the last 1x1 convolution: the network then outputs 0 exactly (a residual's start)."""
        last = self.up_conv[-1][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down_sample_layers:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        x = self.conv(x)
        for up, block in zip(self.up_transpose_conv, self.up_conv):
            skip = skips.pop()
            x = up(x)
            pad_h, pad_w = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            if pad_h or pad_w:  # odd size on the way down: pooling dropped one row/column
                x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
            x = block(torch.cat([x, skip], dim=1))
        return x


# --- checkpoints -------------------------------------------------------------------------------


def load_checkpoint(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` (never runs pickled code), or one-line ConfigError naming the file."""
    if Path(path).is_dir():
        raise ConfigError("checkpoint", f"{path}: is a directory, not a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError("checkpoint", f"{path}: no such file") from None
    except OSError as error:
        raise ConfigError("checkpoint", f"{path}: cannot read it ({error.strerror})") from None
    except Exception as error:  # torch raises KeyError, UnpicklingError, RuntimeError, EOFError on junk
        detail = (str(error).strip().splitlines() or [""])[0][:40]
        raise ConfigError("checkpoint", f"{path}: not a PyTorch weights file ({type(error).__name__}: "
                                        f"{detail}); see docs/methods.md on checkpoints") from None


def read_state_dict(source: str | Path | Mapping[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """The model weights in a checkpoint file or mapping, in any of fastMRI's layouts.

    Accepts a plain `state_dict` (fastMRI's published `*_state_dict.pt` files, `torch.save(model
    .state_dict())`), a dict holding one under "state_dict" (PyTorch Lightning checkpoints and
    `workflows.train`'s), and in either keys with the Lightning module's attribute prefix
    (`varnet.`, `unet.`), which is stripped; other keys of such a checkpoint (e.g. the SSIM loss's
    `loss.w`) are ignored. Files are read with `weights_only=True`, which never runs pickled code;
    a trusted file holding other Python objects can be loaded with `torch.load(...,
    weights_only=False)` and passed as a mapping.
    """
    return _weights_in(source if isinstance(source, Mapping) else load_checkpoint(source), prefix, _label(source))


def _weights_in(state: Any, prefix: str, label: str) -> dict[str, torch.Tensor]:
    """The state_dict in a loaded checkpoint (see `read_state_dict`), its prefix stripped."""
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("checkpoint", f"{label}: holds a {type(state).__name__}, not a state_dict")
    prefixed = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(prefixed or state)


def _label(source: Any) -> str:
    return str(source) if isinstance(source, (str, Path)) else "state_dict"


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], label: str) -> None:
    """ConfigError in one short line naming the first key of `state` that does not fit `model`, and `label`."""
    expected = model.state_dict()
    problem = next((f"key {k!r} is missing" for k in expected if k not in state), None) \
        or next((f"key {k!r} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
                 for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)), None) \
        or next((f"unexpected key {k!r}" for k in state if k not in expected), None)
    if problem is not None:
        raise ConfigError("checkpoint", f"{label}: {problem} (another architecture?)")


def recorded_method(checkpoint: Any) -> Mapping[str, Any] | None:
    """The method settings our trainer recorded in a loaded checkpoint (`method`, with its `name`);
    None for fastMRI's and other trainers' files, which record nothing."""
    trained = checkpoint.get("method") if isinstance(checkpoint, Mapping) else None
    return trained if isinstance(trained, Mapping) and "name" in trained else None


def check_residual(checkpoint: Any, residual: bool, label: str) -> None:
    """A checkpoint our trainer wrote records the method settings it was trained with (`method`);
    `residual` changes what the same weights compute without changing their shapes, so a mismatch
    is a one-line error. A record without the key predates the setting: trained without it."""
    trained = recorded_method(checkpoint)
    if trained is None:
        return  # no record: the config decides
    was = bool(trained.get("residual", False))
    if was != residual:
        raise ConfigError("residual", f"{label}: trained with residual={was}; build it with `residual: "
                                      f"{str(was).lower()}` (the {trained['name']} preset now has {residual})")


def load_weights(model: nn.Module, source: str | Path | Mapping[str, Any], prefix: str,
                 residual: bool | None = None) -> None:
    """Load checkpoint weights into `model` strictly; a mismatch raises ConfigError naming its key
    (or `residual`, where given and the checkpoint records another: `check_residual`)."""
    checkpoint = source if isinstance(source, Mapping) else load_checkpoint(source)
    if residual is not None:
        check_residual(checkpoint, residual, _label(source))
    state = _weights_in(checkpoint, prefix, _label(source))
    check_state_dict(model, state, _label(source))
    model.load_state_dict(state, strict=True)


# --- the reconstruction method -----------------------------------------------------------------


def crop_size(height: int, width: int, target_shape: tuple[int, int] | None) -> tuple[int, int]:
    """The image size the U-net sees: the target's, else the central min(H, W) square.

    fastMRI crops to the target (320x320 for knee and brain); without a target, the largest
    central square is its analogue. A target larger than the image is clipped to the image.
    """
    if target_shape is None:
        side = min(height, width)
        return side, side
    return min(int(target_shape[0]), height), min(int(target_shape[1]), width)


class TrainedNetwork(Reconstructor):
    """Traits and the protocol shared by the trained networks (`workflows.train` relies on it).

    The weights live in `model`, a torch Module built from the settings (and `checkpoint`);
    `reconstruct_with(module, ...)` is the pipeline around any module of that architecture, so
    training runs it with the module it trains (or its DDP wrapper) without touching the method.
    """

    model: nn.Module

    family = "trained"
    differentiable = True
    trainable = True

    def reconstruct_with(self, model: nn.Module, kspace: torch.Tensor, mask: torch.Tensor,
                         **meta: Any) -> torch.Tensor:
        """This method's reconstruction with `model` in place of its own module."""
        raise NotImplementedError

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        self.model.to(kspace.device)
        return self.reconstruct_with(self.model, kspace, mask, **meta)


@dataclass
class UnetRecon(TrainedNetwork):
    """fastMRI's U-net baseline on the zero-filled RSS image.

    Pipeline (fastMRI's UnetDataTransform + UnetModule): |ifft2c(masked k-space)| RSS over coils,
    centre-cropped to meta `target_shape` (else the central min(H, W) square, `crop_size`);
    normalised by its own mean and std (eps 1e-11) and clamped to [-6, 6]; U-net; times std plus
    mean. The output is zero-padded back to the k-space size (evaluation crops to the target).
    `checkpoint` is a fastMRI U-net checkpoint (`load_weights`). The module in `.model` keeps
    whatever train/eval mode it is given (identical unless drop_prob > 0).

    `residual=True` (the small presets') returns the zero-filled image plus the network's output
    times std: the network learns a correction, and a new model starts from the zero-filled image
    exactly (its last 1x1 convolution is zero-initialised unless a checkpoint is given), so a
    network that is unsure on unfamiliar anatomy falls back to zero-filling instead of painting
    training texture. Same parameters as fastMRI's (checkpoints still load); False is fastMRI's.
    """

    checkpoint: str | None = None
    chans: int = 32
    num_pool_layers: int = 4
    drop_prob: float = 0.0
    residual: bool = False
    model: nn.Module = field(init=False, repr=False, compare=False)

    # fastMRI trains its U-net with an L1 loss and RMSprop at lr 1e-3.
    train_defaults = {"loss": "l1", "optimizer": "rmsprop", "lr": 1e-3}

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        at_least(settings, 1, "chans", "num_pool_layers")
        if not 0 <= settings["drop_prob"] < 1:
            raise ConfigError("drop_prob", f"{settings['drop_prob']!r} must be in [0, 1)")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model = Unet(1, 1, chans=self.chans, num_pool_layers=self.num_pool_layers, drop_prob=self.drop_prob)
        if self.checkpoint is not None:
            load_weights(self.model, self.checkpoint, prefix="unet.", residual=self.residual)
        elif self.residual:
            self.model.zero_output()

    def reconstruct_with(self, model: nn.Module, kspace: torch.Tensor, mask: torch.Tensor,
                         target_shape: tuple[int, int] | None = None, **meta: Any) -> torch.Tensor:
        mask = check_mask(mask, kspace.shape).to(kspace.device)
        height, width = kspace.shape[-2:]
        image = center_crop(rss(ifft2c(kspace * mask), dim=-3), crop_size(height, width, target_shape))
        mean = image.mean(dim=(-2, -1), keepdim=True)
        std = image.std(dim=(-2, -1), keepdim=True)
        normalised = ((image - mean) / (std + 1e-11)).clamp(-6, 6)
        output = model(normalised[:, None])[:, 0] * std + (image if self.residual else mean)
        return pad_to(output, (height, width))


register("unet")(UnetRecon)

# The U-net group of the paper's Table 2. "#layers" counts the down- plus up-sampling stages, so
# 8 layers are fastMRI's 4 pools and 4 layers are 2 pools (the table's "#pools" column lists 4
# for every row, which contradicts its 4-layer rows; the layer count is what the text says the
# group varies). `unet-small` trains in minutes on 2 CPU cores at 160x160 and learns a residual
# (see UnetRecon): at the demo's budget the plain U-net falls below zero-filling on real anatomy.
UNET_VARIANTS: dict[str, dict[str, Any]] = {
    "unet-ref": {"chans": 32, "num_pool_layers": 4},
    "unet2": {"chans": 16, "num_pool_layers": 4},
    "unet3": {"chans": 16, "num_pool_layers": 2},
    "unet4": {"chans": 8, "num_pool_layers": 4},
    "unet5": {"chans": 8, "num_pool_layers": 2},
    "unet-small": {"chans": 16, "num_pool_layers": 3, "residual": True},
}
for _name, _architecture in UNET_VARIANTS.items():
    register_preset(_name, UnetRecon, _architecture)
