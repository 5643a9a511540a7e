"""A study config (YAML): data sources, methods and experiments, validated before any work starts.

Every problem is reported as a `ConfigError` naming the field's path (`experiments.attack.eps`),
so a typo costs seconds, not the hours of training that would run before it was noticed. An
experiment entry is its kind's spec (`mrirobust.experiments`): the spec's fields are the keys, so
the format follows the code without a second list. See docs/study.md for the format.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mrirobust.data.domains import FORMATS, Domain
from mrirobust.errors import ConfigError, DataError
from mrirobust.experiments.base import DataSource, experiment_type
from mrirobust.experiments.spec import parse, parse_mask, yaml_where
from mrirobust.methods.base import describe, wrapped_setting
from mrirobust.physics.masks import MaskSpec
from mrirobust.study import EXECUTORS
from mrirobust.workflows.train import TrainConfig

_TOP_KEYS = {"name", "description", "device", "mask", "data", "methods", "experiments", "executor"}
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"device", "progress", "mask_type", "acceleration",
                                                                  "center_fraction"}
DEFAULT_MASK = MaskSpec("random", (0.08,), (4,))
SHIFT_KINDS = ("dataset_shift", "anatomy_shift", "hard_shift")


@dataclass(frozen=True)
class MethodEntry:
    """A method config plus how to prepare it: trained (`train`) or tuned (`tune`) on a data source."""

    label: str
    config: dict[str, Any]
    train: dict[str, Any] | None = None  # {"data": name, **TrainConfig fields}
    tune: dict[str, Any] | None = None  # {"data": name, "grid": {...}, "images": n}
    base: str | None = None  # a wrapper's (ttt's) study method label: its config, prepared, is the wrapped one
    checkpoints: dict[str, str] | None = None  # {data label: weights trained there}, for experiments that train


@dataclass(frozen=True)
class ExperimentEntry:
    """One experiment of a study: its name, kind and validated spec."""

    name: str
    kind: str
    spec: Any


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
    experiments: dict[str, ExperimentEntry]


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; relative paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(path, f"cannot read the study config: {error.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(path, "not a text file (not UTF-8)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise DataError(path, f"not valid YAML{where}: {getattr(error, 'problem', None) or 'syntax error'}") from None
    if raw is None:
        raise DataError(path, "the study config is empty")
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
    if "workers" in executor:
        _count(executor["workers"], "executor.workers")
    default_mask = parse_mask(_mapping(raw.get("mask", {}), "mask"), "mask", DEFAULT_MASK)
    data = {key: _data(key, value, base, default_mask)
            for key, value in _mapping(raw.get("data"), "data", required=True).items()}
    raw_methods = {key: weights_relative_to(value, base)
                   for key, value in _mapping(raw.get("methods", {}), "methods").items()}
    methods = {key: _method(key, value, data, raw_methods) for key, value in raw_methods.items()}
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


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"{value!r} must be an integer >= 1")
    return value


def _data(key: str, value: Any, base: Path, default_mask: MaskSpec) -> DataSource:
    field = f"data.{key}"
    value = {"root": value} if isinstance(value, str) else _mapping(value, field)
    _known(value, {"root", "format", "acquisitions", "mask"}, field)
    if not isinstance(value.get("root"), str):
        raise ConfigError(f"{field}.root", "missing: the data folder")
    root = Path(value["root"]).expanduser()
    root = root if root.is_absolute() else (base / root)
    if not root.exists():
        raise ConfigError(f"{field}.root", f"no such folder or file: {root}")
    fmt = value.get("format", "fastmri")
    if fmt not in FORMATS:
        raise ConfigError(f"{field}.format", f"unknown {fmt!r}; choose from {', '.join(FORMATS)}")
    acquisitions = value.get("acquisitions")
    if isinstance(acquisitions, str):
        acquisitions = [acquisitions]
    if acquisitions is not None and not (isinstance(acquisitions, list) and all(isinstance(a, str) for a in acquisitions)):
        raise ConfigError(f"{field}.acquisitions", "expected a list of acquisition names")
    domain = Domain(root.resolve(), tuple(acquisitions) if acquisitions else None, format=fmt, name=key)
    return DataSource(domain, parse_mask(_mapping(value.get("mask", {}), f"{field}.mask"), f"{field}.mask",
                                         default_mask))


def _data_ref(value: Any, field: str, data: Mapping[str, DataSource]) -> str:
    if value not in data:
        raise ConfigError(field, f"{value!r} is not a data source; defined: {', '.join(data) or 'none'}")
    return value


def weights_relative_to(value: Any, base: Path) -> Any:
    """A method entry with its relative `checkpoint` and `checkpoints` paths made relative to `base`
    (a study's: its config file's folder)."""
    def resolve(path: Any) -> Any:
        return str(base / path) if isinstance(path, str) and path and not Path(path).is_absolute() else path

    if not isinstance(value, Mapping):
        return value
    value = dict(value)
    if "checkpoint" in value:
        value["checkpoint"] = resolve(value["checkpoint"])
    if isinstance(value.get("checkpoints"), Mapping):
        value["checkpoints"] = {key: resolve(path) for key, path in value["checkpoints"].items()}
    return value


def _method(label: str, value: Any, data: Mapping[str, DataSource], labels: Mapping[str, Any]) -> MethodEntry:
    field = f"methods.{label}"
    config = {"name": value} if isinstance(value, str) else _mapping(value, field)
    if not isinstance(config.get("name"), str):
        raise ConfigError(f"{field}.name", "missing: a registered method, entry point or module:attr")
    train, tune = config.pop("train", None), config.pop("tune", None)
    checkpoints = _checkpoints(config.pop("checkpoints", None), field, data)
    wraps = _wrapped_setting(config, field)
    if wraps is not None and isinstance(config.get(wraps), str):
        if checkpoints is not None:
            raise ConfigError(f"{field}.checkpoints", f"{label} is prepared through {config[wraps]!r}: give "
                                                      "`checkpoints` there")
        return _wrapper(label, config, wraps, train or tune, data, labels)
    try:
        method = describe(config)  # traits and checked settings; no network built, no checkpoint read
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
    elif wraps is not None and describe(config[wraps]).needs_checkpoint:
        raise ConfigError(f"{field}.{wraps}", "a trainable method needs a `checkpoint`, or name a study method "
                                              "label with a `train` section")
    if checkpoints is not None and not method.trainable:
        raise ConfigError(f"{field}.checkpoints", f"{config['name']} is not trainable")
    if checkpoints is not None and train is not None:
        raise ConfigError(f"{field}.checkpoints", "weights per data source go with a `checkpoint`, not with a "
                                                  "`train` section (which trains on each)")
    for key, path in (checkpoints or {}).items():
        try:
            describe({**config, "checkpoint": path})
        except ConfigError as error:
            raise ConfigError(f"{field}.checkpoints.{key}", str(error)) from None
    if tune is not None:
        tune = _tune(tune, field, config, data)
    return MethodEntry(label, config, train, tune, checkpoints=checkpoints)


def _checkpoints(value: Any, field: str, data: Mapping[str, DataSource]) -> dict[str, str] | None:
    """`checkpoints: {data label: file}`: the method's weights as trained on that data, which the
    experiments that train a method on a domain (anatomy shift, a remedy's shift gap) use instead."""
    if value is None:
        return None
    checkpoints = _mapping(value, f"{field}.checkpoints", required=True)
    for key, path in checkpoints.items():
        _data_ref(key, f"{field}.checkpoints", data)
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{field}.checkpoints.{key}", "expected the path of a checkpoint file")
    return checkpoints


def _wrapped_setting(config: dict[str, Any], field: str) -> str | None:
    try:
        return wrapped_setting(config)
    except ConfigError as error:
        raise ConfigError(field, str(error)) from None


def _wrapper(label: str, config: dict[str, Any], wraps: str, own: Any, data: Mapping[str, DataSource],
             labels: Mapping[str, Any]) -> MethodEntry:
    """A wrapper (ttt) whose `wraps` setting names a study method: that method's config goes in, and
    its training, so that studies and shifts prepare the wrapped method and fill in its checkpoint."""
    field, ref = f"methods.{label}", config[wraps]
    if ref == label or ref not in labels:
        raise ConfigError(f"{field}.{wraps}", f"{ref!r} is not another method label; defined: "
                                              f"{', '.join(k for k in labels if k != label) or 'none'}")
    if own is not None:
        raise ConfigError(f"{field}.train", f"{label} is prepared through {ref!r}: give `train`/`tune` there")
    base = _method(ref, labels[ref], data, {})  # one level: a wrapper of a wrapper label is an error
    if base.tune is not None:
        raise ConfigError(f"{field}.{wraps}", f"{ref!r} is tuned; {config['name']} wraps a trained network")
    config = {**config, wraps: base.config}
    try:
        describe(config)
    except ConfigError as error:
        raise ConfigError(field, str(error)) from None
    return MethodEntry(label, config, base.train, None, base=ref)


def _tune(tune: Any, field: str, config: dict[str, Any], data: Mapping[str, DataSource]) -> dict[str, Any]:
    tune = _mapping(tune, f"{field}.tune")
    _known(tune, {"data", "grid", "images"}, f"{field}.tune")
    _data_ref(tune.get("data"), f"{field}.tune.data", data)
    grid = _mapping(tune.get("grid"), f"{field}.tune.grid", required=True)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{field}.tune.grid.{key}", "expected a non-empty list of values")
        try:
            describe({**config, key: values[0]})
        except ConfigError as error:
            raise ConfigError(f"{field}.tune.grid.{key}", str(error)) from None
    _count(tune.get("images", 4), f"{field}.tune.images")
    return tune


def _experiment(name: str, value: Any, data: Mapping[str, DataSource], methods: Mapping[str, MethodEntry],
                base: Path) -> ExperimentEntry:
    field = f"experiments.{name}"
    entry = _mapping(value, field)
    kind = entry.pop("kind", name)
    if kind == "shift":
        raise ConfigError(f"{field}.kind", f"write the shift's kind: one of {', '.join(SHIFT_KINDS)}")
    cls = experiment_type(kind, f"{field}.kind")
    mask = entry.pop("mask", None)
    for spec_field in dataclasses.fields(cls.spec_type):
        if spec_field.metadata.get("path") and isinstance(entry.get(spec_field.name), str):
            path = Path(entry[spec_field.name]).expanduser()
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise ConfigError(f"{field}.{spec_field.name}", f"no such file: {path}")
            entry[spec_field.name] = str(path.resolve())
    spec = parse(cls.spec_type, entry, yaml_where(field))
    data_labels, method_labels = cls.references(spec)
    names = [f.name for f in dataclasses.fields(spec) if f.metadata.get("positional")]
    for where, label in zip(names, data_labels):
        _data_ref(label, f"{field}.{where}", data)
    for i, label in enumerate(method_labels):
        if label not in methods:
            raise ConfigError(f"{field}.methods[{i}]", f"{label!r} is not in `methods`; defined: "
                                                       f"{', '.join(methods) or 'none'}")
    if "mask" not in {f.name for f in dataclasses.fields(spec)}:
        if mask is not None:
            raise ConfigError(f"{field}.mask", f"a {kind} experiment takes no mask")
        return ExperimentEntry(name, kind, spec)
    resolved = parse_mask(_mapping(mask, f"{field}.mask"), f"{field}.mask", data[data_labels[0]].mask)
    return ExperimentEntry(name, kind, dataclasses.replace(spec, mask=resolved))
