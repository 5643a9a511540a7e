"""Test-time training (Darestani, Liu & Heckel, ICML 2022): fine-tune a trained network on one measurement.

For each slice, a copy of the base method's network is fine-tuned with Adam on the self-supervised
data-consistency loss (`loss`: l2, or l1 as the authors' normalised l1)

    L_fit(theta) = ||M_fit (k(theta) - y)||_p^p / ||M_fit y||_p^p,

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
cascade's k-space) is used as is. Otherwise the base returns a magnitude image (the U-net's RSS
image m), which needs a complex coil model A to reach k-space:

- `maps: centre`: coil images S_i m with S_i = x_i / RSS(x) of the low-resolution coil images
  x_i of the centre band, which carry each coil's sensitivity and the image phase in one map and
  reproduce RSS(S m) = m. `maps: espirit` (default): ESPIRiT maps (or meta `maps=`) times the
  phase of the zero-filled SENSE image (the aliasing of the zero-filled image corrupts that phase).
- `noise_bias` (default off): an RSS image is not a magnitude of coil images: its square carries
  the coils' noise power, E RSS^2 = |x|^2 + sum_i sigma_i^2, which no S m reproduces (fitting it
  pulls the dim regions' noise floor down by about sqrt(coils); SSIM, mostly decided there, falls).
  So m is mapped to sqrt(max(m^2 - sum_i sigma_i^2, 0)) first, sigma_i estimated (`noise_power`)
  from the readout-oversampling rows outside meta `target_shape`, which hold only noise; without
  such rows the bias is taken as 0.

`anchor` (default 0: off) adds anchor * ||U (k(theta) - k(theta_0))||_p^p / ||M_fit y||_p^p to the
fit loss, U the unmeasured locations and k(theta_0) the base's own estimate: the data say nothing
there, so the base's estimate is kept as the prior (a MAP fit with the base as its mean). It limits
what fine-tuning adds in the null space of the sampling, which on the demo's present U-net was
structure in the dim regions (docs/remedy.md has the measurements, on and off).

`sparsity` (default 0: off; magnitude bases only) adds sparsity * ||m(theta)||_1 / ||m(theta_0)||_1,
m the bias-free signal magnitude above: a pull of the dim regions' floor towards 0, which the
data-consistency term alone does not give (the floor lies in the sampling's null space). VarNet's
own k-space estimate has no such magnitude, so a sparsity weight on it is a config error.

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
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mrirobust.errors import ConfigError, ShapeError
from mrirobust.methods.base import Reconstructor, build, describe, register
from mrirobust.methods.baselines import coil_maps
from mrirobust.methods.settings import at_least
from mrirobust.methods.varnet import centre_positions, low_frequency_count
from mrirobust.physics.combine import rss, sense_combine
from mrirobust.physics.espirit import EspiritSettings
from mrirobust.physics.fft import fft2c, ifft2c
from mrirobust.physics.masks import check_mask


SURROGATES = ("fine-tuned", "base")  # what attacks may differentiate in place of TTT (`attack_surrogates`)


def centre_band(mask: torch.Tensor) -> torch.Tensor:
    """The contiguous sampled centre band (B, 1, Hm, W): columns for a column mask, a square for a 2-D one."""
    count = low_frequency_count(mask)  # (B,)
    height, width = mask.shape[-2:]
    band = centre_positions(count, width)[:, None, None, :]
    if height > 1:
        band = band & centre_positions(count, height)[:, None, :, None]
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


def centre_maps(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Combined sensitivity-and-phase maps (B, C, H, W): the centre band's coil images over their RSS."""
    low = ifft2c(kspace * centre_band(mask))
    norm = rss(low)[:, None]
    return low / norm.clamp_min(1e-3 * norm.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(norm.dtype).tiny))


