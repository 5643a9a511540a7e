"""Method settings checked against a dataclass's fields, without building the method.

`checked_settings(cls, settings)` checks names against the class's init fields and values against
their type hints (int, float, str, bool, unions with None, tuples, nested frozen dataclasses such
as `EspiritSettings`, given as a mapping), fills the defaults, and calls the class's `check`
(ranges). `describe` uses it so that `study --check` reads a method without building networks or
loading checkpoints; `Reconstructor.__post_init__` uses it so direct construction is checked the
same way. Hints it cannot read (e.g. a class defined inside a function) are not type-checked.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from collections.abc import Mapping
from typing import Any

from mrirobust.errors import ConfigError


def init_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The settings of a dataclass method: its init fields, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def field_default(f: dataclasses.Field) -> Any:
    """A field's default (a factory is called: cheap for settings; a field without one: MISSING)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # annotations naming something out of the module's scope
        return {}


def checked_settings(cls: type, settings: Mapping[str, Any], label: str = "") -> dict[str, Any]:
    """Every init field of `cls` with its value: `settings` over the defaults, coerced and checked.

    Errors are ConfigErrors naming the field (prefixed by `label`, e.g. "espirit.kernel_size").
    """
    fields = init_fields(cls)
    prefix = f"{label}." if label else ""
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", f"unknown setting of {cls.__name__}; settings: "
                                                   f"{', '.join(fields) or 'none'}")
    hints = _hints(cls)
    values = {}
    for name, f in fields.items():
        value = settings[name] if name in settings else field_default(f)
        if value is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}", f"missing: {cls.__name__} needs it")
        values[name] = coerce(value, hints.get(name, Any), f"{prefix}{name}")
    if isinstance(inspect.getattr_static(cls, "check", None), (classmethod, staticmethod)):
        cls.check(values)  # type: ignore[attr-defined]  # the class's range checks (Reconstructor.check)
    return values


def coerce(value: Any, hint: Any, field: str) -> Any:
    """`value` as the type `hint` says (lists to tuples, mappings to dataclasses), or a ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, (str, typing.TypeVar)):
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, field)
            except ConfigError:
                continue
        raise ConfigError(field, f"{value!r} is not {_describe(hint)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"{value!r} is not {_describe(hint)}")
        kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if args and len(kinds) != len(value):
            raise ConfigError(field, f"{value!r} needs {len(kinds)} values")
        return tuple(coerce(v, k, f"{field}[{i}]") for i, (v, k) in enumerate(zip(value, kinds))) if args \
            else tuple(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(field, f"expected a mapping of {', '.join(init_fields(hint))}, got {value!r}")
        try:
            return hint(**checked_settings(hint, value, field))
        except ConfigError as error:  # raised by the nested object's own checks: name its full path
            if error.field.startswith(f"{field}."):
                raise
            raise ConfigError(f"{field}.{error.field}", error.problem) from None
    if origin in (list, dict, set, frozenset):  # containers: the container type only
        if not isinstance(value, origin):
            raise ConfigError(field, f"{value!r} is not {_describe(hint)}")
        return value
    if not isinstance(hint, type):  # Callable, Literal, ...: not checked here
        return value
    return _scalar(value, hint, field)


def _scalar(value: Any, hint: type, field: str) -> Any:
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)  # an int stays an int
    elif hint is str and isinstance(value, os.PathLike):
        ok, value = True, os.fspath(value)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(field, f"{value!r} is not {_describe(hint)}")
    return value


def _describe(hint: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (tuple, list):
        return "a list"
    if typing.get_origin(hint) is not None:
        return f"a {typing.get_origin(hint).__name__}"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def plain(value: Any) -> Any:
    """A setting in the form YAML writes: nested dataclasses as mappings, everything else as is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    return value


def at_least(settings: Mapping[str, Any], minimum: float, *names: str) -> None:
    """ConfigError naming the first of `names` whose value is below `minimum` (None passes)."""
    for name in names:
        value = settings[name]
        if value is not None and value < minimum:
            raise ConfigError(name, f"{value!r} must be >= {minimum}")


def one_of(settings: Mapping[str, Any], name: str, choices: typing.Iterable[str]) -> None:
    """ConfigError naming `name` unless its value is one of `choices`."""
    choices = tuple(choices)
    if settings[name] not in choices:
        raise ConfigError(name, f"unknown {settings[name]!r}; choose from {', '.join(choices)}")
