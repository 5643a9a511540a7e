"""The base of every perturbation spec: severity, seed, unit-box params, and their draw.

physics.perturbations defines the kinds; this module holds what they share, so that each kind is
one small dataclass with `n_params` and `apply`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mrirobust.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Perturbation:
    """The fields every kind shares; subclasses add settings and implement `n_params`/`apply`."""

    kind: ClassVar[str] = ""
    needs_maps: ClassVar[bool] = False
    severity: float = 0.0
    seed: int = 0
    params: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # every setting has the type of its default
            if field.name != "params":
                object.__setattr__(self, field.name, _typed(self.kind, field.name, getattr(self, field.name),
                                                            field.default))
        if not math.isfinite(self.severity) or self.severity < 0:
            raise ConfigError(f"{self.kind}.severity", f"{self.severity!r} must be a finite number >= 0")
        if self.params is not None:
            params = tuple(float(p) for p in self.params)
            if not all(0 <= p <= 1 for p in params):
                raise ConfigError(f"{self.kind}.params", f"{params} must lie in [0, 1]")
            object.__setattr__(self, "params", params)

    def record(self) -> dict[str, Any]:
        """Kind plus every field, for result rows (params as a list or None)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["params"] = None if self.params is None else list(self.params)
        return {"kind": self.kind, **values}

    def severity_one(self) -> str:
        """What severity 1.0 means with these settings (for docs, captions and reports)."""
        raise NotImplementedError

    def n_params(self, shape: tuple[int, ...]) -> int:
        """Number of unit-box coordinates for k-space of `shape` (B, C, H, W)."""
        return 0

    def apply(self, kspace: torch.Tensor, u: torch.Tensor, maps: torch.Tensor | None,
              mask: torch.Tensor) -> torch.Tensor:
        """The perturbed k-space at this severity (> 0) from params `u` (P,) float64 on the host."""
        raise NotImplementedError


def _typed(kind: str, name: str, value: Any, default: Any) -> Any:
    """`value` as the type of `default` (an int where a float is expected is fine), or ConfigError."""
    if isinstance(default, float):
        fits = isinstance(value, numbers.Real) and not isinstance(value, bool)
        value = float(value) if fits else value
    elif isinstance(default, int) and not isinstance(default, bool):
        fits = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    else:
        fits = isinstance(value, type(default))
    if not fits:
        raise ConfigError(f"{kind}.{name}", f"{value!r} must be of type {type(default).__name__}")
    return value


def setting(condition: bool, kind: str, name: str, problem: str) -> None:
    if not condition:
        raise ConfigError(f"{kind}.{name}", problem)


def signed(u: torch.Tensor) -> torch.Tensor:
    """Unit-box coordinates [0, 1] as amplitudes in [-1, 1]."""
    return 2 * u - 1


def measured_entries(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The measured entries (B, H, W) of k-space of `shape` (the mask has no coil dimension)."""
    batch, _, height, width = shape
    return mask.expand(batch, 1, height, width)[:, 0] if mask.ndim == 4 else mask.expand(batch, height, width)


def draw_params(spec: Perturbation, shape: tuple[int, ...]) -> tuple[float, ...]:
    """The spec's unit-box params for k-space of `shape`: its own, or drawn from its seed."""
    count = spec.n_params(tuple(shape))
    if spec.params is not None:
        if len(spec.params) != count:
            raise ConfigError(f"{spec.kind}.params", f"{len(spec.params)} values; k-space {tuple(shape)} needs {count}")
        return spec.params
    generator = torch.Generator().manual_seed(int(spec.seed))
    return tuple(torch.rand(count, generator=generator, dtype=torch.float64).tolist())
