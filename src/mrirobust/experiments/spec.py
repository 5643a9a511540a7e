"""Typed settings: frozen dataclasses whose fields are at once the YAML keys and the CLI flags.

An experiment kind declares one spec class. `parse(Spec, mapping, where)` checks a YAML entry
against it (unknown keys, types, ranges, choices; nested typed settings such as the attack's) and
`add_arguments`/`from_arguments` turn the same fields into command-line flags. So there is one
source of truth: renaming a field renames the YAML key and the flag, and every error names the
field as the user wrote it (`experiments.attack.eps` in a study, `--eps` on the command line).

Field metadata (`setting(...)`): `help`, `minimum`/`maximum` (inclusive), `choices`, `positional`
(a CLI positional argument), `cli=False` (YAML only), `flag` (another flag name).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

import yaml

from mrirobust.errors import ConfigError
from mrirobust.physics.masks import MASK_KINDS, MaskSpec

Where = Callable[[str], str]  # field name -> how the user names it


def setting(default: Any = dataclasses.MISSING, help: str = "", **meta: Any) -> Any:
    """A spec field with its help text and checks (see the module docstring)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("spec defaults must be immutable (use a tuple)")
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata={"help": help, **meta})
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def yaml_where(prefix: str) -> Where:
    return lambda name: f"{prefix}.{name}" if prefix else name


def flag_where(name: str) -> str:
    return "--" + name.replace("_", "-")


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse(cls: type, value: Any, where: Where = yaml_where("")) -> Any:
    """An instance of the spec `cls` from a mapping; the first problem raises a ConfigError."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(where("").rstrip(".") or cls.__name__,
                          f"expected a mapping, got {type(value).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(where(unknown[0]), f"unknown key; allowed here: {', '.join(sorted(known))}")
    types_of = hints(cls)
    kwargs = {}
    for name, field in known.items():
        if name in value:
            kwargs[name] = coerce(value[name], types_of[name], where(name), field.metadata)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(where(name), f"missing: {field.metadata.get('help') or 'required'}")
    try:
        return cls(**kwargs)
    except ConfigError as error:  # a cross-field check in __post_init__: name the field by its path
        raise ConfigError(where(error.field), error.problem) from None


def coerce(value: Any, kind: Any, where: str, meta: Mapping[str, Any]) -> Any:
    """`value` checked against the type `kind` (and the field's range/choices metadata)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(value, inner, where, meta)
    if origin is tuple:
        inner = args[0]
        if not isinstance(value, (list, tuple)):  # one value for a list of one
            return (coerce(value, inner, where, meta),)
        result = tuple(coerce(v, inner, f"{where}[{i}]", meta) for i, v in enumerate(value))
        if not result and meta.get("minimum_items", 1) > 0:
            raise ConfigError(where, "give at least one value")
        return result
    if origin is Literal:
        if value not in args:
            raise ConfigError(where, f"{value!r}: choose from {', '.join(map(str, args))}")
        return value
    if kind is MaskSpec:
        return parse_mask(value, where, MaskSpec("random", (0.08,), (4,)))
    if dataclasses.is_dataclass(kind):
        return parse(kind, value, yaml_where(where))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"{value!r} must be true or false")
        return value
    if kind in (int, float):
        return _number(value, kind, where, meta)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(where, f"{value!r} must be a string")
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(where, f"{value!r}: choose from {', '.join(meta['choices'])}")
        return value
    if kind is dict or typing.get_origin(kind) is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if kind is Any:
        return value
    raise TypeError(f"spec field type {kind!r} is not supported")  # a bug in a spec, not user input


def _number(value: Any, kind: type, where: str, meta: Mapping[str, Any]) -> int | float:
    wrong = isinstance(value, bool) or not isinstance(value, (int, float)) or (
        kind is int and not float(value).is_integer())
    if wrong or not math.isfinite(value):
        raise ConfigError(where, f"{value!r} must be {'an integer' if kind is int else 'a number'}")
    value = kind(value)
    low, high = meta.get("minimum"), meta.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else (f"<= {high}" if low is None else f"in [{low}, {high}]")
        raise ConfigError(where, f"{value!r} must be {bounds}")
    return value


