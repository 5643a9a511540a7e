"""Reconstruction quality: every method on the same slices and masks (the basis of every figure)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mrirobust
from mrirobust.data.domains import data_identity, slice_id
from mrirobust.errors import MriRobustError
from mrirobust.evaluate import Batch, ReconResult, batches, score_batch
from mrirobust.experiments.base import (
    Experiment,
    Unit,
    UnitResult,
    build_methods,
    check_checkpoints,
    check_data,
    check_labels,
    method_identity,
    register,
)
from mrirobust.experiments.spec import setting
from mrirobust.physics.masks import MaskSpec

DATA_HELP = "data source: a label of the study's `data` (on the command line: a .h5 file or folder)"
METHODS_HELP = ("methods: labels of the study's `methods` (on the command line: NAME, NAME=CHECKPOINT, a method "
                "YAML or package.module:attr, comma-separated)")


@dataclass(frozen=True)
class ReconSpec:
    data: str = setting(help=DATA_HELP, positional=True)
    methods: tuple[str, ...] = setting(("zero-filled", "sense"), help=METHODS_HELP)
    split: str = setting("test", help="the split folder of the data source to use (the folder itself if absent)")
    mask: MaskSpec | None = setting(None, help="the under-sampling mask (default: the data source's)")
    slices: str | None = setting(None, help="slices per volume, e.g. middle:5 or 10:20 (default: all)")
    limit: int | None = setting(None, help="score at most this many slices", minimum=1)
    batch_size: int = setting(4, help="slices reconstructed at once", minimum=1)


class Sliced(Experiment):
    """Shared by kinds that walk the first slices of one data source in batches."""

    def mask(self) -> MaskSpec:
        return getattr(self.spec, "mask", None) or self.inputs.source(self.spec.data, "data").mask

    def dataset(self, slices: str | None = None) -> Any:
        return self.inputs.source(self.spec.data, "data").domain.dataset(self.spec.split, slices=slices)

    @property
    def labels(self) -> list[str]:
        return list(self.spec.methods)

    def check(self) -> None:
        """The methods are defined, unique and load; the data opens and suits the mask (named now, not later)."""
        check_labels(self.labels, "methods", self.inputs)
        check_data(self.dataset(getattr(self.spec, "slices", None)), self.mask())
        check_checkpoints(self.inputs, self.labels, "methods")

    @functools.cached_property
    def methods(self) -> dict[str, Any]:
        """The spec's methods, built once per run (networks load their checkpoints here)."""
        return build_methods(self.inputs, self.labels, "methods")

    def clean_unit(self, batch: Batch, start: int) -> UnitResult:
        """Every method's scores on the unperturbed batch (a failure is stored as its reason), with the
        first batch's images as the example; the perturbation kinds score their rows against it."""
        scores, example = {}, {"target": batch.targets[0].cpu()}
        for label in self.labels:
            try:
                image = batch.reconstruct(self.methods[label])
            except MriRobustError as error:
                scores[label] = str(error)
                continue
            scores[label], example[label] = batch.scores(image), image[0].cpu()
        return UnitResult([], {"clean_scores": {start: scores}, **({"clean": example} if start == 0 else {})})


@register
class Recon(Sliced):
    kind = "recon"
    spec_type = ReconSpec
    summary = "reconstruct a dataset with several methods and score them (SSIM, PSNR, NMSE)"

    def units(self) -> list[Unit]:
        dataset = self.dataset(self.spec.slices)
        count = len(dataset) if self.spec.limit is None else min(self.spec.limit, len(dataset))
        ids = [slice_id(dataset.index[i]) for i in range(count)]
        common = {"kind": self.kind, "methods": method_identity(self.inputs, self.spec.methods),
                  "data": data_identity(dataset), "mask": self.mask().describe(), "version": mrirobust.__version__}
        units = []
        for start in range(0, count, self.spec.batch_size):
            indices = list(range(start, min(start + self.spec.batch_size, count)))
            units.append(Unit(f"recon-{start}", {**common, "slices": [ids[i] for i in indices]}, (dataset, indices)))
        return units

    def run(self, unit: Unit, done: Mapping[str, UnitResult]) -> UnitResult:
        dataset, indices = unit.work
        result = ReconResult()
        samples = [dataset[i] for i in indices]
        for group in batches(samples, self.spec.batch_size):
            score_batch(Batch.load(group, self.mask(), self.inputs.device), self.methods, self.mask(), result)
        return UnitResult(result.rows, {"example": result.example} if indices[0] == 0 else {})
