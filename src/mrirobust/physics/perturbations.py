"""Physical perturbations of multi-coil k-space and shifts of the sampling, each at a severity.

A perturbation is one small frozen dataclass: its `kind`, a `severity` (0 is exactly the input,
bit for bit; 1.0 is the documented strong-but-plausible level of `SEVERITY_ONE`), a `seed`, the
kind's settings, and optional explicit `params`. The params are the perturbation's free
coordinates in the unit box [0, 1]^P (when and where a patient moves, where spikes fall, which coil
fails, the B0 map's shape); the severity scales their amplitudes. None draws them from the seed,
so (kind, severity, seed) is one reproducible perturbation and the worst-case search
(`robustness.worst_case`) moves through the same box at a fixed severity.

`perturb(kspace, spec, maps=..., mask=...)` acts on the fully sampled multi-coil k-space
(B, C, H, W) (H readout, W phase encode) before the mask is applied; `mask` says which entries will
be measured (noise and spikes refer to those; motion shots are made of the acquired lines). The
same spec applies the same perturbation (the same draws) to every slice of a batch, so a batch
equals its slices perturbed one by one; give slices their own seeds for independent draws.
Sampling shifts change the mask instead: `perturb_mask`. Random draws use explicit
torch.Generators, on the host for params and on the k-space's device for noise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mrirobust.errors import ConfigError, ShapeError
from mrirobust.physics.masks import Columns, Seed, acquired_only, check_mask, mask_spec, poisson_disc_mask
from mrirobust.physics.perturbation_base import (
    Perturbation,
    draw_params,
    measured_entries,
    setting,
    signed,
)
from mrirobust.physics.motion import rigid_motion_kspace
from mrirobust.physics.offresonance import off_resonance_kspace


@dataclass(frozen=True, kw_only=True)
class Noise(Perturbation):
    """Complex Gaussian noise of std severity * max_sigma times the RMS of the measured entries.

    The k-space SNR (mean measured power over noise power) is 1 / (severity * max_sigma)^2.
    """

    kind: ClassVar[str] = "noise"
    max_sigma: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        setting(self.max_sigma > 0, self.kind, "max_sigma", f"{self.max_sigma} must be > 0")

    def severity_one(self):
        return (f"complex Gaussian noise of std {self.max_sigma:g} x the RMS of the measured k-space "
                f"(k-space SNR {-20 * math.log10(self.max_sigma):.1f} dB)")

    def apply(self, kspace, u, maps, mask):
        measured = measured_entries(mask, kspace.shape)[:, None]
        power = (kspace.abs().square() * measured).sum(dim=(1, 2, 3))
        count = measured.sum(dim=(1, 2, 3)) * kspace.shape[1]
        sigma = self.severity * self.max_sigma * torch.sqrt(power / count)
        generator = torch.Generator(device=kspace.device).manual_seed(self.seed)
        noise = torch.randn((1, *kspace.shape[1:]), generator=generator, device=kspace.device, dtype=kspace.dtype)
        return kspace + sigma.reshape(-1, 1, 1, 1).to(kspace.real.dtype) * noise


def noise_at_snr(snr_db: float, *, seed: int = 0, max_sigma: float = 0.2) -> Noise:
    """The Noise spec whose k-space SNR is `snr_db` (10 log10 of signal over noise power)."""
    return Noise(severity=10 ** (-snr_db / 20) / max_sigma, seed=seed, max_sigma=max_sigma)


@dataclass(frozen=True, kw_only=True)
class LinePhase(Perturbation):
    """meddlr's VORTEX motion: odd and even phase-encode lines each get one phase error theta.

    theta ~ U[-pi a, pi a] with a = severity * max_scale (params: odd, even, as meddlr draws them).
    """

    kind: ClassVar[str] = "line-phase"
    max_scale: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        setting(self.max_scale > 0, self.kind, "max_scale", f"{self.max_scale} must be > 0")

    def severity_one(self):
        return f"odd and even phase-encode lines each turned by a phase in [-pi a, pi a], a = {self.max_scale:g}"

    def n_params(self, shape):
        return 2

    def apply(self, kspace, u, maps, mask):
        odd, even = (math.pi * self.severity * self.max_scale * signed(u)).tolist()
        width = kspace.shape[-1]
        theta = torch.where(torch.arange(width) % 2 == 0, even, odd).to(torch.float64)
        phase = torch.polar(torch.ones_like(theta), -theta).to(device=kspace.device, dtype=kspace.dtype)
        return kspace * phase


@dataclass(frozen=True, kw_only=True)
class RigidMotion(Perturbation):
    """Rigid in-plane motion between shots, the object moving under fixed coil maps.

    The acquired lines are split into `shots` (interleaved: line rank mod shots; sequential:
    contiguous blocks); `events` motion events at shots 1 .. shots-1 (the first shot is the
    reference pose) each set a new pose with |shift| <= severity * max_shift pixels per axis and
    |rotation| <= severity * max_rotation degrees. Params per event: time, row shift, column
    shift, rotation.
    """

    kind: ClassVar[str] = "motion"
    needs_maps: ClassVar[bool] = True
    shots: int = 50
    events: int = 3
    max_shift: float = 3.0
    max_rotation: float = 3.0
    ordering: str = "interleaved"

    def __post_init__(self) -> None:
        super().__post_init__()
        setting(self.shots >= 2, self.kind, "shots", f"{self.shots} must be >= 2")
        setting(self.events >= 1, self.kind, "events", f"{self.events} must be >= 1")
        setting(self.max_shift >= 0 and self.max_rotation >= 0, self.kind, "max_shift/max_rotation",
                "must be >= 0")
        setting(self.ordering in ("interleaved", "sequential"), self.kind, "ordering",
                f"{self.ordering!r}: choose interleaved or sequential")

    def severity_one(self):
        return (f"{self.events} motion events over {self.shots} {self.ordering} shots, shifts up to "
                f"{self.max_shift:g} px and rotations up to {self.max_rotation:g} degrees")

    def n_params(self, shape):
        return 4 * self.events

    def apply(self, kspace, u, maps, mask):
        u = u.reshape(self.events, 4)
        start = 1 + torch.clamp((u[:, 0] * (self.shots - 1)).floor(), max=self.shots - 2).long()
        order = torch.argsort(start, stable=True)
        start = start[order]
        scale = self.severity * torch.tensor([self.max_shift, self.max_shift, self.max_rotation], dtype=torch.float64)
        poses = signed(u[order, 1:]) * scale
        acquired = measured_entries(mask, kspace.shape).any(dim=1)  # (B, W)
        rank = acquired.long().cumsum(dim=1) - 1
        if self.ordering == "interleaved":
            shot = rank % self.shots
        else:
            shot = rank * self.shots // acquired.sum(dim=1, keepdim=True).clamp_min(1)
        group = (shot[..., None] >= start.to(kspace.device)).sum(dim=-1)
        group = torch.where(acquired, group, torch.zeros_like(group))
        return rigid_motion_kspace(kspace, maps, poses.to(torch.float32), group)


@dataclass(frozen=True, kw_only=True)
class Spikes(Perturbation):
    """Herringbone: `count` spikes at distinct measured k-space locations, in every coil.

    A spike adds severity * max_intensity times that coil's peak |k-space| at a seeded phase, so
    the added energy is count * (severity * max_intensity)^2 * sum over coils of peak^2. Spike k
    lies in the k-th of `count` equal bands of the measured entries (flat order). Params per
    spike: position in its band, phase.
    """

    kind: ClassVar[str] = "spikes"
    count: int = 3
    max_intensity: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        setting(self.count >= 1, self.kind, "count", f"{self.count} must be >= 1")
        setting(self.max_intensity > 0, self.kind, "max_intensity", f"{self.max_intensity} must be > 0")

    def severity_one(self):
        return f"{self.count} spikes, each {self.max_intensity:g} x the coil's peak k-space magnitude"

    def n_params(self, shape):
        return 2 * self.count

    def apply(self, kspace, u, maps, mask):
        batch, coils, height, width = kspace.shape
        u = u.reshape(self.count, 2).to(kspace.device)
        measured = measured_entries(mask, kspace.shape).reshape(batch, -1)
        cumulative = measured.long().cumsum(dim=1)
        total = cumulative[:, -1:]
        if int(total.min()) < self.count:
            raise ShapeError(f"{self.count} spikes need at least as many measured k-space entries")
        band = torch.arange(self.count, device=kspace.device, dtype=torch.float64)
        rank = torch.minimum(((band + u[:, 0]) * total / self.count).floor().long(), total - 1)
        index = torch.searchsorted(cumulative, rank + 1)  # (B, count): flat position of that rank
        peak = kspace.abs().amax(dim=(-2, -1))  # (B, C)
        spike = torch.polar(torch.ones_like(u[:, 1]), 2 * math.pi * u[:, 1]).to(kspace.dtype)
        values = (self.severity * self.max_intensity) * peak[..., None].to(kspace.dtype) * spike
        flat = kspace.reshape(batch, coils, height * width)
        added = flat.scatter_add(2, index[:, None, :].expand(batch, coils, self.count), values)
        return added.reshape(kspace.shape)


COIL_MODES = ("drop", "fewer", "gain", "phase")


@dataclass(frozen=True, kw_only=True)
class CoilFault(Perturbation):
    """A failing receive chain: dropped coils (zeroed), fewer coils (removed), one coil's gain or phase.

    drop/fewer: ceil(severity * max_fraction * C) coils (at most C - 1); gain: one coil scaled by
    2^(+-severity * max_log2_gain); phase: one coil turned by +-severity * max_phase degrees.
    Params: one random key per coil (the lowest keys fail) and the signed amplitude.
    """

    kind: ClassVar[str] = "coils"
    mode: str = "drop"
    max_fraction: float = 0.5
    max_log2_gain: float = 1.0
    max_phase: float = 90.0

    def __post_init__(self) -> None:
        super().__post_init__()
        setting(self.mode in COIL_MODES, self.kind, "mode", f"{self.mode!r}: choose one of {', '.join(COIL_MODES)}")
        setting(0 < self.max_fraction < 1, self.kind, "max_fraction", f"{self.max_fraction} must be in (0, 1)")

    def severity_one(self):
        return {
            "drop": f"ceil({self.max_fraction:g} x coils) coils zeroed",
            "fewer": f"ceil({self.max_fraction:g} x coils) coils removed",
            "gain": f"one coil's gain x{2 ** self.max_log2_gain:g} or x{2 ** -self.max_log2_gain:g}",
            "phase": f"one coil's phase turned by +-{self.max_phase:g} degrees",
        }[self.mode]

    def n_params(self, shape):
        return shape[1] + 1

    def failing(self, u: torch.Tensor, coils: int) -> torch.Tensor:
        """Indices of the failing coils (sorted) from params `u`."""
        count = 1 if self.mode in ("gain", "phase") else \
            min(coils - 1, math.ceil(self.severity * self.max_fraction * coils - 1e-9))
        return torch.argsort(u[:coils], stable=True)[:count].sort().values

    def kept_coils(self, num_coils: int) -> torch.Tensor:
        """The coils that remain in `fewer` mode (to select the matching coil maps)."""
        u = torch.as_tensor(draw_params(self, (1, num_coils, 1, 1)), dtype=torch.float64)
        keep = torch.ones(num_coils, dtype=torch.bool)
        keep[self.failing(u, num_coils)] = False
        return torch.nonzero(keep)[:, 0]

    def apply(self, kspace, u, maps, mask):
        coils = kspace.shape[1]
        if coils < 2 and self.mode in ("drop", "fewer"):
            raise ShapeError(f"coil fault {self.mode!r} needs at least 2 coils, got {coils}")
        failing = torch.zeros(coils, dtype=torch.bool)
        failing[self.failing(u, coils)] = True
        if self.mode == "fewer":
            return kspace[:, (~failing).to(kspace.device)]
        amplitude = self.severity * float(signed(u[coils]))
        factor = {
            "drop": 0.0,
            "gain": 2.0 ** (amplitude * self.max_log2_gain),
            "phase": complex(math.cos(math.radians(amplitude * self.max_phase)),
                             math.sin(math.radians(amplitude * self.max_phase))),
        }[self.mode]
        where = failing.to(kspace.device)[None, :, None, None]
        return torch.where(where, kspace * factor, kspace)


@dataclass(frozen=True, kw_only=True)
class OffResonance(Perturbation):
    """A smooth B0 map (a polynomial of total degree `order`) with |df| <= severity * max_hz.

    Phase accrues along each readout of `readout_ms` (physics.offresonance); the largest readout
    displacement is severity * max_hz * readout_ms / 1000 pixels. Params: polynomial coefficients.
    """

    kind: ClassVar[str] = "b0"
    max_hz: float = 250.0
    readout_ms: float = 8.0
    order: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        setting(self.max_hz > 0 and self.readout_ms > 0, self.kind, "max_hz/readout_ms", "must be > 0")
        setting(self.order >= 0, self.kind, "order", f"{self.order} must be >= 0")

    def severity_one(self):
        return (f"a smooth B0 map (degree {self.order}) up to {self.max_hz:g} Hz with a {self.readout_ms:g} ms "
                f"readout: at most {self.max_hz * self.readout_ms / 1000:g} px readout displacement")

    def n_params(self, shape):
        return (self.order + 1) * (self.order + 2) // 2

    def field_hz(self, u: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """The B0 map (H, W) in Hz on the host: |df| <= severity * max_hz everywhere."""
        y = torch.linspace(-1, 1, shape[0], dtype=torch.float64)[:, None]
        x = torch.linspace(-1, 1, shape[1], dtype=torch.float64)[None, :]
        powers = [(i, j) for i in range(self.order + 1) for j in range(self.order + 1 - i)]
        weights = torch.tensor([1 / (1 + i + j) for i, j in powers], dtype=torch.float64)
        terms = torch.stack([(y**i) * (x**j) for i, j in powers])
        polynomial = ((weights * signed(u))[:, None, None] * terms).sum(dim=0) / weights.sum()
        return self.severity * self.max_hz * polynomial

    def apply(self, kspace, u, maps, mask):
        return off_resonance_kspace(kspace, self.field_hz(u, tuple(kspace.shape[-2:])), self.readout_ms / 1000)


SAMPLING_KINDS = ("random", "equispaced", "poisson")


@dataclass(frozen=True, kw_only=True)
class SamplingShift(Perturbation):
    """Another sampling than the method was tuned on: `mask_kind` at acceleration
    base_acceleration + severity * (max_acceleration - base_acceleration), with `center_fraction`.

    Changes the mask (`perturb_mask`), not the k-space. Column masks are fastMRI's (rounded to an
    integer acceleration); poisson is a 2-D variable-density Poisson-disc mask with a centre box
    of center_fraction of each axis.
    """

    kind: ClassVar[str] = "sampling"
    mask_kind: str = "random"
    base_acceleration: float = 4.0
    max_acceleration: float = 12.0
    center_fraction: float = 0.08

    def __post_init__(self) -> None:
        super().__post_init__()
        setting(self.mask_kind in SAMPLING_KINDS, self.kind, "mask_kind",
                f"{self.mask_kind!r}: choose one of {', '.join(SAMPLING_KINDS)}")
        setting(1 <= self.base_acceleration <= self.max_acceleration, self.kind, "accelerations",
                f"need 1 <= base_acceleration <= max_acceleration, got {self.base_acceleration}, "
                f"{self.max_acceleration}")

    def severity_one(self):
        return (f"a {self.mask_kind} mask at {self.max_acceleration:g}x (the {self.base_acceleration:g}x base "
                f"at severity 0 keeps the method's own mask), centre fraction {self.center_fraction:g}")

    @property
    def acceleration(self) -> float:
        return self.base_acceleration + self.severity * (self.max_acceleration - self.base_acceleration)

    def apply(self, kspace, u, maps, mask):
        return kspace


def sampling_mask(mask_kind: str, acceleration: float, center_fraction: float, shape: tuple[int, int],
                  seed: Seed, *, device: torch.device | str | None = None, columns: Columns = None) -> torch.Tensor:
    """A (W,) fastMRI column mask (random, equispaced) or an (H, W) Poisson-disc mask, seeded;
    `columns` are the acquired k-space columns (zero-padded ones are never sampled)."""
    if mask_kind == "poisson":
        calib = tuple(max(1, round(n * center_fraction)) for n in shape)
        mask = poisson_disc_mask(tuple(shape), float(acceleration), calib=calib, seed=seed, device=device)
    elif mask_kind in SAMPLING_KINDS:
        mask, _ = mask_spec(mask_kind, center_fraction, round(acceleration)).sample(shape[-1], seed=seed, device=device)
    else:
        raise ConfigError("mask_kind", f"{mask_kind!r}: choose one of {', '.join(SAMPLING_KINDS)}")
    return acquired_only(mask, columns)


KINDS: dict[str, type[Perturbation]] = {
    cls.kind: cls for cls in (Noise, LinePhase, RigidMotion, Spikes, CoilFault, OffResonance, SamplingShift)
}

SEVERITY_ONE: dict[str, str] = {kind: cls().severity_one() for kind, cls in KINDS.items()}


def make(kind: str, severity: float = 0.0, seed: int = 0, **settings: Any) -> Perturbation:
    """The spec of `kind` at `severity` with `seed` and kind-specific `settings`."""
    if kind not in KINDS:
        raise ConfigError("kind", f"unknown perturbation {kind!r}; choose one of {', '.join(KINDS)}")
    names = {f.name for f in dataclasses.fields(KINDS[kind])}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ConfigError(kind, f"unknown settings {unknown}; known: {sorted(names - {'severity', 'seed'})}")
    return KINDS[kind](severity=severity, seed=seed, **settings)


def perturb(kspace: torch.Tensor, spec: Perturbation, *, maps: torch.Tensor | None = None,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """The perturbed k-space (B, C', H, W); severity 0 returns `kspace` itself.

    `maps` (B or 1, C, H, W) are needed by motion; `mask` (broadcasting against k-space, default
    all measured) by noise, spikes and motion. Coil fault `fewer` returns fewer coils.
    """
    if kspace.ndim != 4 or not kspace.is_complex():
        raise ShapeError(f"k-space must be complex (batch, coils, H, W), got {kspace.dtype} {tuple(kspace.shape)}")
    if not isinstance(spec, Perturbation):
        raise ConfigError("perturbation", f"expected a Perturbation spec, got {type(spec).__name__}")
    if spec.needs_maps and maps is None:
        raise ConfigError(spec.kind, "needs coil maps (maps=...)")
    if maps is not None and (maps.ndim != 4 or maps.shape[-3:] != kspace.shape[-3:]):
        raise ShapeError(f"coil maps {tuple(maps.shape)} do not fit k-space {tuple(kspace.shape)}")
    mask = torch.ones(kspace.shape[-1], dtype=torch.bool) if mask is None else mask
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    u = torch.tensor(draw_params(spec, tuple(kspace.shape)), dtype=torch.float64)
    if spec.severity == 0:
        return kspace
    return spec.apply(kspace, u, maps, mask)


def perturb_mask(mask: torch.Tensor, spec: Perturbation, *, shape: tuple[int, int],
                 seed: Seed | None = None, columns: Columns = None) -> torch.Tensor:
    """The mask the method sees: `mask` itself unless `spec` is a sampling shift of severity > 0.

    `shape` is the k-space (H, W); `seed` (default spec.seed) may be fastMRI's per-file seed;
    `columns` the acquired columns (a new mask never samples zero-padded ones).
    """
    if not isinstance(spec, SamplingShift) or spec.severity == 0:
        return mask
    return sampling_mask(spec.mask_kind, spec.acceleration, spec.center_fraction, shape,
                         spec.seed if seed is None else seed, device=mask.device, columns=columns)
