"""Physical perturbations and sampling shifts (issue 16): severity sweeps, worst cases, more samples.

For each perturbation kind (physics.perturbations) and each of `levels` severities from 0 to
`max_severity`, every method reconstructs the perturbed slices; rows hold SSIM/PSNR/NMSE, the
clean scores and the loss, and the relative change ||M'y' - My|| / ||My|| of the measured data.
Every image gets its own draws: its perturbation seed is a digest of (file, slice, kind, seed), the
same at every severity (common random numbers: the curves move by severity only). Severity 0 is
the input itself, so its rows are the clean reconstruction's scores.

With `worst_case`, each (kind, method, image) also gets a worst-case search at `search.severity`
(robustness.worst_case: the image's swept seed first, then more seeds and a local refinement of
the params), and the l2 attack at the same relative change (`matched_attack`). With `sampling`
among the kinds, Antun et al.'s check reconstructs the slices at each of `accelerations`.

Units: one clean unit per batch; one per (kind, severity, batch); one per (kind, method, image)
for the worst case; one per batch for the acceleration check.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

import mrirobust
from mrirobust import schema
from mrirobust.data.domains import data_identity, slice_id
from mrirobust.data.sample import acquired_columns
from mrirobust.errors import ConfigError, MriRobustError
from mrirobust.evaluate import Batch, batches, config_hash
from mrirobust.experiments.base import Unit, UnitResult, method_identity, register
from mrirobust.experiments.recon import DATA_HELP, METHODS_HELP, Sliced
from mrirobust.experiments.spec import setting
from mrirobust.hashing import digest
from mrirobust.physics import perturbations as P
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.masks import MaskSpec
from mrirobust.robustness import worst_case as W

KIND_NAMES = tuple(P.KINDS)
RESERVED = ("severity", "seed", "params")  # set by the experiment, not by settings
SWEEP, WORST, SAMPLES = schema.SWEEP, schema.WORST, schema.SAMPLES  # the `part` column
SAMPLING = P.SamplingShift.kind


@dataclass(frozen=True)
class SearchSettings:
    """The worst-case search (robustness.worst_case.Search) and its matched l2 attack."""

    severity: float | None = setting(None, help="the fixed severity searched (default: max_severity); a swept "
                                                "level, so the worst case can be compared with the sweep",
                                     minimum=0.0)
    trials: int = setting(8, help="seeds tried, the image's swept seed first", minimum=1)
    refine: int = setting(8, help="local refinement steps of the worst trial's params", minimum=0)
    step: float = setting(0.2, help="initial refinement step in the unit box", minimum=1e-6, maximum=1.0)
    metric: Literal["ssim", "psnr", "nmse"] = setting("ssim", help="the score the search makes worst")
    attack_steps: int | None = setting(None, help="steps of the matched l2 attack (default: the attack's)",
                                       minimum=1)


@dataclass(frozen=True)
class PerturbSpec:
    data: str = setting(help=DATA_HELP, positional=True)
    methods: tuple[str, ...] = setting(("zero-filled", "sense"), help=METHODS_HELP)
    kinds: tuple[str, ...] = setting(("motion", "noise"), choices=KIND_NAMES,
                                     help=f"perturbations, comma-separated: {', '.join(KIND_NAMES)}")
    levels: int = setting(5, help="severities 0 .. max_severity, evenly spaced", minimum=5)
    max_severity: float = setting(1.0, help="the largest severity (1.0: each kind's strong but plausible level, "
                                            "docs/perturbations.md)", minimum=0.0)
    images: int = setting(4, help="perturb the first this many slices", minimum=1)
    split: str = setting("test", help="the split folder of the data source")
    mask: MaskSpec | None = setting(None, help="the under-sampling mask (default: the data source's)")
    settings: dict[str, Any] | None = setting(
        None, help="per-kind settings, e.g. motion.shots=20 (YAML: {motion: {shots: 20}})")
    worst_case: bool = setting(False, help="search each kind's worst case per method and image, next to the "
                                           "matched l2 attack")
    search: SearchSettings = setting(SearchSettings(), flag="--search", help="worst-case search settings, e.g. "
                                                                            "trials=4")
    accelerations: tuple[float, ...] = setting(
        (2, 3, 4, 6, 8), minimum=1.0, help="accelerations of the 'more samples, worse result' check (run when "
                                           "sampling is among the kinds)")
    seed: int = setting(0, help="seeds every image's perturbation draws", minimum=0)
    batch_size: int = setting(4, help="slices reconstructed at once", minimum=1)

    def __post_init__(self) -> None:
        twice = sorted({k for k in self.kinds if self.kinds.count(k) > 1})
        if twice:
            raise ConfigError("kinds", f"{', '.join(twice)} listed twice")
        if self.max_severity <= 0:
            raise ConfigError("max_severity", f"{self.max_severity} must be > 0")
        object.__setattr__(self, "settings", _nested_settings(self.settings or {}, self.kinds))
        if self.worst_case and not any(math.isclose(self.worst_severity, s, abs_tol=1e-12) for s in self.severities):
            levels = ", ".join(f"{s:g}" for s in self.severities)
            raise ConfigError("search.severity", f"{self.search.severity:g} is not a swept level ({levels})")
        if len(set(self.accelerations)) < 2:
            raise ConfigError("accelerations", "give at least two different accelerations")

    @property
    def severities(self) -> list[float]:
        return [round(self.max_severity * i / (self.levels - 1), 12) for i in range(self.levels)]

    @property
    def worst_severity(self) -> float:
        return self.max_severity if self.search.severity is None else self.search.severity


def _nested_settings(settings: Mapping[str, Any], kinds: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """{kind: {name: value}} from YAML's nested mappings or the CLI's `kind.name` keys, each checked
    against the kind's dataclass (an unknown or ill-typed setting names `settings.kind.name`)."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        kind, dot, name = str(key).partition(".")
        if dot:
            nested.setdefault(kind, {})[name] = value
        elif isinstance(value, Mapping):
            nested.setdefault(kind, {}).update(value)
        else:
            raise ConfigError(f"settings.{key}", "expected a mapping of that kind's settings (or KIND.NAME=VALUE)")
    for kind, values in nested.items():
        if kind not in kinds:
            raise ConfigError(f"settings.{kind}", f"{kind!r} is not among kinds ({', '.join(kinds)})")
        reserved = sorted(set(values) & set(RESERVED))
        if reserved:
            raise ConfigError(f"settings.{kind}.{reserved[0]}", "is set by the experiment (levels, seed, search)")
        try:
            P.make(kind, 0.0, 0, **values)
        except ConfigError as error:
            field = error.field if error.field.startswith(kind) else f"{kind}.{error.field}"
            raise ConfigError(f"settings.{field}", error.problem) from None
    return nested


