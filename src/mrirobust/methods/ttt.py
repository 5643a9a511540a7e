"""Test-time training (Darestani, Liu & Heckel, ICML 2022): fine-tune a trained network on one measurement.

For each slice, a copy of the base method's network is fine-tuned with Adam on the self-supervised
data-consistency loss

    L_fit(theta) = ||M_fit (k(theta) - y)||^2 / ||M_fit y||^2,

k(theta) the network's k-space estimate from the fit part of the measurement (input M_fit y), and
stopped early on the same loss over the held-back locations M_held (self-validation): the weights
with the lowest held-back loss (the base's own weights, iterate 0, included) give the output
f(y), run on the full measurement. So TTT returns the base's reconstruction when fine-tuning never
helps on data it did not fit.

The split: measured locations are the mask's entries (columns of a column mask, points of a 2-D
mask); the contiguous centre band (the calibration lines, `low_frequency_count`) is always kept
for fitting, and `holdout` of the other measured locations are held back, drawn from `seed` per
slice (the same slice gets the same split whatever batch it is in).

k-space estimate: a base offering `kspace_with(module, kspace, mask, **meta)` (VarNet: its final
cascade's k-space) is used as is; otherwise (the U-net's magnitude image) the image gets the phase
of the zero-filled SENSE-combined image and goes through A = F S with ESPIRiT maps (or meta
`maps=`) of the measurement.

Protocol for a base (built-in U-net and VarNet, plug-ins alike): `trainable` with its weights in
`model` (a torch Module) and `reconstruct_with(module, kspace, mask, **meta)`; optionally
`kspace_with`. The base method is never changed: its module is deep-copied per slice.

Cost and syncs: slices are fine-tuned one after another (each is its own optimisation); the loss,
split and operator are batched tensor code. Early stopping reads one scalar per iteration on the
host (the stop decision), next to a network forward and backward pass. `seconds` bounds the
fine-tuning per slice by wall-clock time, which makes a run that hits it depend on the machine.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mrirobust.errors import ConfigError
from mrirobust.methods.base import Reconstructor, build, describe, register
from mrirobust.methods.baselines import coil_maps
from mrirobust.methods.settings import at_least
from mrirobust.methods.varnet import low_frequency_count
from mrirobust.physics.combine import sense_combine
from mrirobust.physics.espirit import EspiritSettings
from mrirobust.physics.fft import fft2c, ifft2c
from mrirobust.physics.masks import check_mask


def centre_band(mask: torch.Tensor) -> torch.Tensor:
    """The contiguous sampled centre band (B, 1, Hm, W): columns for a column mask, a square for a 2-D one."""
    count = low_frequency_count(mask)  # (B,)
    height, width = mask.shape[-2:]
    columns = torch.arange(width, device=mask.device)
    start = (width - count + 1) // 2
    band = (columns >= start[:, None]) & (columns < (start + count)[:, None])  # (B, W)
    band = band[:, None, None, :]
    if height > 1:
        rows = torch.arange(height, device=mask.device)
        top = (height - count + 1) // 2
        band = band & ((rows >= top[:, None]) & (rows < (top + count)[:, None]))[:, None, :, None]
    return band & mask


def holdout_split(mask: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, held) bool masks of one slice's mask (1, 1, Hm, W): `fraction` of the measured
    locations outside the centre band held back, chosen by a generator seeded with `seed`."""
    candidates = mask & ~centre_band(mask)
    scores = torch.rand(mask.shape, generator=torch.Generator().manual_seed(seed)).to(mask.device)
    scores = torch.where(candidates, scores, torch.full_like(scores, 2.0)).flatten(1)
    count = (fraction * candidates.flatten(1).sum(dim=1)).round().long()  # (1,)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    held = (ranks < count[:, None]).reshape(mask.shape) & candidates
    return mask & ~held, held