def noise_power(kspace: torch.Tensor, mask: torch.Tensor, target_shape: tuple[int, int] | None) -> torch.Tensor:
    """sum_i sigma_i^2 (B,): the coils' noise power per image pixel of fully sampled data, the bias
    of RSS^2. Read from the zero-filled coil images' rows outside the target's rows (readout
    oversampling), with the median for robustness (median |n|^2 = sigma^2 ln 2 for complex Gaussian
    noise) and divided by the sampled fraction; 0 when the target spans every row."""
    height = kspace.shape[-2]
    rows = height if target_shape is None else min(int(target_shape[0]), height)
    if rows == height:
        return torch.zeros(kspace.shape[0], device=kspace.device)
    images = ifft2c(kspace * mask)
    top = (height - rows) // 2
    margin = torch.cat([images[..., :top, :], images[..., top + rows:, :]], dim=-2)
    per_coil = margin.abs().square().flatten(2).median(dim=2).values / math.log(2)  # (B, C)
    fraction = mask.flatten(1).float().mean(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    return per_coil.sum(dim=1) / fraction


def masked_norm(values: torch.Tensor, where: torch.Tensor, power: int = 2) -> torch.Tensor:
    """||where values||_p^p per slice (B,), p = `power` (1 or 2)."""
    magnitude = torch.where(where, values, 0).abs()
    return (magnitude.square() if power == 2 else magnitude).flatten(1).sum(dim=1)


def relative_error(estimate: torch.Tensor, kspace: torch.Tensor, where: torch.Tensor, power: int = 2) -> torch.Tensor:
    """||where (estimate - y)||_p^p / ||where y||_p^p per slice (B,), p = `power` (1 or 2)."""
    energy = masked_norm(kspace, where, power)
    return masked_norm(estimate - kspace, where, power) / energy.clamp_min(torch.finfo(energy.dtype).tiny)


@register("ttt")
@dataclass
class TestTimeTraining(Reconstructor):
    """Test-time training of a trained `base` method (a method config with its `checkpoint`).

    `iters`: most Adam steps per slice; `lr`: Adam's step; `holdout`: fraction of the measured
    locations (outside the centre band) held back for early stopping; `patience`: stop once the
    held-back loss has not improved for this many iterations; `seconds`: optional time budget per
    slice; `seed`: the split; `loss`: l1 or l2; `anchor`: weight of the proximity to the base's
    k-space estimate at the unmeasured locations (0: none); `sparsity`: weight of the signal's
    relative l1 norm (0: none; both in the module docstring). `maps` (centre
    or espirit), `noise_bias` and the ESPIRiT settings are for bases without a k-space estimate
    (U-net); see the module docstring.
    `surrogates`: what attacks differentiate (`attack_surrogates`): fine-tuned and/or base.
    """

    __test__ = False  # not a pytest test class despite its name

    base: dict[str, Any]
    iters: int = 100
    lr: float = 1e-4
    holdout: float = 0.2
    patience: int = 10
    seconds: float | None = None
    seed: int = 0
    anchor: float = 0.0
    sparsity: float = 0.0
    loss: str = "l2"
    maps: str = "espirit"
    noise_bias: bool = False
    surrogates: tuple[str, ...] = SURROGATES
    espirit: EspiritSettings = EspiritSettings()
    built: Any = field(init=False, repr=False, compare=False)

    family = "ttt"
    optimisation_based = True  # a per-measurement optimisation (see docs/methods.md on attacks)
    wraps = "base"

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        at_least(settings, 0, "iters", "patience", "seconds", "anchor", "sparsity")
        if not settings["lr"] > 0:
            raise ConfigError("lr", f"{settings['lr']!r} must be > 0")
        if not 0 < settings["holdout"] < 1:
            raise ConfigError("holdout", f"{settings['holdout']!r} must lie strictly between 0 and 1")
        for name, allowed in (("loss", ("l1", "l2")), ("maps", ("centre", "espirit"))):
            if settings[name] not in allowed:
                raise ConfigError(name, f"{settings[name]!r} must be one of {', '.join(allowed)}")
        surrogates = tuple(settings["surrogates"])
        if not surrogates or len(set(surrogates)) < len(surrogates) or not set(surrogates) <= set(SURROGATES):
            raise ConfigError("surrogates", f"{list(surrogates)!r}: give one or both of {', '.join(SURROGATES)}")
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
        if self.sparsity > 0 and callable(getattr(self.built, "kspace_with", None)):
            raise ConfigError("sparsity", f"{self.sparsity!r}: {self.base['name']!r} estimates its own k-space, so "
                                          "there is no magnitude signal to make sparse; give 0")

    def estimate(self, module: nn.Module, kspace: torch.Tensor, mask: torch.Tensor,
                 maps: torch.Tensor | None = None, phase: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None, **meta: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network's k-space estimate (B, C, H, W) from the measurement `mask` samples and, for a
        magnitude base, the signal magnitude (B, H, W) behind it (the network's image with the noise
        bias removed; None for a base with its own k-space estimate). A magnitude base needs the coil
        `maps`, the image `phase` and, with `noise_bias`, the RSS noise power `bias` (B,) (`coil_model`:
        fixed while fine-tuning, so computed once per slice)."""
        own = getattr(self.built, "kspace_with", None)
        if callable(own):
            return own(module, kspace * mask, mask, **meta), None
        image = self.built.reconstruct_with(module, kspace * mask, mask, **meta)  # magnitude (B, H, W)
        if bias is not None:
            power = bias[:, None, None]
            image = (image.square() - power).clamp_min(0).add(1e-12 * power + torch.finfo(image.dtype).tiny).sqrt()
        return fft2c(maps * (image * phase)[:, None]), image

    def coil_model(self, kspace: torch.Tensor, mask: torch.Tensor, fit: torch.Tensor,
                   meta: Mapping[str, Any]) -> dict[str, Any]:
        """`maps`, `phase` and `bias` of a magnitude base's k-space model (see the module docstring)."""
        if self.maps == "centre":  # given sensitivity maps lack the phase: not used here
            model = {"maps": centre_maps(kspace, mask), "phase": torch.ones_like(kspace[:, 0])}
        else:
            maps = meta["maps"] if "maps" in meta else coil_maps(self.espirit, kspace, mask, None)
            model = {"maps": maps, "phase": zero_filled_phase(kspace, fit, maps)}
        if self.noise_bias:
            model["bias"] = noise_power(kspace, mask, meta.get("target_shape"))
        return model

    def fine_tune(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> tuple[nn.Module, torch.Tensor]:
        """One slice (1, C, H, W): the fine-tuned module with the lowest held-back loss, and the
        (fit, held-back) losses of every evaluated iterate, (iterates, 2); iterate 0 is the base."""
        fit, held = holdout_split(mask, self.holdout, self.seed)
        if not callable(getattr(self.built, "kspace_with", None)):
            meta = {**meta, **self.coil_model(kspace, mask, fit, meta)}
        power = 1 if self.loss == "l1" else 2
        module = copy.deepcopy(self.built.model).to(kspace.device).eval()
        best = copy.deepcopy(module.state_dict())
        optimizer = torch.optim.Adam(module.parameters(), lr=self.lr)
        began, losses, best_loss, best_at = time.perf_counter(), [], float("inf"), 0
        start, start_norm, unmeasured = None, None, ~mask.expand_as(kspace)
        scale = masked_norm(kspace, fit, power).clamp_min(torch.finfo(torch.float32).tiny)
        for step in range(self.iters + 1):
            estimate, signal = self.estimate(module, kspace, fit, **meta)
            fit_loss = relative_error(estimate, kspace, fit, power).sum()
            objective = fit_loss
            if self.sparsity > 0:  # the signal's l1 norm, relative to the base's (iterate 0)
                norm = signal.abs().flatten(1).sum(dim=1)
                start_norm = norm.detach().clamp_min(torch.finfo(norm.dtype).tiny) if start_norm is None else start_norm
                objective = objective + self.sparsity * (norm / start_norm).sum()
            if self.anchor > 0:  # the base's own estimate (iterate 0) anchors the unmeasured locations
                start = estimate.detach() if start is None else start
                objective = objective + self.anchor * (masked_norm(estimate - start, unmeasured, power) / scale).sum()
            held_loss = relative_error(estimate.detach(), kspace, held, power).sum()
            losses.append(torch.stack([fit_loss.detach(), held_loss]))
            value = float(held_loss)  # the one host sync per iteration: the stop decision
            if value < best_loss:
                best_loss, best_at = value, step
                best = {k: v.detach().clone() for k, v in module.state_dict().items()}
            out_of_time = self.seconds is not None and time.perf_counter() - began >= self.seconds
            if step == self.iters or step - best_at >= self.patience or out_of_time:
                break
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
        module.load_state_dict(best)
        return module, torch.stack(losses)

    def fine_tuned(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> FineTuned:
        """Every slice's fine-tuned network, as a method that runs slice b through network b."""
        mask = batch_mask(mask, kspace)
        modules = []
        with torch.inference_mode(False), torch.enable_grad():
            for b in range(kspace.shape[0]):  # one optimisation per slice
                one = kspace[b:b + 1].clone()  # a normal tensor even if the caller is in inference mode
                modules.append(self.fine_tune(one, mask[b:b + 1], **one_slice(meta, b, kspace.shape[0]))[0])
        return FineTuned(self.built, modules)

    def attack_surrogates(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> list[Reconstructor]:
        """What attacks differentiate in place of TTT (a transfer attack: how the fine-tuning would
        respond to the perturbation is not differentiated), in `surrogates` order: `fine-tuned`, the
        networks TTT fine-tuned on each slice of this clean measurement (their image is TTT's), and
        `base`, the base network. Neither is always the stronger (docs/methods.md), so the default
        attacks both and keeps the stronger per slice."""
        return [self.built if name == "base" else self.fine_tuned(kspace, mask, **meta) for name in self.surrogates]

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        with torch.no_grad():
            return self.fine_tuned(kspace, mask, **meta).reconstruct(kspace, mask, **meta)


def batch_mask(mask: torch.Tensor, kspace: torch.Tensor) -> torch.Tensor:
    """A checked mask as (B, 1, Hm, W), one entry per slice of `kspace`, on its device."""
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    return mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape)).expand(kspace.shape[0], -1, -1, -1)


def one_slice(meta: Mapping[str, Any], b: int, batch: int) -> dict[str, Any]:
    """Slice b's meta: batched tensors (first dimension `batch`) cut to b:b+1, the rest as given."""
    return {k: (v[b:b + 1] if isinstance(v, torch.Tensor) and v.shape[:1] == (batch,) else v) for k, v in meta.items()}


class FineTuned(Reconstructor):
    """A base method with one fine-tuned network per slice: slice b of a batch goes through network b
    (differentiable in the k-space, so attacks run PGD on it)."""

    differentiable = True
    reproduces = True  # on the measurement it was fine-tuned on, its image is TTT's, bit for bit

    def __init__(self, base: Reconstructor, modules: list[nn.Module]) -> None:
        self.base, self.modules = base, [module.requires_grad_(False) for module in modules]  # attacks need dz only
        self.name = f"{base.name} fine-tuned"

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        if kspace.shape[0] != len(self.modules):
            raise ShapeError(f"{len(self.modules)} fine-tuned networks for a batch of {kspace.shape[0]} slices")
        mask = batch_mask(mask, kspace)
        return torch.cat([self.base.reconstruct_with(module, kspace[b:b + 1], mask[b:b + 1],
                                                     **one_slice(meta, b, kspace.shape[0]))
                          for b, module in enumerate(self.modules)])
