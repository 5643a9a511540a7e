"""The method interface, the method registry and plug-in loading.

A method is any object with `reconstruct(kspace, mask, **meta) -> (B, h, w)` real magnitude image,
h <= H and w <= W (the full k-space size, or a centre crop of it no smaller than meta
`target_shape`, as fastMRI's U-net works on the cropped image), plus declared traits. The attacks, the study runner and the CLI read the
traits, never the class name. Subclassing `Reconstructor` is optional (duck typing works), but a
dataclass subclass gets `config()` for free from its fields.

Methods are found by name in three places: the built-in modules below (which `register`
themselves, and `register_preset` named settings of their classes, on import), installed
packages' `mrirobust.methods` entry points, and `package.module:attr` strings. `describe` reads a
method's traits and checked settings from its class without building it (no network, no
checkpoint read); `build` makes it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from mrirobust.errors import ConfigError, DataError, MriRobustError, ShapeError
from mrirobust.methods.settings import checked_settings, field_default, init_fields, plain
from mrirobust.physics.masks import check_mask

ENTRY_POINT_GROUP = "mrirobust.methods"
_BUILTIN_MODULES = (
    "mrirobust.methods.baselines",
    "mrirobust.methods.l1",
    "mrirobust.methods.ttt",
    "mrirobust.methods.unet",
    "mrirobust.methods.untrained",
    "mrirobust.methods.varnet",
)
_REGISTRY: dict[str, "Registration"] = {}


class Reconstructor:
    """Base class for methods: default traits, checked settings and a `config()` from dataclass fields.

    A dataclass subclass's settings are checked on construction (names, types from the field
    hints, ranges from the class's `check`), the same check `describe` makes without building.
    A subclass with its own `__post_init__` calls `super().__post_init__()` first.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "custom"  # "baseline", "l1", "trained", "untrained", ...
    differentiable: ClassVar[bool] = False  # autograd reaches the input k-space (PGD applies)
    trainable: ClassVar[bool] = False  # has weights fitted on a training set (see workflows.train)
    optimisation_based: ClassVar[bool] = False  # solves a per-sample optimisation (two-step attack)
    train_defaults: ClassVar[Mapping[str, Any]] = {}  # TrainConfig defaults (loss, optimizer, lr)
    wraps: ClassVar[str | None] = None  # the setting holding a wrapped method's config (ttt's "base")

    def __post_init__(self) -> None:
        values = checked_settings(type(self), {f: getattr(self, f) for f in init_fields(type(self))})
        for key, value in values.items():  # coerced: YAML lists to tuples, mappings to settings objects
            if value is not getattr(self, key):
                object.__setattr__(self, key, value)  # works for frozen dataclass methods too

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        """Raise ConfigError naming a setting whose value is out of range; here: none."""

    def config(self) -> dict[str, Any]:
        """Name plus settings, serialisable to YAML; `build(config())` rebuilds the method."""
        settings = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init} \
            if dataclasses.is_dataclass(self) else {}
        return {"name": self.name, **settings}

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        """k-space (B, C, H, W) complex and a broadcastable bool mask -> magnitude image (B, H, W)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Registration:
    """What a name builds: a class or factory, with preset settings and training defaults over its own."""

    target: Callable[..., Any]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    preset: bool = False


def _add(name: str, registration: Registration) -> None:
    known = _REGISTRY.get(name)
    if known is not None and known != registration:
        raise ConfigError("method", f"{name!r} is registered twice")
    _REGISTRY[name] = registration


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make a method class or factory buildable by `name`."""

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        _add(name, Registration(factory))
        if isinstance(factory, type) and not getattr(factory, "name", ""):
            factory.name = name
        return factory

    return decorate


def register_preset(name: str, cls: type, defaults: Mapping[str, Any],
                    train_defaults: Mapping[str, Any] | None = None) -> None:
    """Make `name` build `cls` with `defaults` over its own (settings given to `build` override them).

    The built method is named `name`, so `config()` rebuilds this preset with its full settings.
    `train_defaults` override the class's training defaults for this preset (small CPU-sized
    networks train better with a larger step than fastMRI's full-size models).
    """
    checked_settings(cls, defaults)  # a preset with a typo fails on import, not on first use
    _add(name, Registration(cls, dict(defaults), dict(train_defaults or {}), preset=True))


def _registry() -> dict[str, Registration]:
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
    except ImportError as error:
        raise ConfigError("method", f"cannot load {spec!r}: {_first_line(error)}") from None
    except Exception as error:  # the plug-in's own code raised on import
        raise ConfigError("method", f"cannot load {spec!r}: importing {module_name} raised "
                                    f"{type(error).__name__}: {_first_line(error)}") from None
    try:
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError as error:
        raise ConfigError("method", f"cannot load {spec!r}: {error}") from None
    return target


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else ""


def _resolve(name: str) -> Registration:
    if ":" in name:
        return Registration(_import_attr(name))
    if name in _registry():
        return _REGISTRY[name]
    plugins = _entry_points()
    if name in plugins:
        try:
            return Registration(plugins[name].load())
        except Exception as error:  # a broken installed plug-in: one line naming it
            raise ConfigError("method", f"cannot load entry point {name!r} ({plugins[name].value}): "
                                        f"{type(error).__name__}: {_first_line(error)}") from None
    raise ConfigError("method", f"unknown method {name!r}; known methods: {', '.join(available())}")


