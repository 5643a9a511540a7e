"""The experiment protocol: plan units from (spec, inputs); run one unit -> rows; finish.

An experiment kind is one module: a frozen spec class (its settings, which are the YAML keys and
CLI flags, see `experiments.spec`) and an `Experiment` subclass registered under its kind. Units
are the resumable pieces of work; `run` computes one unit's rows and artefacts (tensors the report
draws figures from) and is pure: no files, no printing, no figures. Storage, progress and
resumption belong to the runner (`experiments.runner`), so every kind resumes the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mrirobust.data.domains import Domain, kspace_shapes
from mrirobust.errors import ConfigError, DataError
from mrirobust.hashing import digest
from mrirobust.methods.base import build
from mrirobust.physics.masks import MaskSpec


@dataclass(frozen=True)
class DataSource:
    """A data domain and the mask its k-space is under-sampled with."""

    domain: Domain
    mask: MaskSpec


@dataclass(frozen=True)
class MethodInput:
    """A method as an experiment receives it: its config (prepared: checkpoint or tuned settings
    filled in) and, for experiments that prepare their own models (shifts), how to prepare it."""

    config: dict[str, Any]
    train: dict[str, Any] | None = None  # TrainConfig fields
    tune: dict[str, Any] | None = None  # {"grid": {...}, "images": n}
    checkpoints: dict[str, str] | None = None  # {data label: weights trained there} (study.config)


@dataclass(frozen=True)
class Inputs:
    """What a study hands an experiment: its data sources and methods by label, where and how."""

    data: Mapping[str, DataSource]
    methods: Mapping[str, MethodInput]
    device: str = "cpu"
    cache: Path = Path("cache")  # trained/tuned models shared between experiments

    def source(self, label: str, where: str) -> DataSource:
        if label not in self.data:
            raise ConfigError(where, f"{label!r} is not a data source; defined: {', '.join(self.data) or 'none'}")
        return self.data[label]

    def method(self, label: str, where: str) -> MethodInput:
        if label not in self.methods:
            raise ConfigError(where, f"{label!r} is not in `methods`; defined: {', '.join(self.methods) or 'none'}")
        return self.methods[label]


@dataclass(frozen=True)
class Unit:
    """A resumable piece of work: `identity` holds everything its result depends on (hashed to
    name it in the cache); `work` is what `run` needs to compute it (not hashed)."""

    name: str
    identity: dict[str, Any]
    work: Any = None


@dataclass
class UnitResult:
    """Rows (flat dicts, columns named by `mrirobust.schema`) and artefacts (tensors for figures)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    artefacts: dict[str, Any] = field(default_factory=dict)


class Experiment:
    """Base class of the experiment kinds; see the module docstring."""

    kind: ClassVar[str] = ""
    spec_type: ClassVar[type]
    summary: ClassVar[str] = ""  # one line for the CLI's help

    def __init__(self, spec: Any, inputs: Inputs) -> None:
        self.spec, self.inputs = spec, inputs

    @classmethod
    def references(cls, spec: Any) -> tuple[list[str], list[str]]:
        """(data source labels, method labels) the spec uses, for validation and job keys."""
        return [spec.data], list(spec.methods)

    @classmethod
    def prepared_methods(cls, spec: Any) -> list[str]:
        """Method labels that must be trained/tuned by the study before this experiment runs."""
        return cls.references(spec)[1]

    def check(self) -> None:
        """Raise a ConfigError/DataError for inputs this experiment cannot use; runs before any compute."""

    def units(self) -> list[Unit]:
        raise NotImplementedError

    def run(self, unit: Unit, done: Mapping[str, UnitResult]) -> UnitResult:
        """Compute one unit (`done`: the results of the units before it, by name)."""
        raise NotImplementedError

    def finish(self, results: Sequence[UnitResult]) -> UnitResult:
        """All units' rows in order and their artefacts merged; kinds add derived rows here."""
        merged = UnitResult()
        for result in results:
            merged.rows.extend(result.rows)
            for key, value in result.artefacts.items():
                merged.artefacts.setdefault(key, value)
        return merged


_KINDS: dict[str, type[Experiment]] = {}
_BUILTIN = ("recon", "attack", "features", "shift", "perturb", "remedy")


def register(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: make an experiment kind available to studies, the CLI and the report."""
    if cls.kind in _KINDS and _KINDS[cls.kind] is not cls:
        raise ConfigError("kind", f"experiment kind {cls.kind!r} is registered twice")
    _KINDS[cls.kind] = cls
    return cls


def kinds() -> dict[str, type[Experiment]]:
    """Every registered experiment kind (the built-in modules register on import)."""
    for name in _BUILTIN:
        importlib.import_module(f"mrirobust.experiments.{name}")
    return dict(_KINDS)


def experiment_type(kind: str, where: str = "kind") -> type[Experiment]:
    known = kinds()
    if kind not in known:
        raise ConfigError(where, f"unknown {kind!r}; choose from {', '.join(known)}")
    return known[kind]


def build_methods(inputs: Inputs, labels: Sequence[str], where: str) -> dict[str, Any]:
    """The methods `labels` name, built from their (prepared) configs, by label."""
    return {label: build(inputs.method(label, where).config) for label in labels}


def method_identity(inputs: Inputs, labels: Sequence[str]) -> dict[str, str]:
    """Digests of the labelled methods' configs: a unit's identity changes when a method does."""
    return {label: digest(inputs.methods[label].config) for label in labels}


def check_labels(labels: Sequence[str], where: str, inputs: Inputs) -> None:
    """Method labels must exist and be unique (they label rows and figure panels)."""
    twice = sorted({n for n in labels if list(labels).count(n) > 1})
    if twice:
        raise ConfigError(where, f"{', '.join(twice)} listed twice")
    for i, label in enumerate(labels):
        inputs.method(label, f"{where}[{i}]")


def check_data(dataset: Any, mask: MaskSpec) -> None:
    """Before any compute: the mask is achievable for the data's width, the first slice has a target
    to score against and holds signal.

    An all-zero slice would otherwise surface later as a misleading ESPIRiT or SSIM error."""
    for _, _, width in sorted(kspace_shapes(dataset)):
        try:
            mask.check_width(width)
        except ConfigError as error:
            raise ConfigError(f"mask.{error.field}", error.problem) from None
    first = dataset[0]
    first.require_target()
    if not bool(first.kspace.abs().amax() > 0):
        raise DataError(first.meta.file, f"slice {first.meta.slice}: the k-space is all zero (an empty image)")


def check_checkpoints(inputs: Inputs, labels: Sequence[str], where: str) -> None:
    """Methods given trained weights are built now, so a bad checkpoint is named before any compute."""
    from mrirobust.methods.base import build

    for i, label in enumerate(labels):
        config = inputs.method(label, f"{where}[{i}]").config
        if config.get("checkpoint"):
            build(config)