def image_seed(sample: Any, kind: str, seed: int) -> int:
    """The image's own perturbation seed: independent draws per (file, slice, kind), any location."""
    return int(digest({"file": Path(sample.meta.file).name, "slice": sample.meta.slice, "kind": kind,
                       "seed": seed}, length=8), 16)  # < 2^32: numpy seeds the masks


def slice_mask(mask: torch.Tensor) -> torch.Tensor:
    """A mask (W,), (H, W), (1, W) or (1, 1, W) as one slice's (1, h, W) entry of a batched mask."""
    return mask.reshape(1, -1, mask.shape[-1])


@register
class Perturb(Sliced):
    kind = "perturb"
    spec_type = PerturbSpec
    summary = "physical perturbations and sampling shifts: severity sweeps, worst cases, more samples"

    def __init__(self, spec: PerturbSpec, inputs: Any) -> None:
        super().__init__(spec, inputs)
        self.maps: dict[int, torch.Tensor] = {}  # coil maps of a batch (by its first image), for motion

    def check(self) -> None:
        super().check()
        for kind in self.spec.kinds:
            self.perturbation(kind, self.spec.max_severity, 0)
        if SAMPLING in self.spec.kinds and self.sampling_kind() == "poisson":  # not every density is reachable
            shape = tuple(self.dataset()[0].kspace.shape[-2:])
            shift = self.perturbation(SAMPLING, self.spec.max_severity, 0)
            for acceleration in (*self.spec.accelerations, shift.acceleration):
                try:
                    P.sampling_mask("poisson", acceleration, shift.center_fraction, shape, 0)
                except ConfigError as error:
                    raise ConfigError("accelerations", f"poisson at {acceleration:g}x: {error.problem}") from None

    def defaults(self, kind: str) -> dict[str, Any]:
        """A sampling shift starts from the data's own mask: its kind, acceleration and centre."""
        if kind != SAMPLING:
            return {}
        mask = self.mask()
        return {"mask_kind": mask.kind if mask.kind in P.SAMPLING_KINDS else "random",
                "base_acceleration": float(mask.accelerations[0]), "center_fraction": mask.center_fractions[0]}

    def perturbation(self, kind: str, severity: float, seed: int) -> P.Perturbation:
        try:
            return P.make(kind, severity, seed, **{**self.defaults(kind), **self.spec.settings.get(kind, {})})
        except ConfigError as error:
            raise ConfigError(f"settings.{error.field}", error.problem) from None

    def sampling_kind(self) -> str:
        return self.perturbation(SAMPLING, 0.0, 0).mask_kind

    def units(self) -> list[Unit]:
        dataset = self.dataset()
        samples = [dataset[i] for i in range(min(self.spec.images, len(dataset)))]
        common = {"methods": method_identity(self.inputs, self.labels), "data": data_identity(dataset),
                  "mask": self.mask().describe(), "seed": self.spec.seed, "version": mrirobust.__version__}
        units, start = [], 0
        for group in batches(samples, self.spec.batch_size):
            images = {"images": [slice_id(dataset.index[start + i]) for i in range(len(group))]}
            clean = Unit(f"clean-image{start}", {"part": "clean", **common, **images}, ("clean", group, start))
            units.append(clean)
            for kind in self.spec.kinds:
                record = self.perturbation(kind, 0.0, 0).record()
                for severity in self.spec.severities:
                    identity = {"part": SWEEP, "perturbation": {**record, "severity": severity}, **common, **images}
                    units.append(Unit(f"{kind}-s{severity:g}-image{start}", identity,
                                      (SWEEP, group, start, kind, severity, clean.name)))
                for label in self.labels if self.spec.worst_case else []:
                    for i in range(len(group)):
                        identity = {"part": WORST, "perturbation": {**record, "severity": self.spec.worst_severity},
                                    "search": dataclasses.asdict(self.spec.search), "method": label, "image": i,
                                    **common, **images}
                        units.append(Unit(f"worst-{kind}-{label}-image{start + i}", identity,
                                          (WORST, group, start, kind, (label, i), clean.name)))
            if SAMPLING in self.spec.kinds:
                identity = {"part": SAMPLES, "accelerations": list(self.spec.accelerations),
                            "sampling": self.perturbation(SAMPLING, 0.0, 0).record(), **common, **images}
                units.append(Unit(f"samples-image{start}", identity, (SAMPLES, group, start, clean.name)))
            start += len(group)
        return units

    def run(self, unit: Unit, done: Mapping[str, UnitResult]) -> UnitResult:
        part, group, start, *rest = unit.work
        batch = Batch.load(group, self.mask(), self.inputs.device)
        if part == "clean":
            return self.clean_unit(batch, start)
        clean = done[rest[-1]].artefacts["clean_scores"][start]
        if part == SWEEP:
            return self._sweep(batch, start, rest[0], rest[1], clean)
        if part == WORST:
            return self._worst(batch, start, rest[0], *rest[1], clean)
        return self._samples(batch, start, clean)

    def coil_maps(self, batch: Batch, start: int) -> torch.Tensor:
        """The slices' own coil maps, or ESPIRiT maps of the full k-space (uncropped: the object moves
        with its background), once per batch."""
        if start not in self.maps:
            given = [s.maps for s in batch.samples]
            self.maps[start] = (torch.stack(given).to(batch.full.device) if all(m is not None for m in given)
                                else espirit_maps(batch.full, crop=0.0))
        return self.maps[start]

    def perturbed(self, batch: Batch, start: int, specs: list[P.Perturbation],
                  rows: slice = slice(None)) -> tuple[Batch, list[float]]:
        """The batch's slices `rows` each under its own spec, and their relative changes."""
        maps = self.coil_maps(batch, start)[rows] if specs[0].needs_maps else None
        part = dataclasses.replace(batch, samples=batch.samples[rows], full=batch.full[rows], masks=batch.masks[rows],
                                   targets=batch.targets[rows], max_values=batch.max_values[rows],
                                   mask_seeds=batch.mask_seeds[rows])
        fulls, masks, changes = [], [], []
        for i, spec in enumerate(specs):
            full, mask = part.full[i:i + 1], part.masks[i:i + 1]
            slice_maps = None if maps is None else maps[i:i + 1]
            fulls.append(P.perturb(full, spec, maps=slice_maps, mask=mask))
            masks.append(slice_mask(P.perturb_mask(mask[0, 0], spec, shape=tuple(full.shape[-2:]),
                                                   columns=acquired_columns(part.samples[i].meta))))
            changes.append(float(W.relative_change(full, spec, maps=slice_maps, mask=mask)[0]))
        return dataclasses.replace(part, full=torch.cat(fulls), masks=torch.stack(masks)), changes

    def _sweep(self, batch: Batch, start: int, kind: str, severity: float, clean: Mapping[str, Any]) -> UnitResult:
        specs = [self.perturbation(kind, severity, image_seed(s, kind, self.spec.seed)) for s in batch.samples]
        perturbed, changes = (batch, [0.0] * len(specs)) if severity == 0 else self.perturbed(batch, start, specs)
        rows, example = [], {}
        for label in self.labels:
            after, failure = clean[label], None
            if isinstance(after, str):
                failure = f"clean reconstruction failed: {after}"
            elif severity > 0:  # severity 0 is the input itself: the clean scores stand
                try:
                    image = perturbed.reconstruct(self.methods[label])
                    after, example[label] = perturbed.scores(image), image[0].cpu()
                except MriRobustError as error:
                    failure = str(error)
            for i, spec in enumerate(specs):
                shared = self._shared(SWEEP, spec, changes[i])
                scores = (None, None) if failure else (clean[label][i], after[i])
                rows.append(self._row(batch, start, i, label, shared, scores, failure))
        keep = start == 0 and severity == self.spec.max_severity and example
        return UnitResult(rows, {"examples": {kind: example}} if keep else {})

    def _worst(self, batch: Batch, start: int, kind: str, label: str, i: int, clean: Mapping[str, Any]) -> UnitResult:
        """The worst params of `kind` at the search severity for one method on image `i`, and the
        l2 attack at the same relative change."""
        spec = self.perturbation(kind, self.spec.worst_severity, image_seed(batch.samples[i], kind, self.spec.seed))
        extra: dict[str, Any] = {"params": "", "trials": 0, "start_score": math.nan, "attack_objective": math.nan,
                                 "perturbation_objective": math.nan, "relative_change": math.nan}
        failure, scores, image = None, (None, None), None
        if isinstance(clean[label], str):
            failure = f"clean reconstruction failed: {clean[label]}"
        else:
            try:
                after, image, found = self._search(batch, start, i, spec, label)
                scores = (clean[label][i], after)
                extra.update(found)
            except ConfigError:
                raise
            except MriRobustError as error:  # e.g. the method returns NaN: the row records why
                failure = str(error)
        row = self._row(batch, start, i, label, {**self._shared(WORST, spec, math.nan), **extra}, scores, failure)
        keep = start + i == 0 and image is not None
        return UnitResult([row], {"worst_examples": {kind: {label: image}}} if keep else {})

    def _search(self, batch: Batch, start: int, i: int, spec: P.Perturbation, label: str
                ) -> tuple[dict[str, float], torch.Tensor, dict[str, Any]]:
        """The scores and image at the worst params found, and the search's and attack's columns."""
        one, settings = slice(i, i + 1), self.spec.search
        maps = self.coil_maps(batch, start)[one] if spec.needs_maps else None
        case = W.Case(batch.full[one], batch.masks[one], batch.targets[one], maps=maps, max_value=batch.max_values[one],
                      columns=acquired_columns(batch.samples[i].meta))
        search = W.Search(settings.trials, settings.refine, settings.step, settings.metric,
                          ssim_variant=batch.ssim_variant, seed=self.spec.seed)
        found = W.worst_case(self.methods[label], case, spec, search)
        worst, (change,) = self.perturbed(batch, start, [found.spec], one)
        image = worst.reconstruct(self.methods[label])
        columns = {"params": json.dumps(found.spec.params), "trials": len(found.evaluated),
                   "start_score": found.evaluated[0][1], "relative_change": change}
        if spec.kind != SAMPLING:  # the attack keeps the mask; a sampling shift changes it
            columns.update(self._matched(label, case, found.spec, batch.ssim_variant))
        return worst.scores(image)[0], image[0].cpu(), columns

    def _matched(self, label: str, case: W.Case, spec: P.Perturbation, variant: str) -> dict[str, Any]:
        steps = self.spec.search.attack_steps
        matched = W.matched_attack(self.methods[label], case, spec, ssim_variant=variant,
                                   seed=self.spec.seed, **({"steps": steps} if steps else {}))
        return {"attack_objective": float(matched.attack_objective[0]),
                "perturbation_objective": float(matched.perturbation_objective[0]),
                **{f"attack_{name}": float(value[0]) for name, value in matched.scores.items()}}

    def _samples(self, batch: Batch, start: int, clean: Mapping[str, Any]) -> UnitResult:
        """Antun et al.'s check: every method at each acceleration, the masks seeded per image."""
        base = self.perturbation(SAMPLING, 0.0, 0)
        seeds = [image_seed(s, SAMPLING, self.spec.seed) for s in batch.samples]
        rows = []
        for acceleration in self.spec.accelerations:
            masks = [slice_mask(P.sampling_mask(base.mask_kind, acceleration, base.center_fraction,
                                                tuple(batch.full.shape[-2:]), seed, device=batch.full.device,
                                                columns=acquired_columns(s.meta)))
                     for seed, s in zip(seeds, batch.samples)]
            shifted = dataclasses.replace(batch, masks=torch.stack(masks))
            for label in self.labels:
                after, failure = None, None
                try:
                    after = shifted.scores(shifted.reconstruct(self.methods[label]))
                except MriRobustError as error:
                    failure = str(error)
                for i in range(len(seeds)):
                    shared = {"part": SAMPLES, "perturbation": SAMPLING, "severity": math.nan,
                              "perturbation_seed": seeds[i], "acceleration": float(acceleration),
                              "relative_change": math.nan, "settings": base.mask_kind}
                    before = None if isinstance(clean[label], str) else clean[label][i]
                    rows.append(self._row(batch, start, i, label, shared, (before, None if failure else after[i]),
                                          failure))
        return UnitResult(rows)

    def _shared(self, part: str, spec: P.Perturbation, change: float) -> dict[str, Any]:
        settings = {k: v for k, v in spec.record().items() if k not in ("kind", *RESERVED)}
        return {"part": part, "perturbation": spec.kind, "severity": spec.severity, "perturbation_seed": spec.seed,
                "acceleration": spec.acceleration if isinstance(spec, P.SamplingShift) else math.nan,
                "relative_change": change, "settings": json.dumps(settings, sort_keys=True)}

    def _row(self, batch: Batch, start: int, i: int, label: str, shared: dict[str, Any],
             scores: tuple[Any, Any], failure: str | None) -> dict[str, Any]:
        """One (method, image) row: provenance, the scores (clean, after: metric dicts or None), the
        clean values and losses."""
        before, after = scores
        sample = batch.samples[i]
        row = {**shared, schema.METHOD: label, schema.CONFIG_HASH: config_hash(self.methods[label]),
               schema.FILE: sample.meta.file, schema.SLICE: sample.meta.slice, schema.IMAGE: start + i,
               schema.MASK: self.mask().describe(), schema.MASK_SEED: batch.mask_seeds[i],
               schema.SSIM_VARIANT: batch.ssim_variant, schema.VERSION: mrirobust.__version__,
               schema.STATUS: "failed" if failure else "ok", schema.REASON: failure or ""}
        if failure is None:
            for name, value in after.items():
                row[name] = value
                if before is not None:
                    row[schema.clean_column(name)] = before[name]
                    row[schema.loss_column(name)] = schema.loss(name, before[name], value)
        return row

    def finish(self, results: list[UnitResult]) -> UnitResult:
        merged = UnitResult([row for result in results for row in result.rows])
        examples: dict[str, Any] = {"clean": {}, "sweep": {}, "worst": {}}
        for result in results:
            examples["clean"].update(result.artefacts.get("clean", {}))
            examples["sweep"].update(result.artefacts.get("examples", {}))
            for kind, images in result.artefacts.get("worst_examples", {}).items():
                examples["worst"].setdefault(kind, {}).update(images)
        merged.artefacts = {"examples": examples, "max_severity": self.spec.max_severity,
                            "worst_severity": self.spec.worst_severity,
                            "severity_one": {k: self.perturbation(k, 1.0, 0).severity_one() for k in self.spec.kinds}}
        return merged

