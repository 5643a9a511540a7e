"""Distribution shifts (paper section 5, appendix B): dataset, anatomy and adversarially-filtered.

Every method enters as a group of variants (U-net widths, VarNet cascade counts, l1 transforms,
un-trained decoders) so that a scatter plot of out- against in-distribution SSIM has many points
and a linear fit across them says whether all methods lose a similar amount.

- dataset_shift: models trained/tuned on the source, evaluated on the source and the target.
- anatomy_shift: the same in both directions (source -> target and target -> source).
- hard_shift: the source's `hard_slices` (5 middle slices per volume) reconstructed by a filter
  method that is not evaluated; the `hard_fraction` with the lowest SSIM is the hard set, the
  rest the normal set.

Models are trained or tuned through `workflows.prepare` (a content-hashed cache shared with every
experiment and study). Units: one model, trained on one domain, evaluated on one domain.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import mrirobust
from mrirobust import schema
from mrirobust.data.domains import Domain, data_identity, kspace_shapes, slice_id
from mrirobust.errors import ConfigError, DataError, MriRobustError
from mrirobust.evaluate import evaluate
from mrirobust.experiments.base import Experiment, Unit, UnitResult, check_data, register
from mrirobust.experiments.spec import setting
from mrirobust.hashing import digest
from mrirobust.methods.base import build, describe
from mrirobust.physics.masks import MaskSpec
from mrirobust.robustness.shift_analysis import MIN_FIT_POINTS, frequency_rows, hard_set
from mrirobust.workflows.prepare import Model, Prepared, PrepareSettings, needs_preparing, parse_groups, prepare
from mrirobust.workflows.train import TrainConfig

# Demo-scale groups: small variants that train in minutes on a CPU. Paper scale: the Table 1/2
# presets (`unet-ref`, `unet2`.., `varnet-ref`, `varnet2`..) and the full-size decoders.
DEMO_GROUPS: dict[str, list[str | dict[str, Any]]] = {
    "U-net": [{"name": "unet-small", "chans": c} for c in (4, 8, 16)],
    "VarNet": [{"name": "varnet-small", "num_cascades": n} for n in (1, 2, 4)],
    "l1": ["l1", "l1-fourier", "l1-dct"],
    "un-trained": ["convdecoder-small", "deepdecoder-small"],
}
GROUPS_HELP = ("group name -> list of methods (study labels or inline configs with `name`, optional `label`, "
               "`tune` grid and `train` settings); on the command line a YAML file (default: the demo-sized groups)")
# CG-SENSE filters the hard set: not one of the evaluated methods (the paper used i-RIM, a fifth
# method), deterministic, cheap, and limited by the same under-sampling as every method.
DEFAULT_FILTER = "sense"


@dataclass(frozen=True)
class ShiftSpec:
    source: str = setting(help="source domain (train/ val/ test/ splits); on the command line PATH, PATH@ACQ1,ACQ2 "
                               "filters acquisitions", positional=True)
    groups: dict[str, Any] | None = setting(None, help=GROUPS_HELP, yaml_file=True)
    train: dict[str, Any] | None = setting(None, help="training settings of the trained models (TrainConfig), "
                                                      "e.g. epochs=2")
    tune_images: int = setting(4, help="validation slices a tuned model is tuned on", minimum=1)
    mask: MaskSpec | None = setting(None, help="the under-sampling mask (default: the source's)")
    images: int | None = setting(None, help="evaluate at most this many slices per domain", minimum=1)
    eval_split: str = setting("test", help="the split evaluated on")
    batch_size: int = setting(4, help="slices reconstructed at once", minimum=1)
    min_fit_points: int = setting(MIN_FIT_POINTS, help="fewest models a line is fitted through (fewer: inconclusive)",
                                  minimum=3)


@dataclass(frozen=True)
class TargetShiftSpec(ShiftSpec):
    target: str = setting("", help="shifted domain; on the command line PATH@ACQ filters, mridata:PATH for the "
                                   "Stanford knees", positional=True)


@dataclass(frozen=True)
class HardShiftSpec(ShiftSpec):
    filter_method: str = setting(DEFAULT_FILTER, help="the method choosing the hard set (not one of the groups)",
                                 flag="--filter")
    hard_slices: str = setting("middle:5", help="slices per volume the hard set is chosen from")
    hard_fraction: float = setting(0.1, help="fraction of slices with the lowest filter SSIM",
                                   minimum=0.0, maximum=1.0)

    def __post_init__(self) -> None:
        if not 0 < self.hard_fraction < 1:
            raise ConfigError("hard_fraction", f"{self.hard_fraction} must lie strictly between 0 and 1")


class Shift(Experiment):
    """Shared by the three shift kinds: directions (train domain -> evaluation domains)."""

    @classmethod
    def references(cls, spec: ShiftSpec) -> tuple[list[str], list[str]]:
        members = [m for specs in (spec.groups or {}).values() if isinstance(specs, list)
                   for m in specs if isinstance(m, str)]
        return [spec.source, *([spec.target] if getattr(spec, "target", "") else [])], members

    @classmethod
    def prepared_methods(cls, spec: ShiftSpec) -> list[str]:
        return []  # a shift trains and tunes its groups on its own domains

    def domain(self, label: str, where: str) -> Domain:
        return self.inputs.source(label, where).domain

    def mask(self) -> MaskSpec:
        return self.spec.mask or self.inputs.source(self.spec.source, "source").mask

    def directions(self) -> list[tuple[Domain, list[Domain]]]:
        raise NotImplementedError

    @functools.cached_property
    def models(self) -> list[Model]:
        groups = self.spec.groups or DEMO_GROUPS
        if not isinstance(groups, Mapping):
            raise ConfigError("groups", "expected a mapping from group names to lists of methods")
        resolved = {}
        for group, specs in groups.items():
            if not isinstance(specs, list) or not specs:
                raise ConfigError(f"groups.{group}", "expected a non-empty list of methods")
            resolved[group] = [self._member(s, f"groups.{group}[{i}]") for i, s in enumerate(specs)]
        try:
            return parse_groups(resolved)
        except ConfigError as error:
            raise ConfigError(f"groups ({error.field})", error.problem) from None

    def _member(self, spec: Any, where: str) -> dict[str, Any]:
        """A group member: a study method label (its raw config, grid, tuning size, training settings)
        or an inline method config."""
        if isinstance(spec, str):
            method = self.inputs.method(spec, where)
            tune = method.tune or {}
            return {**method.config, "label": spec, **({"tune": tune["grid"]} if "grid" in tune else {}),
                    **({"train": method.train} if method.train else {}),
                    **({"checkpoints": method.checkpoints} if method.checkpoints else {})}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(where, "expected a method label or a method config with a `name`")
        return dict(spec)

    @functools.cached_property
    def train_config(self) -> TrainConfig:
        mask = self.mask()
        try:
            return TrainConfig(**{**(self.spec.train or {}), "mask_type": mask.kind,
                                  "acceleration": mask.accelerations[0],
                                  "center_fraction": mask.center_fractions[0]})
        except TypeError as error:
            raise ConfigError("train", str(error)) from None

    def settings(self) -> PrepareSettings:
        return PrepareSettings(self.inputs.cache, self.train_config, self.mask(), self.spec.tune_images,
                               self.inputs.device)

    def check(self) -> None:
        self.evaluated = {d.label: d.dataset(self.spec.eval_split, slices=self.eval_slices())
                          for _, ds in self.directions() for d in ds}
        for dataset in self.evaluated.values():
            check_data(dataset, self.mask())
        self.check_weights()
        needs_training = any(needs_preparing(m.config) or m.grid for m in self.models)
        self.fixes = {}
        for train_domain, _ in self.directions():
            train_set = train_domain.dataset("train", required=True) if needs_training else None
            if train_set is not None:
                check_data(train_set, self.mask())
            self.fixes[train_domain.label] = check_compatible(train_set, self.evaluated, self.checked_models(),
                                                              self.mask(), self.train_config.batch_size)

    def check_weights(self) -> None:
        """Weights given per domain load; a model with trained weights has them for every domain it is
        trained on here (the source's are its `checkpoint`): else the target's would be the source's."""
        source = self.domain(self.spec.source, "source").label
        for model in self.models:
            for path in (model.checkpoints or {}).values():
                build({**model.config, "checkpoint": path})
            trained_elsewhere = (describe(model.config).trainable and not needs_preparing(model.config)
                                 and not model.grid)
            for train_domain, _ in self.directions():
                if trained_elsewhere and train_domain.label != source and not model.weights_on(train_domain.label):
                    raise ConfigError("groups", f"{model.label} comes with trained weights (`checkpoint`) but none "
                                                f"trained on {train_domain.label}: give the method `checkpoints: "
                                                f"{{{train_domain.label}: FILE}}` or a `train` section")

    def eval_slices(self) -> str | None:
        return None

    def checked_models(self) -> list[Model]:
        return self.models

    def evaluation_unit(self, model: Model, train_domain: Domain | None, domain: Domain) -> Unit:
        dataset = self.evaluated[domain.label]
        count = len(dataset) if self.spec.images is None else min(self.spec.images, len(dataset))
        trained = needs_preparing(model.config)
        given = model.weights_on(train_domain.label) if train_domain is not None else None
        prepared = train_domain is not None and (trained or bool(model.grid))
        fix = self.fixes[train_domain.label][domain.label] if train_domain is not None else None
        identity = {"kind": "shift-evaluation", "model": [model.config, model.grid, model.train],
                    "train": self.train_config.identity() if trained else None,
                    "prepared_on": self.split_identity(train_domain) if prepared else None,
                    "data": data_identity(dataset), "slices": [slice_id(dataset.index[i]) for i in range(count)],
                    "mask": self.mask().describe(), "resolution_fix": fix, "version": mrirobust.__version__,
                    **({"weights": given} if given else {})}
        trained_on = train_domain.label if train_domain is not None else "-"
        name = f"{model.label}-{trained_on}-on-{domain.label}"
        return Unit(name, identity, (model, train_domain, domain, count, fix))

    def split_identity(self, domain: Domain) -> list:
        """The identity of a training domain's train and val splits, read once per domain."""
        found = self.__dict__.setdefault("_split_identities", {})
        if domain.label not in found:
            found[domain.label] = [data_identity(domain.dataset(s, required=True)) for s in ("train", "val")]
        return found[domain.label]

    def units(self) -> list[Unit]:
        return [self.evaluation_unit(model, train_domain, domain)
                for train_domain, domains in self.directions() for model in self.models for domain in domains]

    def run(self, unit: Unit, done: Mapping[str, UnitResult]) -> UnitResult:
        model, train_domain, domain, count, fix = unit.work
        if train_domain is None:
            prepared = Prepared(model, dict(model.config), digest(describe(model.config).config()))
        else:
            prepared = prepare(model, train_domain, self.settings())
        config = dict(prepared.config)
        if fix is not None and "resolution_fix" in describe(config).settings:
            config.setdefault("resolution_fix", fix)  # VarNet on another readout length
        method = build(config)
        if getattr(method, "model", None) is not None:
            method.model.eval()
        dataset = self.evaluated[domain.label]
        trained_on = train_domain.label if train_domain is not None else "-"
        try:
            result = evaluate((dataset[i] for i in range(count)), {model.label: method}, self.mask(),
                              device=self.inputs.device, batch_size=self.spec.batch_size, progress=False)
        except MriRobustError as error:
            raise type(error)(f"{model.label} (trained on {trained_on}) on {domain.label}: {error}") from error
        extra = {"model": model.label, "group": model.group, "trained_on": trained_on,
                 "evaluated_on": domain.label, "resolution_fix": config.get("resolution_fix")}
        rows = [{**extra, **row} for row in result.rows]
        example = {"target": result.example["target"], model.label: result.example[model.label]}
        return UnitResult(rows, {"examples": {f"{trained_on} -> {domain.label}": example}})

    def role(self, row: Mapping[str, Any]) -> str:
        return "in" if row["trained_on"] == row["evaluated_on"] else "out"

    def finish(self, results: Sequence[UnitResult]) -> UnitResult:
        # the kind is set here, not in the unit: an evaluation unit's identity holds no kind, so the
        # dataset and anatomy shifts share the units they have in common (rows cached by either)
        merged = UnitResult([{**row, "shift": self.kind, "role": self.role(row),
                              "min_fit_points": self.spec.min_fit_points}
                             for r in results for row in r.rows if row["trained_on"] != "-"])
        examples: dict[str, dict[str, Any]] = {}
        for result in results:
            for direction, images in result.artefacts.get("examples", {}).items():
                if not direction.startswith("-"):
                    examples.setdefault(direction, {}).update(images)
        merged.artefacts = {"examples": examples, "mask": self.mask().describe()}
        return merged


def check_compatible(source: Any, evaluated: Mapping[str, Any], models: Sequence[Model], spec: MaskSpec,
                     train_batch: int) -> dict[str, int | None]:
    """Raise a clear error for data that the models cannot take; return each domain's readout fix.

    U-net, VarNet, l1 and the decoders take any coil count and image size (U-net works on the RSS
    image, VarNet estimates one map per coil). What does break: mixed shapes in a training batch,
    a mask centre narrower than the ESPIRiT kernel (l1, SENSE), a target larger than its k-space.
    VarNet's `resolution_fix` is set to the training readout length for a domain with another one.
    """
    train_shapes = kspace_shapes(source) if source is not None else set()
    if train_batch > 1 and len(train_shapes) > 1:
        raise ConfigError("train.batch_size", f"the source training set mixes k-space shapes "
                                              f"{sorted(train_shapes)} (coils, H, W); train with batch_size 1")
    readouts = {h for _, h, _ in train_shapes}
    fixes = {}
    for label, dataset in evaluated.items():
        for info in getattr(dataset, "volumes", []):
            if info.target_shape is None:
                raise DataError(info.path, "has no reconstruction_rss target to score against")
            if info.target_shape[0] > info.shape[0] or info.target_shape[1] > info.shape[1]:
                raise DataError(info.path, f"target {info.target_shape} is larger than the k-space {info.shape}")
        shapes = kspace_shapes(dataset)
        for model in models:
            espirit = describe(model.config).settings.get("espirit")  # CG-SENSE's, l1's EspiritSettings
            kernel = getattr(espirit, "kernel_size", None)
            for _, _, width in shapes:
                centre = min(round(width * f) for f in spec.center_fractions)
                if kernel is not None and centre < kernel:
                    raise ConfigError("mask.center_fraction", f"{model.label} on {label}: the mask keeps {centre} "
                                      f"centre columns of {width}; ESPIRiT needs at least kernel_size={kernel}")
        domain_readouts = {h for _, h, _ in shapes}
        fixes[label] = (next(iter(readouts)) if len(readouts) == 1 and domain_readouts != readouts else None)
    return fixes


@register
class DatasetShift(Shift):
    kind = "dataset_shift"
    spec_type = TargetShiftSpec
    summary = "dataset shift: models trained on the source, evaluated on source and target (Figure 2)"

    def directions(self) -> list[tuple[Domain, list[Domain]]]:
        if not self.spec.target:
            raise ConfigError("target", f"missing: a {self.kind} needs a target domain")
        source, target = self.domain(self.spec.source, "source"), self.domain(self.spec.target, "target")
        if source.label == target.label:
            raise ConfigError("target", f"source and target are both labelled {source.label!r}; name them apart")
        return [(source, [source, target])]


@register
class AnatomyShift(DatasetShift):
    kind = "anatomy_shift"
    summary = "anatomy shift in both directions (Figures 4, 13)"

    def directions(self) -> list[tuple[Domain, list[Domain]]]:
        (source, (_, target)), = super().directions()
        return [(source, [source, target]), (target, [target, source])]


@register
class HardShift(Shift):
    kind = "hard_shift"
    spec_type = HardShiftSpec
    summary = "adversarially-filtered shift: the hard set a filter method picks (Figures 6, 14)"

    def directions(self) -> list[tuple[Domain, list[Domain]]]:
        source = self.domain(self.spec.source, "source")
        return [(source, [source])]

    def eval_slices(self) -> str | None:
        return self.spec.hard_slices

    def check(self) -> None:
        if self.mask().two_dimensional:
            raise ConfigError("mask.type", "hard_shift's frequency analysis uses the mask's centre columns; a "
                                           "poisson mask has none: use a column mask")
        super().check()

    @functools.cached_property
    def filter_model(self) -> Model:
        config = {"name": self.spec.filter_method}
        if config["name"] in {m.config["name"] for m in self.models}:
            raise ConfigError("filter_method", f"{config['name']!r} is one of the evaluated methods; the hard set "
                                               "must be chosen by a method that is not evaluated")
        return Model("filter-" + config["name"], "filter", config)

    def checked_models(self) -> list[Model]:
        return [*self.models, self.filter_model]

    def units(self) -> list[Unit]:
        source = self.directions()[0][0]
        return [self.evaluation_unit(self.filter_model, None, source), *super().units()]

    def finish(self, results: Sequence[UnitResult]) -> UnitResult:
        filtered = results[0].rows
        records = hard_set(filtered, self.spec.hard_fraction)
        self.hard = {(r["file"], r["slice"]) for r in records}
        merged = super().finish(results[1:])
        source = self.directions()[0][0]
        dataset = self.evaluated[source.label]
        count = len(dataset) if self.spec.images is None else min(self.spec.images, len(dataset))
        key = schema.ssim_column(filtered)
        filter_ssim = {(Path(r["file"]).name, r["slice"]): r[key] for r in filtered}
        freq_rows, profiles = frequency_rows((dataset[i] for i in range(count)), self.mask(), self.hard,
                                             filter_ssim)
        merged.artefacts.update({
            "hard_set": [{**r, "filter": self.filter_model.label} for r in records], "frequency": freq_rows,
            "profiles": {k: torch.as_tensor(v) for k, v in profiles.items()},
            "centre_fraction": self.mask().center_fractions[0]})
        return merged

    def role(self, row: Mapping[str, Any]) -> str:
        return "hard" if (Path(row["file"]).name, row["slice"]) in self.hard else "normal"
