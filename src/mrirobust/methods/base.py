"""The method interface, the method registry and plug-in loading.

A method is any object with `reconstruct(kspace, mask, **meta) -> (B, h, w)` real magnitude image,
h <= H and w <= W (the full k-space size, or a centre crop of it no smaller than meta
`target_shape`, as fastMRI's U-net works on the cropped image), plus declared traits. The attacks, the study runner and the CLI read the
traits, never the class name. Subclassing `Reconstructor` is optional (duck typing works), but a
dataclass subclass gets `config()` for free from its fields.

Methods are found by name in three places: the built-in modules below (which `register`
themselves on import), installed packages' `mrirobust.methods` entry points, and
`package.module:attr` strings.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from mrirobust.errors import ConfigError, DataError, MriRobustError, ShapeError
from mrirobust.physics.masks import check_mask

ENTRY_POINT_GROUP = "mrirobust.methods"
_BUILTIN_MODULES = (
    "mrirobust.methods.baselines",
    "mrirobust.methods.l1",
    "mrirobust.methods.unet",
    "mrirobust.methods.untrained",
    "mrirobust.methods.varnet",
)
_REGISTRY: dict[str, Callable[..., Any]] = {}


class Reconstructor:
    """Base class for methods: default traits and a `config()` built from dataclass fields."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "custom"  # "baseline", "l1", "trained", "untrained", ...
    differentiable: ClassVar[bool] = False  # autograd reaches the input k-space (PGD applies)
    trainable: ClassVar[bool] = False  # has weights fitted on a training set
    optimisation_based: ClassVar[bool] = False  # solves a per-sample optimisation (two-step attack)

    def config(self) -> dict[str, Any]:
        """Name plus settings, serialisable to YAML; `build(config())` rebuilds the method."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init} \
            if dataclasses.is_dataclass(self) else {}
        return {"name": self.name, **settings}

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        """k-space (B, C, H, W) complex and a broadcastable bool mask -> magnitude image (B, H, W)."""
        raise NotImplementedError


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make a method class or factory buildable by `name`."""

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ConfigError("method", f"{name!r} is registered twice")
        if isinstance(factory, type) and not getattr(factory, "name", ""):
            factory.name = name
        _REGISTRY[name] = factory
        return factory

    return decorate


def _registry() -> dict[str, Callable[..., Any]]:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    return _REGISTRY


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names of the built-in, registered and entry-point methods."""
    return sorted(set(_registry()) | set(_entry_points()))


def _import_attr(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError("method", f"cannot load {spec!r}: {error}") from None
    return target


def _resolve(name: str) -> Any:
    if ":" in name:
        return _import_attr(name)
    if name in _registry():
        return _REGISTRY[name]
    plugins = _entry_points()
    if name in plugins:
        return plugins[name].load()
    raise ConfigError("method", f"unknown method {name!r}; known methods: {', '.join(available())}")


def parse_spec(text: str) -> str | dict[str, Any]:
    """A method as written on the command line, into what `build` takes.

    `name` (registered, entry point or module:attr), `name=CHECKPOINT` (trained weights), or a
    path to a YAML method config (e.g. one written by `mrirobust tune`).
    """
    if text.endswith((".yaml", ".yml")):
        path = Path(text)
        try:
            config = yaml.safe_load(path.read_text())
        except OSError as error:
            raise DataError(path, f"cannot read the method config: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise DataError(path, f"not valid YAML: {error}") from None
        if not isinstance(config, dict) or "name" not in config:
            raise DataError(path, "a method config must be a mapping with a `name`")
        return config
    name, sep, checkpoint = text.partition("=")
    return {"name": name, "checkpoint": checkpoint} if sep else text


def build(spec: str | dict[str, Any], **overrides: Any) -> Any:
    """A method from a registered name, a config dict {"name": ..., **settings} or "module:attr"."""
    if isinstance(spec, str):
        name, settings = spec, {}
    elif isinstance(spec, dict):
        if "name" not in spec:
            raise ConfigError("method.name", f"missing in method config {spec}")
        settings = {k: v for k, v in spec.items() if k != "name"}
        name = spec["name"]
    else:
        raise ConfigError("method", f"expected a name or a mapping, got {type(spec).__name__}")
    settings.update(overrides)
    target = _resolve(name)
    if hasattr(target, "reconstruct") and not isinstance(target, type):  # a ready-made instance
        if settings:
            raise ConfigError("method", f"{name!r} is an instance and takes no settings, got {sorted(settings)}")
        method = target
    else:
        try:
            inspect.signature(target).bind(**settings)
        except ValueError:  # no introspectable signature (some builtins): let the call decide
            pass
        except TypeError as error:
            raise ConfigError(f"method {name!r}", f"bad settings {sorted(settings)}: {error}") from None
        method = target(**settings)
    if not callable(getattr(method, "reconstruct", None)):
        raise ConfigError("method", f"{name!r} built a {type(method).__name__}, which has no reconstruct()")
    if not getattr(method, "name", ""):
        method.name = name
    return method


def checked_reconstruct(method: Any, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
    """`method.reconstruct(...)`, turning a failure or a malformed output into one clear error."""
    label = getattr(method, "name", "") or type(method).__name__
    if kspace.ndim != 4 or not kspace.is_complex():
        raise ShapeError(f"k-space must be complex (batch, coils, H, W), got {kspace.dtype} {tuple(kspace.shape)}")
    mask = check_mask(mask, kspace.shape)
    batch, _, height, width = kspace.shape
    try:
        image = method.reconstruct(kspace, mask, **meta)
    except MriRobustError:
        raise
    except Exception as error:
        raise MriRobustError(
            f"method {label!r} failed on k-space {tuple(kspace.shape)}: {type(error).__name__}: {error}"
        ) from error
    fits = isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == batch \
        and image.shape[1] <= height and image.shape[2] <= width
    if not fits:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise MriRobustError(
            f"method {label!r} returned {got} for k-space {tuple(kspace.shape)}; expected ({batch}, h, w) "
            f"with h <= {height} and w <= {width}"
        )
    if image.is_complex() or not image.is_floating_point():
        raise MriRobustError(f"method {label!r} returned dtype {image.dtype}; expected a real magnitude image")
    if not torch.isfinite(image).all():
        raise MriRobustError(f"method {label!r} returned NaN or Inf for k-space {tuple(kspace.shape)}")
    return image
