"""fastMRI's end-to-end variational network (Sriram et al. 2020) on native complex k-space.

`VarNet` has exactly the parameter layout of `fastmri.models.VarNet` (same `state_dict` keys and
shapes), so published fastMRI weights load unchanged. Internally k-space, coil images and coil
maps are complex tensors (B, C, H, W); only the U-nets see real tensors, with the real and
imaginary parts as two channels.

Memory: the reference VarNet (12 cascades, chans 18) does not train on 11 GB cards at fastMRI's
15 x 640 x 368 k-space. Knobs, largest saving first: `checkpoint_cascades=True` (keeps one
cascade's activations instead of all of them and recomputes them in the backward pass, for about
one extra forward pass of time); a smaller variant (fewer cascades or channels, `varnet2`..
`varnet5`); batch size 1; and `torch.no_grad()` wherever no gradient is needed (evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mrirobust.errors import ShapeError
from mrirobust.methods.base import register, register_preset
from mrirobust.methods.settings import at_least
from mrirobust.methods.unet import TrainedNetwork, Unet, load_weights, pad_to
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import center_crop, fft2c, ifft2c
from mrirobust.physics.masks import check_mask


class NormUnet(nn.Module):
    """U-net on one complex image: (N, 1, H, W) complex -> (N, 1, H, W) complex.

    The real and imaginary parts are two channels, each shifted and scaled by its own mean and
    (unbiased) std, zero-padded to a multiple of 16 in H and W, and the scaling undone after.
    `offset` is what the rescaled U-net output is added to: "mean" (fastMRI's), "input" (the
    U-net learns a correction of x) or "zero" (it learns an update from nothing); with the last
    two the last 1x1 convolution starts at zero, so a new module starts as x or as 0 exactly.
    """

    def __init__(self, chans: int, num_pools: int, drop_prob: float = 0.0, offset: str = "mean") -> None:
        super().__init__()
        self.offset = offset
        self.unet = Unet(2, 2, chans=chans, num_pool_layers=num_pools, drop_prob=drop_prob)
        if offset != "mean":
            self.unet.zero_output()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.cat([x.real, x.imag], dim=1)  # (N, 2, H, W)
        flat = parts.flatten(2)
        mean = flat.mean(dim=2)[..., None, None]
        std = flat.std(dim=2)[..., None, None]
        height, width = parts.shape[-2:]
        padded = pad_to((parts - mean) / std, (_multiple_of_16(height), _multiple_of_16(width)))
        base = {"mean": mean, "input": parts, "zero": 0}[self.offset]
        out = center_crop(self.unet(padded), (height, width)) * std + base
        return torch.complex(out[:, :1], out[:, 1:])


def _multiple_of_16(n: int) -> int:
    return 16 * math.ceil(n / 16)


def centre_positions(count: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool: the `count` (B,) central positions of an axis of `size`, placed as fastMRI
    places its centre (from (size - count + 1) // 2)."""
    positions = torch.arange(size, device=count.device)
    start = (size - count + 1) // 2
    return (positions >= start[:, None]) & (positions < (start + count)[:, None])


def low_frequency_count(mask: torch.Tensor) -> torch.Tensor:
    """Per batch element, the width of the contiguous sampled band around the centre column.

    fastMRI's rule: twice the shorter of the runs of sampled columns left and right of W // 2
    (a symmetric centre), at least 1. Read on the centre row, so column masks and 2-D masks with
    a fully sampled centre both work. `mask` is (B, 1, H or 1, W) bool; returns (B,) long.
    """
    row = mask[:, 0, mask.shape[2] // 2, :].long()
    centre = row.shape[-1] // 2
    left = row[:, :centre].flip(-1).cumprod(-1).sum(-1)
    right = row[:, centre:].cumprod(-1).sum(-1)
    return (2 * torch.minimum(left, right)).clamp_min(1)


class SensitivityModel(nn.Module):
    """Coil maps from the sampled k-space centre: per-coil NormUnet, then divided by their RSS.

    With `mask_center`, only the `num_low_frequencies` centre columns are used (fastMRI's
    placement: from (W - n + 1) // 2); given as an int or (B,) tensor, else read off the mask.
    """

    def __init__(self, chans: int, num_pools: int, drop_prob: float = 0.0, mask_center: bool = True,
                 offset: str = "mean") -> None:
        super().__init__()
        self.mask_center = mask_center
        self.norm_unet = NormUnet(chans, num_pools, drop_prob=drop_prob, offset=offset)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor,
                num_low_frequencies: int | torch.Tensor | None = None) -> torch.Tensor:
        batch, coils, height, width = kspace.shape
        images = ifft2c(self.calibration(kspace, mask, num_low_frequencies)).reshape(batch * coils, 1, height, width)
        maps = self.norm_unet(images).reshape(batch, coils, height, width)
        return maps / rss(maps, dim=1)[:, None]

    def calibration(self, kspace: torch.Tensor, mask: torch.Tensor,
                    num_low_frequencies: int | torch.Tensor | None = None) -> torch.Tensor:
        """The k-space the maps are computed from: its ACS columns only, with `mask_center`."""
        if not self.mask_center:
            return kspace
        batch, width = kspace.shape[0], kspace.shape[-1]
        if num_low_frequencies is None or (isinstance(num_low_frequencies, int) and num_low_frequencies == 0):
            count = low_frequency_count(mask)
        else:
            count = torch.as_tensor(num_low_frequencies, device=kspace.device).long().expand(batch)
        return kspace * centre_positions(count, width)[:, None, None, :]