def parse_mask(value: Any, where: str, default: MaskSpec) -> MaskSpec:
    """A `{type, acceleration, center_fraction}` mapping over `default` (each a value or a list)."""
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"expected a mapping with type/acceleration/center_fraction, got {value!r}")
    allowed = {"type", "acceleration", "center_fraction"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown key; allowed here: {', '.join(sorted(allowed))}")
    kind = value.get("type", default.kind)
    if kind not in MASK_KINDS:
        raise ConfigError(f"{where}.type", f"unknown mask {kind!r}; choose from {', '.join(MASK_KINDS)}")
    accelerations = coerce(value.get("acceleration", default.accelerations), tuple[int, ...],
                           f"{where}.acceleration", {"minimum": 1})
    fractions = coerce(value.get("center_fraction", default.center_fractions), tuple[float, ...],
                       f"{where}.center_fraction", {"minimum": 0.0, "maximum": 1.0})
    if len(fractions) == 1 and len(accelerations) > 1:
        fractions = fractions * len(accelerations)
    try:
        return MaskSpec(kind, fractions, accelerations)
    except ConfigError as error:
        raise ConfigError(where, f"{error.field}: {error.problem}") from None


def mask_mapping(spec: MaskSpec) -> dict[str, Any]:
    """The YAML form of a MaskSpec (the inverse of `parse_mask`)."""
    return {"type": spec.kind, "acceleration": list(spec.accelerations),
            "center_fraction": list(spec.center_fractions)}


def to_mapping(spec: Any) -> dict[str, Any]:
    """The YAML form of a spec (the inverse of `parse`): masks as `mask_mapping`, nested settings as
    mappings of their set fields, tuples as lists; unset (None) values left out."""
    return {name: plain for name, value in vars(spec).items() if (plain := _plain(value)) is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, MaskSpec):
        return mask_mapping(value)
    if dataclasses.is_dataclass(value):
        return to_mapping(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


# --- the command line ---------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One flag (or positional) per CLI field of `cls`; values are parsed by `from_arguments`."""
    types_of = hints(cls)
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if field.name in skip or not meta.get("cli", True):
            continue
        kind = types_of[field.name]
        if kind is MaskSpec or typing.get_args(kind) and MaskSpec in typing.get_args(kind):
            _mask_arguments(parser)
            continue
        help_text = meta.get("help", "") + _default_text(field)
        if meta.get("positional"):
            parser.add_argument(field.name, help=help_text, nargs="?" if _optional(field) else None)
        elif kind is bool:
            parser.add_argument(flag_where(field.name), action="store_true", default=None, help=help_text)
        elif dataclasses.is_dataclass(kind) or (_is_dict(kind) and not meta.get("yaml_file")):
            parser.add_argument(meta.get("flag", flag_where(field.name)), action="append", default=None,
                                dest=field.name, metavar="KEY=VALUE", help=help_text + " (repeatable)")
        else:
            parser.add_argument(meta.get("flag", flag_where(field.name)), dest=field.name, default=None,
                                help=help_text)


def _is_dict(kind: Any) -> bool:
    return kind is dict or typing.get_origin(kind) is dict or any(typing.get_origin(a) is dict
                                                                 for a in typing.get_args(kind))


def _optional(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _default_text(field: dataclasses.Field) -> str:
    if field.default is dataclasses.MISSING or field.default is None or field.metadata.get("positional"):
        return ""
    default = field.default
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return f" (default: {shown})"


def _mask_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mask-type", default=None, help=f"{' | '.join(MASK_KINDS)} (default: random)")
    parser.add_argument("--acceleration", default=None, help="acceleration(s), comma-separated (default: 4)")
    parser.add_argument("--center-fraction", default=None, help="centre fraction(s) (default: 0.08)")


def cli_mask(args: argparse.Namespace) -> MaskSpec:
    """The mask the --mask-type/--acceleration/--center-fraction flags describe."""
    value = {key: _text_value(getattr(args, attr), list_ok=True) for key, attr in (
        ("type", "mask_type"), ("acceleration", "acceleration"), ("center_fraction", "center_fraction"))
        if getattr(args, attr, None) is not None}
    return parse_mask(value, "--mask", MaskSpec("random", (0.08,), (4,)))


def _text_value(text: Any, *, list_ok: bool) -> Any:
    if not isinstance(text, str):
        return text
    if list_ok and "," in text:
        return [yaml.safe_load(part) for part in text.split(",") if part.strip()]
    loaded = yaml.safe_load(text) if text.strip() else text
    return text if isinstance(loaded, (dict, list)) or loaded is None else loaded


def from_arguments(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """An instance of `cls` from parsed flags (plus `given` values); errors name the flag."""
    types_of = hints(cls)
    value: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in given or not field.metadata.get("cli", True):
            continue
        kind = types_of[field.name]
        if kind is MaskSpec or MaskSpec in typing.get_args(kind):
            value[field.name] = mask_mapping(cli_mask(args))
            continue
        raw = getattr(args, field.name, None)
        if raw is None:
            continue
        flag = field.metadata.get("flag", flag_where(field.name))
        if field.metadata.get("yaml_file"):
            value[field.name] = _yaml_file(raw, flag)
        elif dataclasses.is_dataclass(kind) or _is_dict(kind):
            value[field.name] = dict(_key_value(item, flag) for item in raw)
        elif kind is str or (typing.get_origin(kind) is Literal):
            value[field.name] = raw
        else:
            is_tuple = typing.get_origin(kind) is tuple or any(typing.get_origin(a) is tuple
                                                                for a in typing.get_args(kind))
            value[field.name] = _text_value(raw, list_ok=is_tuple)
    names = {f.name: f.metadata for f in dataclasses.fields(cls)}
    where = lambda name: names.get(name, {}).get("flag", name if names.get(name, {}).get("positional")  # noqa: E731
                                                 else flag_where(name))
    return parse(cls, {**value, **given}, where)


def _yaml_file(path: str, flag: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "strerror", None) or getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(flag, f"cannot read {path}{where}: {problem}") from None
    if loaded is None:
        raise ConfigError(flag, f"{path} is empty")
    return loaded


def _key_value(text: str, flag: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(flag, f"{text!r} is not KEY=VALUE")
    return key.strip(), _text_value(raw, list_ok=False)
