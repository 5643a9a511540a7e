"""A study config (YAML): data sources, methods and experiments, validated before any work starts.

Every problem is reported as a `ConfigError` naming the field's path (`experiments.attack.eps`),
so a typo costs seconds, not the hours of training that would run before it was noticed.
See docs/study.md for the format.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from mrirobust.errors import ConfigError, DataError
from mrirobust.evaluate import run_recon
from mrirobust.methods.base import build
from mrirobust.methods.train import TrainConfig
from mrirobust.physics.masks import MASK_KINDS, MaskSpec
from mrirobust.robustness.adversarial import check_eps, run_attack_experiment
from mrirobust.robustness.features import run_annotated, run_feature_sizes, run_heatmap
from mrirobust.robustness.shifts import KINDS as SHIFT_KINDS
from mrirobust.robustness.shifts import FORMATS, run_shift
from mrirobust.study import EXECUTORS

# Experiment kinds and the function that runs each.
RUNNERS: dict[str, Callable[..., Any]] = {
    "recon": run_recon, "attack": run_attack_experiment, "heatmap": run_heatmap,
    "feature_sizes": run_feature_sizes, "annotated": run_annotated, "shift": run_shift,
}
# Arguments the runner fills in from the study (data, methods, mask, where, on what device).
_FILLED = {"data", "method_names", "methods", "evaluate_only", "annotations_csv", "kind", "source", "target",
           "groups", "out", "cache", "train_config", "mask_type", "acceleration", "center_fraction", "device",
           "progress"}
# Keys of an experiment entry besides the run function's own settings, per kind.
_ENTRY_KEYS = {"kind", "data", "methods", "split", "mask"}
_KIND_KEYS = {"attack": _ENTRY_KEYS | {"evaluate_only"}, "annotated": _ENTRY_KEYS | {"annotations"},
              "shift": {"kind", "shift", "source", "target", "groups", "train", "mask"}}
_COUNTS = {"images", "stride", "window", "placements", "batch_size", "tune_images", "min_size", "limit"}
_TOP_KEYS = {"name", "description", "device", "mask", "data", "methods", "experiments", "executor"}
_TRAIN_KEYS = {f.name for f in fields(TrainConfig)} - {"device", "progress", "mask_type", "acceleration",
                                                      "center_fraction"}


@dataclass(frozen=True)
class DataSource:
    """A data folder (with train/val/test splits where present), its format, filters and mask."""

    root: Path
    mask: MaskSpec
    format: str = "fastmri"
    acquisitions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MethodEntry:
    """A method config plus how to prepare it: trained (`train`) or tuned (`tune`) on a data source."""

    label: str
    config: dict[str, Any]
    train: dict[str, Any] | None = None  # {"data": name, **TrainConfig fields}
    tune: dict[str, Any] | None = None  # {"data": name, "grid": {...}, "images": n}


@dataclass(frozen=True)
class Experiment:
    """One experiment: its kind, data, methods and the run function's own settings."""

    name: str
    kind: str
    entry: dict[str, Any]  # the validated entry as written
    settings: dict[str, Any]  # keyword arguments for the run function


@dataclass(frozen=True)
class Study:
    """A validated study: `raw` is the mapping as written (saved as study.yaml with the results)."""

    name: str
    path: Path | None
    raw: dict[str, Any]
    device: str
    executor: dict[str, Any]
    data: dict[str, DataSource]
    methods: dict[str, MethodEntry]
    experiments: dict[str, Experiment]


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; relative paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise DataError(path, f"cannot read the study config: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise DataError(path, f"not valid YAML: {error}") from None
    return validate(raw, base=path.parent, path=path)


def validate(raw: Any, *, base: Path = Path("."), path: Path | None = None) -> Study:
    """Check every field of a study mapping; the first problem raises a ConfigError naming it."""
    _mapping(raw, "study")
    _known(raw, _TOP_KEYS, "")
    name = str(raw.get("name") or (path.stem if path else "study"))
    device = raw.get("device", "auto")
    if device not in ("auto", "cpu") and not str(device).startswith("cuda"):
        raise ConfigError("device", f"{device!r}: use auto, cpu or cuda[:N]")
    executor = dict(_mapping(raw.get("executor", {}), "executor"))
    _known(executor, {"kind", "workers", "address"}, "executor")
    if executor.setdefault("kind", "inline") not in EXECUTORS:
        raise ConfigError("executor.kind", f"{executor['kind']!r}; choose from {', '.join(EXECUTORS)}")
    default_mask = mask_spec(raw.get("mask", {}), "mask", MaskSpec("random", (0.08,), (4,)))
    data = {key: _data(key, value, base, default_mask)
            for key, value in _mapping(raw.get("data"), "data", required=True).items()}
    methods = {key: _method(key, value, data) for key, value in _mapping(raw.get("methods", {}), "methods").items()}
    experiments = {key: _experiment(key, value, data, methods, base)
                   for key, value in _mapping(raw.get("experiments"), "experiments", required=True).items()}
    if not experiments:
        raise ConfigError("experiments", "name at least one experiment")
    return Study(name, path, raw, str(device), executor, data, methods, experiments)


# --- pieces ----------------------------------------------------------------------------------------

def _mapping(value: Any, field: str, *, required: bool = False) -> dict:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"expected a mapping, got {type(value).__name__ if value is not None else 'nothing'}")
    return dict(value)