class VarNetBlock(nn.Module):
    """One cascade: k - dc_weight * M (k - k0) - F S R(S^H F^H k), R a NormUnet."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(self, current: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                maps: torch.Tensor) -> torch.Tensor:
        soft_dc = torch.where(mask, current - reference, 0) * self.dc_weight
        image = (ifft2c(current) * maps.conj()).sum(dim=1, keepdim=True)
        return current - soft_dc - fft2c(self.model(image) * maps)


class VarNet(nn.Module):
    """End-to-end VarNet: masked k-space (B, C, H, W) complex + bool mask (B, 1, H|1, W) -> RSS (B, H, W).

    `checkpoint_cascades` recomputes each cascade's activations in the backward pass instead of
    storing them (same outputs and gradients; see the module docstring on memory). `residual`: the
    sensitivity U-net corrects the ACS coil images and the cascade U-nets' updates start at zero
    (NormUnet offsets "input" and "zero"), so a new network is zero-filling with ACS maps.
    """

    def __init__(self, num_cascades: int = 12, sens_chans: int = 8, sens_pools: int = 4, chans: int = 18,
                 pools: int = 4, mask_center: bool = True, checkpoint_cascades: bool = False,
                 residual: bool = False) -> None:
        super().__init__()
        self.checkpoint_cascades = checkpoint_cascades
        self.sens_net = SensitivityModel(sens_chans, sens_pools, mask_center=mask_center,
                                         offset="input" if residual else "mean")
        self.cascades = nn.ModuleList(VarNetBlock(NormUnet(chans, pools, offset="zero" if residual else "mean"))
                                      for _ in range(num_cascades))

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                num_low_frequencies: int | torch.Tensor | None = None) -> torch.Tensor:
        return rss(ifft2c(self.estimate_kspace(masked_kspace, mask, num_low_frequencies)), dim=1)

    def estimate_kspace(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                        num_low_frequencies: int | torch.Tensor | None = None) -> torch.Tensor:
        """The last cascade's k-space (B, C, H, W), whose RSS image is the output."""
        maps = self.sens_net(masked_kspace, mask, num_low_frequencies)
        kspace = masked_kspace
        for cascade in self.cascades:
            if self.checkpoint_cascades and torch.is_grad_enabled():
                kspace = checkpoint(cascade, kspace, masked_kspace, mask, maps, use_reentrant=False)
            else:
                kspace = cascade(kspace, masked_kspace, mask, maps)
        return kspace


def fit_height(x: torch.Tensor, height: int) -> torch.Tensor:
    """Centre-crop or zero-pad axis -2 to `height` (crop and pad undo each other's placement)."""
    if x.shape[-2] >= height:
        return center_crop(x, (height, x.shape[-1]))
    return pad_to(x, (height, x.shape[-1]))


