"""Reconstruct slices with several methods and score them the fastMRI way.

Data flow: Samples (fully sampled, or already masked test slices) -> a `Batch` on the device (a
mask drawn per file with fastMRI's seeding, targets, SSIM data ranges) -> batched `reconstruct`
per method -> centre crop to the target -> per-slice rows that record what produced them (columns
named by `mrirobust.schema`) -> per-method summaries with bootstrap CIs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import mrirobust
from mrirobust import schema
from mrirobust.data.sample import Sample, draw_mask
from mrirobust.hashing import digest
from mrirobust.methods.base import checked_reconstruct
from mrirobust.metrics import SLICE_MAX, VOLUME_MAX, mean_ci, score
from mrirobust.physics.fft import center_crop
from mrirobust.physics.masks import MaskSpec, stack_masks


def config_hash(method: Any) -> str:
    """A short, stable hash of a method's config, recorded with every result row."""
    return digest({"name": method.name, **method.config()})


def _shape_key(sample: Sample) -> tuple:
    return tuple(sample.kspace.shape), None if sample.target is None else tuple(sample.target.shape)


def batches(samples: Iterable[Sample], batch_size: int) -> Iterator[list[Sample]]:
    """Group consecutive samples of equal k-space and target shape into batches."""
    batch: list[Sample] = []
    for sample in samples:
        if batch and (len(batch) == batch_size or _shape_key(sample) != _shape_key(batch[0])):
            yield batch
            batch = []
        batch.append(sample)
    if batch:
        yield batch


@dataclass
class Batch:
    """Same-shaped slices on the device: full (or file-masked) k-space, masks, targets, data ranges."""

    samples: list[Sample]
    masks: torch.Tensor
    mask_seeds: list[str]  # "from-file" for a file's own mask, else the file name that seeded it
    full: torch.Tensor
    targets: torch.Tensor
    max_values: torch.Tensor
    ssim_variant: str
    precomputed: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # see `meta`

    @classmethod
    def load(cls, samples: Sequence[Sample], spec: MaskSpec, device: str | torch.device) -> Batch:
        targets = [s.require_target() for s in samples]  # a DataError naming the file if one has none
        drawn = [draw_mask(s, spec) for s in samples]
        volume_max = all(s.meta.max_value is not None for s in samples)
        return cls(
            samples=list(samples),
            masks=stack_masks([m for m, _ in drawn]).to(device),
            mask_seeds=["from-file" if seed is None else Path(s.meta.file).name
                        for s, (_, seed) in zip(samples, drawn)],
            full=torch.stack([s.kspace for s in samples]).to(device),
            targets=torch.stack(targets).to(device),
            max_values=torch.tensor([s.meta.max_value or 0.0 for s in samples], device=device),
            ssim_variant=VOLUME_MAX if volume_max else SLICE_MAX,
        )

    @property
    def measured(self) -> torch.Tensor:
        return self.full * self.masks

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.targets.shape[-2:])

    def meta(self, method: Any) -> dict[str, torch.Tensor]:
        """`method.precompute` of the clean measurement (l1: its ESPIRiT maps), once per batch and
        method; {} for a method without one. Every reconstruction and attack of the batch gets it, so
        perturbed measurements reuse the clean measurement's maps instead of re-estimating them."""
        key = id(method)
        if key not in self.precomputed:
            prepare = getattr(method, "precompute", None)
            with torch.no_grad():
                self.precomputed[key] = prepare(self.measured, self.masks) if prepare else {}
        return self.precomputed[key]

    def reconstruct(self, method: Any, kspace: torch.Tensor | None = None) -> torch.Tensor:
        """The method's image of `kspace` (default: the measured k-space), centre-cropped to the target."""
        kspace = self.measured if kspace is None else kspace
        with torch.no_grad():
            image = checked_reconstruct(method, kspace, self.masks, target_shape=self.shape, **self.meta(method))
        return center_crop(image, self.shape)

    def scores(self, image: torch.Tensor) -> list[dict[str, float]]:
        """Per slice, the named metrics of `image` (B, h, w) against the targets."""
        values = {name: value.tolist() for name, value in
                  score(self.targets, image, self.max_values, ssim_variant=self.ssim_variant).items()}
        return [{name: column[i] for name, column in values.items()} for i in range(len(self.samples))]

    def provenance(self, i: int, spec: MaskSpec) -> dict[str, Any]:
        """The columns naming slice `i` and its mask."""
        sample = self.samples[i]
        from_file = self.mask_seeds[i] == "from-file"
        return {schema.FILE: sample.meta.file, schema.SLICE: sample.meta.slice,
                "acquisition": sample.meta.acquisition, "anatomy": sample.meta.anatomy,
                schema.MASK: "from-file" if from_file else spec.describe(),
                schema.MASK_SEED: "" if from_file else self.mask_seeds[i]}


@dataclass
class ReconResult:
    """Per-slice rows, and the reconstructions of the first slice for an example figure."""

    rows: list[dict] = field(default_factory=list)
    example: dict[str, torch.Tensor] = field(default_factory=dict)


def _labelled(methods: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    return dict(methods) if isinstance(methods, Mapping) else {m.name: m for m in methods}


def evaluate(
    samples: Iterable[Sample],
    methods: Mapping[str, Any] | Sequence[Any],
    spec: MaskSpec,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    total: int | None = None,
    progress: bool = True,
) -> ReconResult:
    """Reconstruct every sample with every method (label -> method, or methods labelled by name)
    and score it against its target."""
    methods = _labelled(methods)
    result = ReconResult()
    bar = tqdm(total=total, desc="reconstruct", unit="slice", disable=not progress)
    for group in batches(samples, batch_size):
        score_batch(Batch.load(group, spec, device), methods, spec, result)
        bar.update(len(group))
    bar.close()
    return result


def score_batch(batch: Batch, methods: Mapping[str, Any], spec: MaskSpec, result: ReconResult) -> None:
    """Reconstruct one batch with every method and append its rows (and example) to `result`."""
    for label, method in methods.items():
        image = batch.reconstruct(method)
        if not result.example:
            result.example["target"] = batch.targets[0].cpu()
        result.example.setdefault(label, image[0].detach().cpu())
        hashed = config_hash(method)
        for i, scores in enumerate(batch.scores(image)):
            result.rows.append({schema.METHOD: label, schema.CONFIG_HASH: hashed, **batch.provenance(i, spec),
                                schema.VERSION: mrirobust.__version__, **scores})


def summarise(rows: Sequence[dict], *, confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """Per method: the slice count and the mean and bootstrap CI of every metric column (a single
    slice has no CI: its bounds are NaN)."""
    metric_keys = schema.metric_columns(list(rows[0])) if rows else []
    summary = []
    for name in dict.fromkeys(r[schema.METHOD] for r in rows):
        mine = [r for r in rows if r[schema.METHOD] == name]
        entry: dict = {schema.METHOD: name, "slices": len(mine)}
        for key in metric_keys:
            values = [r[key] for r in mine]
            entry[key] = mean_ci(values, confidence=confidence, seed=seed)
        summary.append(entry)
    return summary