def zero_filled_phase(kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """The unit phase (B, H, W) of the SENSE-combined zero-filled image of the `mask` samples."""
    phase = sense_combine(ifft2c(kspace * mask), maps)
    return phase / phase.abs().clamp_min(torch.finfo(phase.real.dtype).tiny)


def relative_error(estimate: torch.Tensor, kspace: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """||where (estimate - y)||^2 / ||where y||^2 per slice (B,)."""
    residual = torch.where(where, estimate - kspace, 0).abs().square().flatten(1).sum(dim=1)
    energy = torch.where(where, kspace, 0).abs().square().flatten(1).sum(dim=1)
    return residual / energy.clamp_min(torch.finfo(energy.dtype).tiny)


@register("ttt")
@dataclass
class TestTimeTraining(Reconstructor):
    """Test-time training of a trained `base` method (a method config with its `checkpoint`).

    `iters`: most Adam steps per slice; `lr`: Adam's step; `holdout`: fraction of the measured
    locations (outside the centre band) held back for early stopping; `patience`: stop once the
    held-back loss has not improved for this many iterations; `seconds`: optional time budget per
    slice; `seed`: the split. ESPIRiT settings are for bases without a k-space estimate (U-net).
    """

    __test__ = False  # not a pytest test class despite its name

    base: dict[str, Any]
    iters: int = 100
    lr: float = 1e-4
    holdout: float = 0.2
    patience: int = 10
    seconds: float | None = None
    seed: int = 0
    espirit: EspiritSettings = EspiritSettings()
    built: Any = field(init=False, repr=False, compare=False)

    family = "ttt"
    optimisation_based = True  # a per-measurement optimisation (see docs/methods.md on attacks)
    wraps = "base"

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        at_least(settings, 0, "iters", "patience", "seconds")
        if not settings["lr"] > 0:
            raise ConfigError("lr", f"{settings['lr']!r} must be > 0")
        if not 0 < settings["holdout"] < 1:
            raise ConfigError("holdout", f"{settings['holdout']!r} must lie strictly between 0 and 1")
        try:
            base = describe(settings["base"])
        except ConfigError as error:
            raise ConfigError(f"base.{error.field}", error.problem) from None
        if not base.trainable:
            raise ConfigError("base", f"{base.name!r} is not a trainable network; ttt fine-tunes one")

    def __post_init__(self) -> None:
        super().__post_init__()
        if describe(self.base).needs_checkpoint:
            raise ConfigError("base.checkpoint", "missing: ttt fine-tunes trained weights (or give the base a "
                                                 "`train` section in a study)")
        self.built = build(self.base)
        if not isinstance(getattr(self.built, "model", None), nn.Module) \
                or not callable(getattr(self.built, "reconstruct_with", None)):
            raise ConfigError("base", f"{self.base['name']!r} has no `model` module and `reconstruct_with`")

    def estimate_kspace(self, module: nn.Module, kspace: torch.Tensor, mask: torch.Tensor,
                        maps: torch.Tensor | None = None, phase: torch.Tensor | None = None,
                        **meta: Any) -> torch.Tensor:
        """The network's k-space estimate (B, C, H, W) from the measurement `mask` samples; a base
        without its own estimate needs the coil `maps` and the `phase` of the zero-filled image of
        those samples (`zero_filled_phase`: fixed while fine-tuning, so computed once per slice)."""
        own = getattr(self.built, "kspace_with", None)
        if callable(own):
            return own(module, kspace * mask, mask, **meta)
        image = self.built.reconstruct_with(module, kspace * mask, mask, **meta)  # magnitude (B, H, W)
        return fft2c(maps * (image * phase)[:, None])

    def fine_tune(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> tuple[nn.Module, torch.Tensor]:
        """One slice (1, C, H, W): the fine-tuned module with the lowest held-back loss, and the
        (fit, held-back) losses of every evaluated iterate, (iterates, 2); iterate 0 is the base."""
        fit, held = holdout_split(mask, self.holdout, self.seed)
        if not callable(getattr(self.built, "kspace_with", None)):
            if "maps" not in meta:
                meta["maps"] = coil_maps(self.espirit, kspace, mask, None)
            meta["phase"] = zero_filled_phase(kspace, fit, meta["maps"])
        module = copy.deepcopy(self.built.model).to(kspace.device).eval()
        best = copy.deepcopy(module.state_dict())
        optimizer = torch.optim.Adam(module.parameters(), lr=self.lr)
        began, losses, best_loss, best_at = time.perf_counter(), [], float("inf"), 0
        for step in range(self.iters + 1):
            estimate = self.estimate_kspace(module, kspace, fit, **meta)
            fit_loss = relative_error(estimate, kspace, fit).sum()
            held_loss = relative_error(estimate.detach(), kspace, held).sum()
            losses.append(torch.stack([fit_loss.detach(), held_loss]))
            value = float(held_loss)  # the one host sync per iteration: the stop decision
            if value < best_loss:
                best_loss, best_at = value, step
                best = {k: v.detach().clone() for k, v in module.state_dict().items()}
            out_of_time = self.seconds is not None and time.perf_counter() - began >= self.seconds
            if step == self.iters or step - best_at >= self.patience or out_of_time:
                break
            optimizer.zero_grad(set_to_none=True)
            fit_loss.backward()
            optimizer.step()
        module.load_state_dict(best)
        return module, torch.stack(losses)

    def attack_surrogate(self) -> Reconstructor:
        """The base network, which attacks differentiate in place of the fine-tuning (a transfer attack)."""
        return self.built

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        mask = check_mask(mask, kspace.shape).to(kspace.device)
        mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape)).expand(kspace.shape[0], -1, -1, -1)
        images = []
        with torch.inference_mode(False), torch.enable_grad():
            for b in range(kspace.shape[0]):  # one optimisation per slice
                one = kspace[b:b + 1].clone()  # a normal tensor even if the caller is in inference mode
                extra = {k: (v[b:b + 1] if isinstance(v, torch.Tensor) and v.shape[:1] == kspace.shape[:1] else v)
                         for k, v in meta.items()}
                module, _ = self.fine_tune(one, mask[b:b + 1], **extra)
                with torch.no_grad():
                    images.append(self.built.reconstruct_with(module, one, mask[b:b + 1], **extra))
        return torch.cat(images)