def wrapped_setting(spec: str | Mapping[str, Any]) -> str | None:
    """The setting of `spec`'s method that holds another method's config (class attribute `wraps`,
    e.g. "base" for `ttt`), or None; studies resolve a method label given there."""
    return getattr(_resolve(_split(spec)[0]).target, "wraps", None)


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
        except UnicodeDecodeError:
            raise DataError(path, "the method config is not UTF-8 text") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or _first_line(error)
            raise DataError(path, f"not valid YAML{where}: {problem}") from None
        if not isinstance(config, dict) or "name" not in config:
            raise DataError(path, "a method config must be a mapping with a `name`")
        return config
    name, sep, checkpoint = text.partition("=")
    return {"name": name, "checkpoint": checkpoint} if sep else text


def _split(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ConfigError("method.name", f"missing in method config {dict(spec)}")
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    raise ConfigError("method", f"expected a name or a mapping, got {type(spec).__name__}")


def _introspectable(target: Any) -> bool:
    return isinstance(target, type) and dataclasses.is_dataclass(target) and hasattr(target, "reconstruct")


@dataclass(frozen=True)
class MethodInfo:
    """A method's name, traits and settings, read from its registered class without building it.

    `settings` holds every setting's value (class defaults, then the preset's, then the given
    ones), checked; `defaults` the class's with the preset's over them. `built` says the traits
    were read from a built method (a plug-in factory or instance, whose settings cannot be read
    otherwise); then `settings` is what its `config()` reports.
    """

    name: str
    family: str
    differentiable: bool
    trainable: bool
    optimisation_based: bool
    settings: Mapping[str, Any]
    defaults: Mapping[str, Any]
    train_defaults: Mapping[str, Any]
    takes_checkpoint: bool  # has a `checkpoint` setting (trained weights)
    built: bool = False

    @property
    def needs_checkpoint(self) -> bool:
        """Trainable and given no weights: it needs a checkpoint or training before it can run."""
        return self.trainable and self.settings.get("checkpoint") is None

    def config(self) -> dict[str, Any]:
        """What `build(...).config()` returns: the name and every setting, YAML-serialisable."""
        return {"name": self.name, **{k: plain(v) for k, v in self.settings.items()}}


def describe(spec: str | Mapping[str, Any], **overrides: Any) -> MethodInfo:
    """The traits and checked settings of the method `build(spec, **overrides)` would build.

    For a registered or module:attr dataclass method (every built-in one) nothing is built: no
    network is allocated and no checkpoint is read, only checked to be a file. Factories and
    instances are built to read them (documented in MethodInfo.built).
    """
    name, settings = _split(spec)
    settings.update(overrides)
    registration = _resolve(name)
    target = registration.target
    if not _introspectable(target):
        method = _make(name, registration, settings)
        config = method.config() if callable(getattr(method, "config", None)) else {}
        values = {k: v for k, v in config.items() if k != "name"}
        return _info(method, method.name, values, {}, getattr(method, "train_defaults", {}), built=True)
    values = checked_settings(target, {**registration.defaults, **settings})
    checkpoint = values.get("checkpoint")
    if checkpoint is not None and not Path(checkpoint).is_file():
        problem = "is a directory, not a checkpoint file" if Path(checkpoint).is_dir() else "no such file"
        raise ConfigError("checkpoint", f"{checkpoint}: {problem}")
    defaults = {f: field_default(v) for f, v in init_fields(target).items()} | dict(registration.defaults)
    train_defaults = {**getattr(target, "train_defaults", {}), **registration.train_defaults}
    label = name if registration.preset or not getattr(target, "name", "") else target.name
    return _info(target, label, values, defaults, train_defaults)


def _info(source: Any, name: str, settings: Mapping[str, Any], defaults: Mapping[str, Any],
          train_defaults: Mapping[str, Any], built: bool = False) -> MethodInfo:
    return MethodInfo(
        name=name, family=getattr(source, "family", "custom"),
        differentiable=bool(getattr(source, "differentiable", False)),
        trainable=bool(getattr(source, "trainable", False)),
        optimisation_based=bool(getattr(source, "optimisation_based", False)),
        settings=dict(settings), defaults=dict(defaults), train_defaults=dict(train_defaults or {}),
        takes_checkpoint="checkpoint" in settings, built=built,
    )


def build(spec: str | Mapping[str, Any], **overrides: Any) -> Any:
    """A method from a registered name, a config dict {"name": ..., **settings} or "module:attr"."""
    name, settings = _split(spec)
    settings.update(overrides)
    return _make(name, _resolve(name), settings)


def _make(name: str, registration: Registration, settings: dict[str, Any]) -> Any:
    target = registration.target
    if hasattr(target, "reconstruct") and not isinstance(target, type):  # a ready-made instance
        if settings:
            raise ConfigError("method", f"{name!r} is an instance and takes no settings, got {sorted(settings)}")
        method = target
    else:
        settings = {**registration.defaults, **settings}
        if _introspectable(target):
            checked_settings(target, settings)  # names and types before anything is allocated
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
    if registration.preset or not getattr(method, "name", ""):
        object.__setattr__(method, "name", name)  # a preset's instances carry its name (frozen ones too)
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