@dataclass
class VarnetRecon(TrainedNetwork):
    """fastMRI's end-to-end VarNet: masked k-space + mask -> VarNet -> RSS image (B, H, W).

    The mask is broadcast to (B, 1, H|1, W); meta `num_low_frequencies` (the mask function's
    centre width) is passed on when given, else read off the mask's centre (`low_frequency_count`).
    `checkpoint` is a fastMRI VarNet checkpoint (`unet.load_weights`). Memory knobs: see the
    module docstring (`checkpoint_cascades`).

    `resolution_fix` (the paper's fix for the Stanford knees, section 5.1): the readout length H
    of the training k-space (640 for fastMRI knees). k-space of another length (Stanford: 320) has
    another frequency spacing; it is resampled to the training spacing by zero-padding (or
    cropping) the coil images along the readout to `resolution_fix` rows, and the output image is
    cropped back, so the field of view and pixel scale are unchanged. Exact for column masks,
    which sample every readout row; the phase-encode axis is left alone, since resampling it would
    smear the unsampled columns into the sampled ones (VarNet is trained on varying widths anyway).

    `residual=True` (`varnet-small`'s): a new network starts as zero-filling with the ACS coil
    images over their RSS as coil maps, and learns corrections of both (`VarNet`). fastMRI's
    random start has coil maps far worse than these ACS maps (fraction of coil-image energy outside
    their span 5-18 % vs 0.3 % on the demo data after the demo's 6 epochs) and cascades that make
    the image worse before they learn to improve it; at the demo's budget it never recovers on
    unfamiliar anatomy. Same parameters (fastMRI checkpoints still load); False is fastMRI's.
    """

    checkpoint: str | None = None
    num_cascades: int = 12
    sens_chans: int = 8
    sens_pools: int = 4
    chans: int = 18
    pools: int = 4
    mask_center: bool = True
    checkpoint_cascades: bool = False
    resolution_fix: int | None = None
    residual: bool = False
    model: nn.Module = field(init=False, repr=False, compare=False)

    # fastMRI trains its VarNet with an SSIM loss and Adam at lr 3e-4.
    train_defaults = {"loss": "ssim", "optimizer": "adam", "lr": 3e-4}

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        at_least(settings, 1, "sens_chans", "sens_pools", "chans", "pools", "resolution_fix")
        at_least(settings, 0, "num_cascades")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model = VarNet(self.num_cascades, self.sens_chans, self.sens_pools, self.chans, self.pools,
                            mask_center=self.mask_center, checkpoint_cascades=self.checkpoint_cascades,
                            residual=self.residual)
        if self.checkpoint is not None:
            load_weights(self.model, self.checkpoint, prefix="varnet.", residual=self.residual)

    def reconstruct_with(self, model: nn.Module, kspace: torch.Tensor, mask: torch.Tensor,
                         num_low_frequencies: int | torch.Tensor | None = None, **meta: Any) -> torch.Tensor:
        masked, mask, resample = self._inputs(kspace, mask)
        image = model(masked, mask, num_low_frequencies)
        return fit_height(image, kspace.shape[-2]) if resample else image

    def kspace_with(self, model: nn.Module, kspace: torch.Tensor, mask: torch.Tensor,
                    num_low_frequencies: int | torch.Tensor | None = None, **meta: Any) -> torch.Tensor:
        """`model`'s k-space estimate (B, C, H, W) of the measurement, at its readout length (test-time training)."""
        masked, mask, resample = self._inputs(kspace, mask)
        estimate = model.estimate_kspace(masked, mask, num_low_frequencies)
        return fft2c(fit_height(ifft2c(estimate), kspace.shape[-2])) if resample else estimate

    def _inputs(self, kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(masked k-space, mask (B, 1, H|1, W), resampled): the network's inputs, `resolution_fix` applied."""
        mask = check_mask(mask, kspace.shape).to(kspace.device)
        mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape)).expand(kspace.shape[0], -1, -1, -1)
        if mask.shape[1] != 1:
            raise ShapeError(f"VarNet needs one mask for all coils, got mask {tuple(mask.shape)}")
        masked = kspace * mask
        height = kspace.shape[-2]
        resample = self.resolution_fix is not None and self.resolution_fix != height
        if resample:
            if mask.shape[-2] != 1:
                raise ShapeError(f"resolution_fix needs a column mask (B, 1, 1, W), got {tuple(mask.shape)}")
            masked = fft2c(fit_height(ifft2c(masked), self.resolution_fix))
        return masked, mask, resample


register("varnet")(VarnetRecon)

# The VarNet group of the paper's Table 1 (all 3x3 kernels); `varnet-small` trains in minutes on
# 2 CPU cores at 160x160 and starts from zero-filling with ACS maps (`residual`, see VarnetRecon).
VARNET_VARIANTS: dict[str, dict[str, Any]] = {
    "varnet-ref": {"chans": 18, "pools": 4, "sens_pools": 4, "sens_chans": 8, "num_cascades": 12},
    "varnet2": {"chans": 9, "pools": 4, "sens_pools": 4, "sens_chans": 4, "num_cascades": 12},
    "varnet3": {"chans": 9, "pools": 4, "sens_pools": 4, "sens_chans": 4, "num_cascades": 6},
    "varnet4": {"chans": 4, "pools": 4, "sens_pools": 4, "sens_chans": 2, "num_cascades": 12},
    "varnet5": {"chans": 4, "pools": 4, "sens_pools": 4, "sens_chans": 2, "num_cascades": 6},
    "varnet-small": {"chans": 8, "pools": 3, "sens_pools": 2, "sens_chans": 4, "num_cascades": 4, "residual": True},
}
# On the demo data, varnet-small reaches validation SSIM 0.89 in 20 epochs at lr 1e-3 (batch 2)
# but only 0.77 at fastMRI's 3e-4 (batch 4).
VARNET_TRAIN_DEFAULTS: dict[str, dict[str, float]] = {"varnet-small": {"lr": 1e-3}}
for _name, _architecture in VARNET_VARIANTS.items():
    register_preset(_name, VarnetRecon, _architecture, VARNET_TRAIN_DEFAULTS.get(_name))
