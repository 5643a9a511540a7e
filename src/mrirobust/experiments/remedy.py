"""Remedies, measured (issue 17): how much a remedy method gains over a standard one, and at what cost.

A remedy is any method label of the study (a test-time-trained, jittered or adversarially trained
network); it is compared with the `standard` label against one of three threats, each measured by
the kind that measures that threat alone, so the numbers are the same as there:

- `shift`: the standard is trained (or tuned) on the source P and on the target Q through
  `workflows.prepare`, as `experiments.shift` does, and evaluated on Q; each remedy, as the study
  prepared it (its `train`/`tune` data: P), is evaluated on Q. The gap closed is
  (SSIM_remedy,P->Q - SSIM_P->Q) / (SSIM_Q->Q - SSIM_P->Q) (robustness.remedy_analysis).
- `attack`: each method under its own attack at every eps (`experiments.attack` with that one
  method: PGD or the two-step attack, as its traits call for).
- `perturb`: each method under the physical perturbation sweeps (`experiments.perturb`'s sweep).

Each method also gets a cost unit: seconds per slice of its reconstruction of one batch at test
time on the experiment's device. Units: the inner kinds' units, prefixed by their method (shift: by
`shift`), then one cost unit per method.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

import mrirobust
from mrirobust import schema
from mrirobust.errors import ConfigError
from mrirobust.evaluate import Batch, batches
from mrirobust.experiments.attack import RANDOM, Attack, AttackSettings, AttackSpec
from mrirobust.experiments.base import (
    Experiment,
    Unit,
    UnitResult,
    check_checkpoints,
    check_labels,
    register,
)
from mrirobust.experiments.perturb import KIND_NAMES, SWEEP, WORST, Perturb, PerturbSpec, SearchSettings
from mrirobust.experiments.recon import DATA_HELP
from mrirobust.experiments.shift import AnatomyShift, TargetShiftSpec
from mrirobust.experiments.spec import setting
from mrirobust.methods.base import build, describe, wrapped_setting
from mrirobust.physics.masks import MaskSpec
from mrirobust.robustness.remedy_analysis import (
    COST,
    IN_DOMAIN,
    REMEDY,
    SHIFTED,
    STANDARD,
)
from mrirobust.workflows.prepare import Model, prepare
from mrirobust.workflows.train import training_seconds

MODES = ("shift", "attack", "perturb")
SHIFT_KEY = "shift"  # the prefix of the shift mode's units (one inner experiment for every method)


@dataclass(frozen=True)
class RemedySpec:
    standard: str = setting(help="the method label the remedies are compared with")
    remedies: tuple[str, ...] = setting(help="method labels of the remedies (test-time training, jittered or "
                                             "adversarially trained networks, any method)")
    against: Literal["shift", "attack", "perturb"] = setting("attack", help="the threat: a distribution shift "
                                                                            "(source -> target), each method's own "
                                                                            "attack, or physical perturbations")
    data: str = setting("", help=f"attack, perturb: {DATA_HELP}")
    source: str = setting("", help="shift: the domain P the methods are prepared on")
    target: str = setting("", help="shift: the shifted domain Q")
    images: int = setting(4, help="slices per method (shift: per domain)", minimum=1)
    split: str = setting("test", help="the split evaluated")
    mask: MaskSpec | None = setting(None, help="the under-sampling mask (default: the data's or the source's)")
    eps: tuple[float, ...] = setting((0, 0.02, 0.04, 0.08), minimum=0.0, help="attack: budgets ||z|| / ||y||")
    attack: AttackSettings = setting(AttackSettings(), flag="--attack-setting", help="attack settings, e.g. steps=50")
    kinds: tuple[str, ...] = setting(("motion",), choices=KIND_NAMES, help="perturb: the perturbations swept")
    levels: int = setting(5, help="perturb: severities 0 .. max_severity", minimum=5)
    max_severity: float = setting(1.0, help="perturb: the largest severity", minimum=0.0)
    settings: dict[str, Any] | None = setting(None, help="perturb: per-kind settings (YAML: {motion: {shots: 20}})")
    worst_case: bool = setting(False, help="perturb: also each method's own worst case of each kind per image, "
                                           "at search.severity (as the perturb kind)")
    search: SearchSettings = setting(SearchSettings(), flag="--search", help="perturb: worst-case search settings")
    train: dict[str, Any] | None = setting(None, help="shift: training settings of the standard (TrainConfig)")
    tune_images: int = setting(4, help="shift: validation slices a tuned standard is tuned on", minimum=1)
    seed: int = setting(0, help="seeds the attacks and the perturbation draws", minimum=0)
    batch_size: int = setting(4, help="slices reconstructed at once", minimum=1)

    def __post_init__(self) -> None:
        labels = [self.standard, *self.remedies]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:
            raise ConfigError("remedies", f"{', '.join(twice)} listed twice (or also the standard)")
        needed = ("source", "target") if self.against == "shift" else ("data",)
        for name in needed:
            if not getattr(self, name):
                raise ConfigError(name, f"missing: a remedy experiment against {self.against} needs it")
        if self.against == "shift" and self.source == self.target:
            raise ConfigError("target", f"source and target are both {self.source!r}")
        self.inner_spec(self.standard)  # the mode's own checks (eps, kinds, settings), named by field

    def inner_spec(self, label: str) -> AttackSpec | PerturbSpec | TargetShiftSpec:
        """The spec of the kind that measures the threat (for `label` alone; shift: the standard)."""
        common = {"images": self.images, "mask": self.mask, "batch_size": self.batch_size}
        if self.against == "shift":
            return TargetShiftSpec(source=self.source, target=self.target, groups={STANDARD: [self.standard]},
                                   train=self.train, tune_images=self.tune_images, eval_split=self.split, **common)
        sliced = {"data": self.data, "methods": (label,), "split": self.split, "seed": self.seed, **common}
        if self.against == "attack":
            return AttackSpec(eps=self.eps, attack=self.attack, **sliced)
        return PerturbSpec(kinds=self.kinds, levels=self.levels, max_severity=self.max_severity,
                           settings=self.settings, worst_case=self.worst_case, search=self.search, **sliced)


class ShiftGap(AnatomyShift):
    """The shift units of the gap: the standard trained on P and on Q, evaluated on Q, and each remedy
    (as the study prepared it) evaluated on Q."""

    def __init__(self, spec: TargetShiftSpec, inputs: Any, remedies: tuple[str, ...]) -> None:
        super().__init__(spec, inputs)
        self.remedies = remedies

    def units(self) -> list[Unit]:
        (source, _), (target, _) = self.directions()
        standard = [u for u in super().units() if u.work[2].label == target.label]
        fix = self.fixes[source.label][target.label]  # P's readout length for a VarNet remedy on Q
        remedies = []
        for label in self.remedies:
            model = Model(label, REMEDY, dict(self.inputs.method(label, "remedies").config))
            unit = self.evaluation_unit(model, None, target)
            remedies.append(Unit(unit.name, {**unit.identity, "resolution_fix": fix}, (*unit.work[:4], fix)))
        return standard + remedies


@register
class Remedy(Experiment):
    kind = "remedy"
    spec_type = RemedySpec
    summary = "remedies vs a standard method: the shift gap closed, or the gain under attack/perturbations, and cost"

    @classmethod
    def references(cls, spec: RemedySpec) -> tuple[list[str], list[str]]:
        data = [spec.source, spec.target] if spec.against == "shift" else [spec.data]
        return data, [spec.standard, *spec.remedies]

    @classmethod
    def prepared_methods(cls, spec: RemedySpec) -> list[str]:
        """The study prepares the remedies; against a shift the experiment prepares the standard (on P and Q)."""
        return list(spec.remedies) if spec.against == "shift" else [spec.standard, *spec.remedies]

    @property
    def labels(self) -> list[str]:
        return [self.spec.standard, *self.spec.remedies]

    def role(self, label: str) -> str:
        return STANDARD if label == self.spec.standard else REMEDY

    @functools.cached_property
    def inner(self) -> dict[str, Experiment]:
        """The experiments that measure the threat: one per method (shift: one for all), by unit prefix."""
        if self.spec.against == "shift":
            return {SHIFT_KEY: ShiftGap(self.spec.inner_spec(self.spec.standard), self.inputs, self.spec.remedies)}
        kind = Attack if self.spec.against == "attack" else Perturb
        return {label: kind(self.spec.inner_spec(label), self.inputs) for label in self.labels}

    def check(self) -> None:
        check_labels(self.labels, "remedies", self.inputs)
        for experiment in self.inner.values():
            experiment.check()
        if self.spec.against == "shift":
            check_checkpoints(self.inputs, self.spec.remedies, "remedies")
            model = self.inner[SHIFT_KEY].models[0]
            if not (describe(model.config).needs_checkpoint or model.grid or model.checkpoints):
                raise ConfigError("standard", f"{model.label!r} is neither trained, tuned nor given `checkpoints`: "
                                              "without a version prepared on the target the shift gap is undefined")

    def units(self) -> list[Unit]:
        units = []
        for key, experiment in self.inner.items():
            for unit in experiment.units():
                if unit.identity.get("attacked") == RANDOM or unit.identity.get("part") not in (None, "clean", SWEEP,
                                                                                                  WORST):
                    continue  # the attack's random control and perturb's "more samples" check are not compared
                units.append(Unit(f"{key}/{unit.name}", unit.identity, (key, unit)))
        first = {label: next(u for u in units if self.label_of(u) == label) for label in self.labels}
        units += [Unit(f"cost-{label}", {"part": COST, "of": first[label].identity, "device": self.inputs.device,
                                         "version": mrirobust.__version__}, (COST, label))
                  for label in self.labels]
        return units

    def label_of(self, unit: Unit) -> str:
        """The method a wrapped unit measures (shift units: their model's label)."""
        key, inner = unit.work
        return inner.work[0].label if self.spec.against == "shift" else key

    def run(self, unit: Unit, done: Mapping[str, UnitResult]) -> UnitResult:
        key, inner = unit.work
        if key == COST:
            return self.cost(inner)
        view = {name.removeprefix(f"{key}/"): result for name, result in done.items() if name.startswith(f"{key}/")}
        result = self.inner[key].run(inner, view)
        return UnitResult([self.tagged(row) for row in result.rows], result.artefacts)

    def tagged(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A row of the inner kind with its method, role and (shift) condition."""
        label = row.get("evaluated", row.get(schema.METHOD))
        tags: dict[str, Any] = {"against": self.spec.against, schema.METHOD: label, "role": self.role(label),
                                "standard": self.spec.standard}
        if self.spec.against == "shift":
            in_domain = row["trained_on"] == row["evaluated_on"]
            tags["condition"] = IN_DOMAIN if in_domain else SHIFTED
        return {**row, **tags}

    def cost(self, label: str) -> UnitResult:
        """Seconds per slice of `label`'s reconstruction of the first batch, on the experiment's device,
        after one slice untimed (lazy device set-up, kernel selection)."""
        method, dataset, mask = self.timed(label)
        if getattr(method, "model", None) is not None:
            method.model.eval()
        samples = [dataset[i] for i in range(min(self.spec.images, len(dataset)))]
        batch = Batch.load(next(batches(samples, self.spec.batch_size)), mask, self.inputs.device)
        Batch.load(batch.samples[:1], mask, self.inputs.device).reconstruct(method)  # first-call set-up untimed
        synchronise(batch.full)
        began = time.perf_counter()
        batch.reconstruct(method)
        synchronise(batch.full)
        seconds = time.perf_counter() - began
        row = {"part": COST, "against": self.spec.against, schema.METHOD: label, "role": self.role(label),
               "standard": self.spec.standard, "seconds_per_slice": seconds / len(batch.samples),
               "slices": len(batch.samples), "device": str(batch.full.device),
               "train_seconds": trained_for(method), schema.VERSION: mrirobust.__version__}
        return UnitResult([row])

    def timed(self, label: str) -> tuple[Any, Any, MaskSpec]:
        """The built method, the data it is timed on and the mask (shift: the standard trained on P, on Q)."""
        if self.spec.against != "shift":
            inner = self.inner[label]
            return inner.methods[label], inner.dataset(), inner.mask()
        shift = self.inner[SHIFT_KEY]
        (source, _), (target, _) = shift.directions()
        config = (prepare(shift.models[0], source, shift.settings()).config if label == self.spec.standard
                  else self.inputs.method(label, "remedies").config)
        fix = shift.fixes[source.label][target.label]
        if fix is not None and "resolution_fix" in describe(config).settings:
            config = {"resolution_fix": fix, **config}  # as the evaluation on Q (experiments.shift)
        return build(config), shift.evaluated[target.label], shift.mask()

    def finish(self, results: list[UnitResult]) -> UnitResult:
        settings = {"against": self.spec.against, "standard": self.spec.standard,
                    "remedies": list(self.spec.remedies), "source": self.spec.source, "target": self.spec.target}
        return UnitResult([row for result in results for row in result.rows], settings)


def trained_for(method: Any) -> float | None:
    """Seconds the weights `method` uses took to train (a wrapper's: its wrapped method's), as its
    training run recorded them; None for methods without trained weights or without a record."""
    config = method.config() if callable(getattr(method, "config", None)) else {}
    wraps = wrapped_setting(config) if config else None
    if wraps is not None and isinstance(config.get(wraps), Mapping):
        config = config[wraps]
    checkpoint = config.get("checkpoint")
    return training_seconds(checkpoint) if checkpoint else None


def synchronise(tensor: torch.Tensor) -> None:
    """Wait for the device's queued work, so a wall-clock time covers it."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