def _known(value: Mapping, allowed: set[str], field: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        where = f"{field}.{unknown[0]}" if field else unknown[0]
        raise ConfigError(where, f"unknown key; allowed here: {', '.join(sorted(allowed))}")


def mask_spec(value: Any, field: str, default: MaskSpec) -> MaskSpec:
    """A `{type, acceleration, center_fraction}` mapping over `default`; errors name `field`."""
    value = _mapping(value, field)
    _known(value, {"type", "acceleration", "center_fraction"}, field)
    kind = value.get("type", default.kind)
    if kind not in MASK_KINDS:
        raise ConfigError(f"{field}.type", f"unknown mask {kind!r}; choose from {', '.join(MASK_KINDS)}")
    acceleration = value.get("acceleration", default.accelerations[0])
    if isinstance(acceleration, bool) or not isinstance(acceleration, int) or acceleration < 1:
        raise ConfigError(f"{field}.acceleration", f"{acceleration!r} must be an integer >= 1")
    fraction = value.get("center_fraction", default.center_fractions[0])
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"{field}.center_fraction", f"{fraction!r} must be a number in (0, 1)")
    return MaskSpec(kind, (float(fraction),), (acceleration,))


def _data(key: str, value: Any, base: Path, default_mask: MaskSpec) -> DataSource:
    field = f"data.{key}"
    value = {"root": value} if isinstance(value, str) else _mapping(value, field)
    _known(value, {"root", "format", "acquisitions", "mask"}, field)
    if "root" not in value:
        raise ConfigError(f"{field}.root", "missing: the data folder")
    root = Path(value["root"]).expanduser()
    root = root if root.is_absolute() else (base / root)
    if not root.is_dir():
        raise ConfigError(f"{field}.root", f"no such folder: {root}")
    fmt = value.get("format", "fastmri")
    if fmt not in FORMATS:
        raise ConfigError(f"{field}.format", f"unknown {fmt!r}; choose from {', '.join(FORMATS)}")
    acquisitions = value.get("acquisitions")
    if isinstance(acquisitions, str):
        acquisitions = [acquisitions]
    if acquisitions is not None and not (isinstance(acquisitions, list) and all(isinstance(a, str) for a in acquisitions)):
        raise ConfigError(f"{field}.acquisitions", "expected a list of acquisition names")
    return DataSource(root.resolve(), mask_spec(value.get("mask", {}), f"{field}.mask", default_mask), fmt,
                      tuple(acquisitions) if acquisitions else None)


def _data_ref(value: Any, field: str, data: Mapping[str, DataSource]) -> str:
    if value not in data:
        raise ConfigError(field, f"{value!r} is not a data source; defined: {', '.join(data) or 'none'}")
    return value


def _method(label: str, value: Any, data: Mapping[str, DataSource]) -> MethodEntry:
    field = f"methods.{label}"
    config = {"name": value} if isinstance(value, str) else _mapping(value, field)
    if "name" not in config:
        raise ConfigError(f"{field}.name", "missing: a registered method, entry point or module:attr")
    train, tune = config.pop("train", None), config.pop("tune", None)
    try:
        method = build(config)
    except ConfigError as error:
        raise ConfigError(field, str(error)) from None
    if train is not None:
        train = _mapping(train, f"{field}.train")
        _known(train, _TRAIN_KEYS | {"data"}, f"{field}.train")
        _data_ref(train.get("data"), f"{field}.train.data", data)
        if not method.trainable:
            raise ConfigError(f"{field}.train", f"{config['name']} is not trainable")
        try:
            TrainConfig(**{k: v for k, v in train.items() if k != "data"}).resolved(method)
        except (ConfigError, TypeError) as error:
            raise ConfigError(f"{field}.train", str(error)) from None
    elif method.trainable and not config.get("checkpoint"):
        raise ConfigError(field, f"{config['name']} is trainable: give a `checkpoint` or a `train` section")
    if tune is not None:
        tune = _mapping(tune, f"{field}.tune")
        _known(tune, {"data", "grid", "images"}, f"{field}.tune")
        _data_ref(tune.get("data"), f"{field}.tune.data", data)
        grid = _mapping(tune.get("grid"), f"{field}.tune.grid", required=True)
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{field}.tune.grid.{key}", "expected a non-empty list of values")
            try:
                build({**config, key: values[0]})
            except ConfigError as error:
                raise ConfigError(f"{field}.tune.grid.{key}", str(error)) from None
        _count(tune.get("images", 4), f"{field}.tune.images")
    return MethodEntry(label, config, train, tune)


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"{value!r} must be an integer >= 1")
    return value


