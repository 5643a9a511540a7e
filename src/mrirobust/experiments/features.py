"""Small-feature recovery (paper section 6, appendix C): heat maps, window sizes, annotated boxes.

The physics (a feature inserted through the coil maps, its reference image, box MSE) is in
`mrirobust.robustness.features`. Units: one image, method, window size and chunk of placements
(heat maps, window sizes); one batch of annotated slices and method (annotated boxes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

import mrirobust
from mrirobust import schema
from mrirobust.data.annotations import Box, read_annotations, select
from mrirobust.data.domains import data_identity
from mrirobust.data.sample import Sample
from mrirobust.errors import ConfigError, DataError
from mrirobust.evaluate import Batch, config_hash
from mrirobust.experiments.base import Unit, UnitResult, method_identity, register
from mrirobust.experiments.recon import DATA_HELP, METHODS_HELP, Sliced
from mrirobust.experiments.spec import setting
from mrirobust.metrics import MSE_NAME, region_mse, ssim_name
from mrirobust.physics.masks import MaskSpec
from mrirobust.robustness.features import FeatureImage, heatmap_boxes, random_boxes

Reference = Literal["rss", "added"]
REFERENCE_HELP = "rss: RSS of the coil images with the feature; added: target + value in the window"
MAPS_CROP_HELP = "ESPIRiT crop for the maps the feature goes through (0 keeps the background)"


@dataclass(frozen=True)
class PlacedSpec:
    """What heat maps and window sizes share: features placed on the first `images` slices."""

    data: str = setting(help=DATA_HELP, positional=True)
    methods: tuple[str, ...] = setting(("zero-filled", "sense"), help=METHODS_HELP)
    images: int = setting(1, help="the first this many slices", minimum=1)
    split: str = setting("test", help="the split folder of the data source")
    mask: MaskSpec | None = setting(None, help="the under-sampling mask (default: the data source's)")
    value: float | None = setting(None, help="feature value (default: the image maximum)")
    reference: Reference = setting("rss", help=REFERENCE_HELP)
    normalize: Literal["none", "value"] = setting("none", help="value: divide the MSE by value^2")
    maps_crop: float = setting(0.0, help=MAPS_CROP_HELP, minimum=0.0, maximum=1.0)
    batch_size: int = setting(16, help="placements reconstructed at once", minimum=1)


@dataclass(frozen=True)
class HeatmapSpec(PlacedSpec):
    stride: int = setting(4, help="pixels between window positions", minimum=1)
    window: int = setting(3, help="side of the square feature in pixels", minimum=1)


@dataclass(frozen=True)
class FeatureSizesSpec(PlacedSpec):
    images: int = setting(200, help="the first this many slices", minimum=1)
    normalize: Literal["none", "value"] = setting("value", help="value: divide the MSE by value^2")
    windows: tuple[int, ...] = setting((2, 3, 4, 5), help="window sides in pixels", minimum=1)
    placements: int = setting(100, help="random placements per image and window", minimum=1)
    seed: int = setting(0, help="seeds the placements", minimum=0)


class _Placed(Sliced):
    """Features placed on the first `images` slices: heat maps and window sizes."""

    size_field = "window"

    def check(self) -> None:
        """Also: the first slice is fully sampled with a target, and every window fits in its image."""
        super().check()
        sample = self.dataset()[0]
        _check_features(sample)
        height, width = sample.target.shape[-2:]
        for size in self.sizes():
            if size > min(height, width):
                raise ConfigError(self.size_field, f"{size} is larger than the {height}x{width} image "
                                                   f"of {sample.meta.file}")

    def boxes(self, shape: tuple[int, int], index: int, size: int) -> torch.Tensor:
        raise NotImplementedError

    def sizes(self) -> Sequence[int]:
        raise NotImplementedError

    def units(self) -> list[Unit]:
        dataset = self.dataset()
        self.samples = [dataset[i] for i in range(min(self.spec.images, len(dataset)))]
        self.loaded: dict[int, FeatureImage] = {}
        common = {"kind": self.kind, "maps": "clean", "mask": self.mask().describe(), "reference": self.spec.reference,
                  "normalize": self.spec.normalize, "maps_crop": self.spec.maps_crop, "data": data_identity(dataset),
                  "version": mrirobust.__version__}
        hashes = method_identity(self.inputs, self.spec.methods)
        units = []
        for i, sample in enumerate(self.samples):
            _check_features(sample)
            value = float(sample.target.max()) if self.spec.value is None else float(self.spec.value)
            for label in self.spec.methods:
                for size in self.sizes():
                    boxes = self.boxes(tuple(sample.target.shape[-2:]), i, size)
                    for start in range(0, len(boxes), self.spec.batch_size):
                        chunk = boxes[start:start + self.spec.batch_size]
                        identity = {**common, "file": sample.meta.file, "slice": sample.meta.slice,
                                    "method": hashes[label], "boxes": chunk.tolist(), "value": value}
                        units.append(Unit(f"{self.kind}-{label}-image{i}-k{size}-{start}", identity,
                                          (i, label, size, chunk)))
        return units

    def image(self, i: int) -> FeatureImage:
        if i not in self.loaded:  # ESPIRiT maps once per image, not per unit
            self.loaded[i] = FeatureImage(self.samples[i], self.mask(), self.inputs.device, self.spec.maps_crop,
                                          self.spec.value)
        return self.loaded[i]

    def run(self, unit: Unit, done: Mapping[str, UnitResult]) -> UnitResult:
        i, label, size, chunk = unit.work
        image = self.image(i)
        mse = image.feature_mse(self.methods[label], chunk, self.spec.reference).cpu()
        scale = image.value**2 if self.spec.normalize == "value" else 1.0
        meta = image.sample.meta
        common = {schema.MASK: self.mask().describe(), "reference": self.spec.reference,
                  "normalize": self.spec.normalize, "maps_crop": self.spec.maps_crop,
                  schema.VERSION: mrirobust.__version__}
        rows = [{schema.FILE: meta.file, schema.SLICE: meta.slice, schema.IMAGE: i, schema.METHOD: label,
                 schema.CONFIG_HASH: config_hash(self.methods[label]), "window": size, "top": top, "left": left,
                 "value": image.value, "mse": value, "loss": value / scale, schema.MASK_SEED: image.mask_seed,
                 **common}
                for (top, left, _, _), value in zip(chunk.tolist(), mse.tolist())]
        return UnitResult(rows, {"targets": {i: image.target.cpu()}})

    def finish(self, results: Sequence[UnitResult]) -> UnitResult:
        merged = UnitResult([row for r in results for row in r.rows])
        targets = {}
        for result in results:
            targets.update(result.artefacts.get("targets", {}))
        merged.artefacts = {"targets": targets, "settings": self.figure_settings()}
        return merged

    def figure_settings(self) -> dict[str, Any]:
        return {}


def _check_features(sample: Sample) -> None:
    if sample.target is None:
        raise DataError(sample.meta.file, f"slice {sample.meta.slice} has no reconstruction_rss target")
    if sample.mask is not None:
        raise DataError(sample.meta.file, "features need fully sampled k-space; this file is under-sampled")


@register
class Heatmap(_Placed):
    kind = "heatmap"
    spec_type = HeatmapSpec
    summary = "MSE of a k x k feature at every location on a grid (Figures 7, 16)"

    def sizes(self) -> Sequence[int]:
        return [self.spec.window]

    def boxes(self, shape: tuple[int, int], index: int, size: int) -> torch.Tensor:
        return heatmap_boxes(shape, size, self.spec.stride)

    def figure_settings(self) -> dict[str, Any]:
        return {"window": self.spec.window, "stride": self.spec.stride}


@register
class FeatureSizes(_Placed):
    kind = "feature_sizes"
    spec_type = FeatureSizesSpec
    summary = "random placements of windows 2..5 over many images (Figure 17)"
    size_field = "windows"

    def sizes(self) -> Sequence[int]:
        return list(self.spec.windows)

    def boxes(self, shape: tuple[int, int], index: int, size: int) -> torch.Tensor:
        return random_boxes(shape, size, self.spec.placements, self.spec.seed + 1000 * index + size)


# --- annotated pathologies -----------------------------------------------------------------------

@dataclass(frozen=True)
class AnnotatedSpec:
    data: str = setting(help=DATA_HELP, positional=True)
    annotations: str = setting(help="fastMRI+ or Caliva et al. CSV of boxes", positional=True, path=True)
    methods: tuple[str, ...] = setting(("zero-filled", "sense"), help=METHODS_HELP)
    labels: tuple[str, ...] | None = setting(None, help="label filters (substring, any case)")
    min_size: int = setting(1, help="smallest box side in pixels", minimum=1)
    max_size: int | None = setting(None, help="largest box side in pixels", minimum=1)
    split: str = setting("test", help="the split folder of the data source")
    mask: MaskSpec | None = setting(None, help="the under-sampling mask (default: the data source's)")
    batch_size: int = setting(4, help="slices reconstructed at once", minimum=1)


@register
class Annotated(Sliced):
    kind = "annotated"
    spec_type = AnnotatedSpec
    summary = "MSE inside annotated pathology boxes vs SSIM (Figures 8, 18)"

    def check(self) -> None:
        super().check()
        if not Path(self.spec.annotations).is_file():
            raise ConfigError("annotations", f"no such file: {self.spec.annotations}")
        if self.spec.max_size is not None and self.spec.max_size < self.spec.min_size:
            raise ConfigError("max_size", f"{self.spec.max_size} is below min_size {self.spec.min_size}")
        self.boxes()  # the CSV parses and some box survives the filters

    def boxes(self) -> list[Box]:
        annotations = read_annotations(self.spec.annotations)
        boxes = select(annotations.boxes, labels=self.spec.labels, min_size=self.spec.min_size,
                       max_size=self.spec.max_size)
        if not boxes:
            raise DataError(self.spec.annotations, f"no box left after filtering ({len(annotations.boxes)} boxes; "
                                                   f"labels={list(self.spec.labels or [])}, sizes "
                                                   f"{self.spec.min_size}..{self.spec.max_size})")
        return boxes

    def units(self) -> list[Unit]:
        boxes = self.boxes()
        dataset = self.dataset()
        where = {(Path(info.path).stem, s): i for i, (info, s) in enumerate(dataset.index)}
        self.skipped = [f"{b.file}: file not in the data" if b.file not in {f for f, _ in where}
                        else f"{b.file} slice {b.slice}: slice not in the data"
                        for b in boxes if (b.file, b.slice) not in where]
        keys = list(dict.fromkeys((b.file, b.slice) for b in boxes if (b.file, b.slice) in where))
        if not keys:
            raise DataError(self.spec.annotations, "no annotated box matched a slice of the data")
        samples = {key: dataset[where[key]] for key in keys}
        common = {"kind": self.kind, "mask": self.mask().describe(), "data": data_identity(dataset),
                  "annotations": Path(self.spec.annotations).read_text(), "version": mrirobust.__version__,
                  "select": [self.spec.labels, self.spec.min_size, self.spec.max_size]}  # the boxes scored
        hashes = method_identity(self.inputs, self.spec.methods)
        units = []
        for start in range(0, len(keys), self.spec.batch_size):
            group = [samples[k] for k in keys[start:start + self.spec.batch_size]]
            shapes = {(tuple(s.kspace.shape), tuple(s.target.shape)) for s in group}
            for batch in ([group] if len(shapes) == 1 else [[s] for s in group]):
                for label in self.spec.methods:
                    name = f"annotated-{label}-{Path(batch[0].meta.file).stem}-{batch[0].meta.slice}"
                    identity = {**common, "method": hashes[label],
                                "slices": [(s.meta.file, s.meta.slice) for s in batch]}
                    units.append(Unit(name, identity, (batch, label, boxes)))
        return units

    def run(self, unit: Unit, done: Mapping[str, UnitResult]) -> UnitResult:
        samples, label, boxes = unit.work
        batch = Batch.load(samples, self.mask(), self.inputs.device)
        placed, skipped = _placements(batch, boxes)
        image = batch.reconstruct(self.methods[label])
        scores = batch.scores(image)
        ssim_key = ssim_name(batch.ssim_variant)
        rows, crops = [], {}
        for i, number, box, pixels in placed:
            sample = batch.samples[i]
            rows.append({schema.FILE: sample.meta.file, schema.SLICE: sample.meta.slice, "box": number,
                         "label": box.label, "top": pixels[0], "left": pixels[1], "height": pixels[2],
                         "width": pixels[3], schema.METHOD: label,
                         schema.CONFIG_HASH: config_hash(self.methods[label]),
                         "box_mse": float(region_mse(batch.targets[i], image[i], pixels)),
                         schema.SSIM_VARIANT: batch.ssim_variant, ssim_key: scores[i][ssim_key],
                         "ssim": scores[i][ssim_key], "mse": scores[i][MSE_NAME],
                         schema.MASK: self.mask().describe(), schema.VERSION: mrirobust.__version__})
            crops[(sample.meta.file, sample.meta.slice, number)] = {"target": batch.targets[i].cpu(), "box": pixels,
                                                                    label: image[i].cpu()}
        return UnitResult(rows, {"crops": crops, "skipped": skipped})

    def finish(self, results: Sequence[UnitResult]) -> UnitResult:
        merged = UnitResult([row for r in results for row in r.rows])
        crops: dict[tuple, dict] = {}
        skipped = list(self.skipped)
        for result in results:
            for key, crop in result.artefacts["crops"].items():
                if len(crops) < 3 or key in crops:
                    crops.setdefault(key, {}).update(crop)
            skipped += [s for s in result.artefacts["skipped"] if s not in skipped]
        merged.artefacts = {"crops": {"|".join(map(str, k)): v for k, v in crops.items()}, "skipped": skipped}
        return merged


def _placements(batch: Batch, boxes: list[Box]) -> tuple[list[tuple], list[str]]:
    """(index in batch, box number, Box, (top, left, height, width)) of each box clipped to its image,
    and a message per box left with nothing inside the image."""
    shape = batch.shape
    placed, skipped = [], []
    for i, sample in enumerate(batch.samples):
        mine = [b for b in boxes if (b.file, b.slice) == (Path(sample.meta.file).stem, sample.meta.slice)]
        for number, box in enumerate(mine):
            top, left, height, width = box.pixels(shape[0])
            bottom, right = min(top + height, shape[0]), min(left + width, shape[1])
            top, left = max(top, 0), max(left, 0)
            if bottom <= top or right <= left:
                skipped.append(f"{box.file} slice {box.slice} box {number} ({box.label}): outside the "
                               f"{shape[0]}x{shape[1]} image")
                continue
            placed.append((i, number, box, (top, left, bottom - top, right - left)))
    return placed, skipped