def _method_refs(value: Any, field: str, methods: Mapping[str, MethodEntry]) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ConfigError(field, "expected a non-empty list of method labels from `methods`")
    for i, label in enumerate(value):
        if label not in methods:
            raise ConfigError(f"{field}[{i}]", f"{label!r} is not in `methods`; defined: {', '.join(methods) or 'none'}")
    names = [methods[label].config["name"] for label in value]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(field, f"{', '.join(twice)} appears twice; experiments label methods by name")
    return list(value)


def _experiment(name: str, value: Any, data: Mapping[str, DataSource], methods: Mapping[str, MethodEntry],
                base: Path) -> Experiment:
    field = f"experiments.{name}"
    entry = _mapping(value, field)
    kind = entry.get("kind", name)
    if kind not in RUNNERS:
        raise ConfigError(f"{field}.kind", f"unknown {kind!r}; choose from {', '.join(RUNNERS)}")
    parameters = inspect.signature(RUNNERS[kind]).parameters
    own = {k for k in parameters if k not in _FILLED}
    entry_keys = _KIND_KEYS.get(kind, _ENTRY_KEYS)
    _known(entry, own | entry_keys, field)
    settings = {k: v for k, v in entry.items() if k not in entry_keys}
    for key, setting in settings.items():
        _setting(setting, parameters[key].default, f"{field}.{key}")
    if "mask" in entry:
        mask_spec(entry["mask"], f"{field}.mask", MaskSpec("random", (0.08,), (4,)))
    if kind == "shift":
        _shift_entry(entry, field, data, methods)
    else:
        _data_ref(entry.get("data"), f"{field}.data", data)
        _method_refs(entry.get("methods"), f"{field}.methods", methods)
        if kind == "attack" and "evaluate_only" in entry:
            _method_refs(entry["methods"] + entry["evaluate_only"], f"{field}.evaluate_only", methods)
        if "eps" in settings:
            try:
                check_eps(settings["eps"])
            except ConfigError as error:
                raise ConfigError(f"{field}.eps", error.problem) from None
        if kind == "annotated":
            csv = Path(entry.get("annotations", ""))
            csv = csv if csv.is_absolute() else base / csv
            if not csv.is_file():
                raise ConfigError(f"{field}.annotations", f"no such file: {csv}")
            entry["annotations"] = str(csv.resolve())
    return Experiment(name, kind, entry, settings)


def _setting(value: Any, default: Any, field: str) -> None:
    """The value's type must fit the default's; counts must be >= 1."""
    key = field.rsplit(".", 1)[-1]
    if key in _COUNTS and value is not None:
        _count(value, field)
    elif isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(field, f"{value!r} must be true or false")
    elif isinstance(default, (int, float)) and not isinstance(default, bool) and (
            isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(field, f"{value!r} must be a number")
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(field, f"{value!r} must be a string")


def _shift_entry(entry: dict, field: str, data: Mapping[str, DataSource], methods: Mapping[str, MethodEntry]) -> None:
    shift = entry.get("shift")
    if shift not in SHIFT_KINDS:
        raise ConfigError(f"{field}.shift", f"{shift!r}; choose from {', '.join(SHIFT_KINDS)}")
    _data_ref(entry.get("source"), f"{field}.source", data)
    if shift != "hard":
        _data_ref(entry.get("target"), f"{field}.target", data)
    elif "target" in entry:
        raise ConfigError(f"{field}.target", "a hard-set shift evaluates on its source only")
    groups = _mapping(entry.get("groups"), f"{field}.groups", required=True)
    for group, specs in groups.items():
        if not isinstance(specs, list) or not specs:
            raise ConfigError(f"{field}.groups.{group}", "expected a non-empty list of methods")
        for i, spec in enumerate(specs):
            if isinstance(spec, str):
                if spec not in methods:
                    raise ConfigError(f"{field}.groups.{group}[{i}]", f"{spec!r} is not in `methods` "
                                      "(or write an inline method config with a `name`)")
            else:
                spec = _mapping(spec, f"{field}.groups.{group}[{i}]")
                _known(_mapping(spec.get("train", {}), f"{field}.groups.{group}[{i}].train"), _TRAIN_KEYS,
                       f"{field}.groups.{group}[{i}].train")
                try:
                    build({k: v for k, v in spec.items() if k not in ("label", "tune", "train")})
                except ConfigError as error:
                    raise ConfigError(f"{field}.groups.{group}[{i}]", str(error)) from None
    train = _mapping(entry.get("train", {}), f"{field}.train")
    _known(train, _TRAIN_KEYS, f"{field}.train")
    try:
        TrainConfig(**train)
    except TypeError as error:
        raise ConfigError(f"{field}.train", str(error)) from None
