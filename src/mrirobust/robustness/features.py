"""Small-feature recovery (paper section 6, appendix C): artificial features and annotated pathologies.

Artificial feature. For a fully sampled slice with coil images c = F^-1 y, ESPIRiT maps S are
estimated from y (BART `ecalib -m1` settings, but `maps_crop` 0 by default so that a feature in
the background still reaches the coils). A k x k window f, filled with `value` (default: the
target's maximum, as in the paper), is added to the complex image x behind c: the coil images
become c + S f, i.e. the k-space becomes y + F(S f), so the feature obeys the same physics as the
anatomy. Positions (top, left) are pixels of the target frame (the centre crop of the image that
`reconstruct` returns); on the k-space grid the window sits at (top + dh, left + dw) with
(dh, dw) the centre-crop offsets. The modified k-space is under-sampled with the slice's mask and
reconstructed. The reference (`reference`):
- "rss" (default): the RSS of the modified fully sampled coil images, centre-cropped, i.e. the
  fastMRI target of a patient who had the feature;
- "added": the stored target plus `value` inside the window (the paper's wording; it differs from
  "rss" where the image's phase is not zero).
The score is the MSE inside the window; `normalize="value"` divides it by value^2 (the fraction of
the feature's energy lost, "information loss" of Figure 17). Heat maps are normalised per method to
[0, 1] (Figure 7). Many placements go through one batched reconstruction: the batch axis carries
placements (un-trained networks fit them as one batch).

Work is split into units (one image, method, window size and chunk of placements), each stored
atomically under `out/units/` with a key hashing what produced it, so a re-run skips done units.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import mrirobust
from mrirobust.atomic import atomic_path
from mrirobust.data.annotations import Box, read_annotations, select
from mrirobust.data.dataset import SliceDataset, first_samples
from mrirobust.data.sample import Sample, draw_mask
from mrirobust.errors import ConfigError, DataError
from mrirobust.evaluate import config_hash
from mrirobust.hashing import digest
from mrirobust.methods.base import build, checked_reconstruct, parse_spec
from mrirobust.metrics import MSE_NAME, SLICE_MAX, VOLUME_MAX, region_mse, score, ssim_name
from mrirobust.physics.combine import rss
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.fft import center_crop, fft2c, ifft2c
from mrirobust.physics.masks import MaskSpec, stack_masks
from mrirobust.report import feature_figures
from mrirobust.results import write_csv, write_parquet

REFERENCES = ("rss", "added")
NORMALIZE = ("none", "value")


def window_images(boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Indicator images (P, H, W) of boxes (P, 4) = (top, left, height, width) on an (H, W) grid."""
    rows = torch.arange(shape[0], device=boxes.device)
    cols = torch.arange(shape[1], device=boxes.device)
    top, left, height, width = boxes.unbind(-1)
    inside_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    return (inside_rows[:, :, None] & inside_cols[:, None, :]).float()


def insert_features(kspace: torch.Tensor, maps: torch.Tensor, boxes: torch.Tensor, value: float,
                    target_shape: tuple[int, int]) -> torch.Tensor:
    """Fully sampled k-space (P, C, H, W) of one slice (C, H, W) with feature p of `value` in box p.

    Boxes (P, 4) are in the target frame; they are shifted by the centre-crop offsets onto the grid.
    """
    height, width = kspace.shape[-2:]
    offset = torch.tensor([(height - target_shape[0]) // 2, (width - target_shape[1]) // 2, 0, 0],
                          device=boxes.device)
    feature = value * window_images(boxes + offset, (height, width)).to(kspace.dtype)
    return kspace + fft2c(maps * feature[:, None])


def reference_images(modified: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor, value: float,
                     reference: str) -> torch.Tensor:
    """The ground truth with the feature (P, h, w): see the module docstring."""
    if reference == "rss":
        return center_crop(rss(ifft2c(modified)), tuple(target.shape[-2:]))
    return target + value * window_images(boxes, tuple(target.shape[-2:]))


def heatmap_boxes(shape: tuple[int, int], window: int, stride: int) -> torch.Tensor:
    """Every placement (top, left, window, window) of the window on a grid with `stride` (P, 4)."""
    if window < 1 or window > min(shape):
        raise ConfigError("--window", f"{window} must be between 1 and the image size {shape[0]}x{shape[1]}")
    if stride < 1:
        raise ConfigError("--stride", f"{stride} must be >= 1")
    tops = torch.arange(0, shape[0] - window + 1, stride)
    lefts = torch.arange(0, shape[1] - window + 1, stride)
    grid = torch.cartesian_prod(tops, lefts)
    return torch.cat([grid, torch.full_like(grid, window)], dim=1)


def random_boxes(shape: tuple[int, int], window: int, count: int, seed: int) -> torch.Tensor:
    """`count` seeded uniform placements of the window inside the image (count, 4)."""
    heatmap_boxes(shape, window, 1)  # checks the window
    generator = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, shape[0] - window + 1, (count,), generator=generator)
    lefts = torch.randint(0, shape[1] - window + 1, (count,), generator=generator)
    return torch.stack([tops, lefts, torch.full_like(tops, window), torch.full_like(tops, window)], dim=1)


class _Image:
    """One fully sampled slice on the device: k-space, mask, target, ESPIRiT maps, feature value."""

    def __init__(self, sample: Sample, spec: MaskSpec, device: str | torch.device, maps_crop: float,
                 value: float | None) -> None:
        if sample.target is None:
            raise DataError(sample.meta.file, f"slice {sample.meta.slice} has no target to score against")
        if sample.mask is not None:
            raise DataError(sample.meta.file, "features need fully sampled k-space; this file is under-sampled")
        self.sample = sample
        self.kspace = sample.kspace.to(device)
        self.target = sample.target.to(device)
        mask, seed = draw_mask(sample, spec)
        self.mask = mask.to(device)
        self.mask_seed = Path(sample.meta.file).name if seed is not None else "from-file"
        self.maps = espirit_maps(self.kspace, crop=maps_crop)
        self.value = float(self.target.max()) if value is None else float(value)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.target.shape[-2:])

    def feature_mse(self, method: Any, boxes: torch.Tensor, reference: str) -> torch.Tensor:
        """MSE inside each box (P,) of the reconstruction of the slice with the feature in that box."""
        boxes = boxes.to(self.kspace.device)
        modified = insert_features(self.kspace, self.maps, boxes, self.value, self.shape)
        masks = stack_masks([self.mask] * len(boxes))
        with torch.no_grad():
            prepare = getattr(method, "precompute", None)  # l1: maps of the slice without a feature, once
            meta = {key: value.expand(len(boxes), *value.shape[1:]) for key, value in
                    (prepare(self.kspace[None] * self.mask, self.mask) if prepare else {}).items()}
            image = checked_reconstruct(method, modified * masks, masks, target_shape=self.shape, **meta)
        truth = reference_images(modified, self.target, boxes, self.value, reference)
        return region_mse(truth, center_crop(image, self.shape), boxes)


class _Units:
    """Results stored one file per unit under out/units, keyed by a hash of what produced them."""

    def __init__(self, out: Path, common: dict[str, Any]) -> None:
        self.out, self.common = out, common
        self.computed = 0

    def get(self, name: str, identity: dict[str, Any], compute: Callable[[], Any]) -> Any:
        path = self.out / "units" / f"{name}-{digest({**identity, **self.common})}.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
        result = compute()
        with atomic_path(path) as tmp:
            torch.save(result, tmp)
        self.computed += 1
        return result


def _methods(specs: Sequence[str | dict]) -> list[tuple[str, Any]]:
    """Built methods with unique labels (a repeated name gets its config hash: Figure 16's variants)."""
    if not specs:
        raise ConfigError("--methods", "give at least one method")
    methods = [build(parse_spec(s) if isinstance(s, str) else s) for s in specs]
    names = [m.name for m in methods]
    labels = [n if names.count(n) == 1 else f"{n}[{config_hash(m)[:6]}]" for n, m in zip(names, methods)]
    if len(set(labels)) < len(labels):
        raise ConfigError("--methods", f"a method is listed twice with the same settings: {', '.join(labels)}")
    return list(zip(labels, methods))


def _check(reference: str, normalize: str, batch_size: int) -> None:
    if reference not in REFERENCES:
        raise ConfigError("--reference", f"unknown {reference!r}; choose from {', '.join(REFERENCES)}")
    if normalize not in NORMALIZE:
        raise ConfigError("--normalize", f"unknown {normalize!r}; choose from {', '.join(NORMALIZE)}")
    if batch_size < 1:
        raise ConfigError("--batch-size", f"{batch_size} must be >= 1")


def _feature_rows(images: list[_Image], methods: list[tuple[str, Any]], boxes_of: Callable[[_Image, int], torch.Tensor],
                  sizes: Sequence[int], units: _Units, *, reference: str, normalize: str, batch_size: int,
                  kind: str, progress: bool) -> list[dict]:
    """Rows (one per image, method, window size and placement) of the feature MSE; units resumable."""
    plan = [(i, image, size, boxes_of(image, size)) for i, image in enumerate(images) for size in sizes]
    total = sum(len(methods) * -(-len(boxes) // batch_size) for *_, boxes in plan)
    rows = []
    with tqdm(total=total, desc=f"features {kind}", unit="unit", disable=not progress) as bar:
        for i, image, size, boxes in plan:
            meta = image.sample.meta
            for label, method in methods:
                bar.set_postfix_str(f"{label} image {i} k={size}")
                for start in range(0, len(boxes), batch_size):
                    chunk = boxes[start:start + batch_size]
                    identity = {"kind": kind, "file": meta.file, "slice": meta.slice, "method": config_hash(method),
                                "boxes": chunk.tolist(), "value": image.value}
                    mse = units.get(f"{kind}-{label}-image{i}-k{size}-{start}", identity,
                                    lambda: image.feature_mse(method, chunk, reference).cpu())
                    scale = image.value**2 if normalize == "value" else 1.0
                    for (top, left, _, _), value in zip(chunk.tolist(), mse.tolist()):
                        rows.append({"file": meta.file, "slice": meta.slice, "image": i, "method": label,
                                     "method_hash": config_hash(method), "window": size, "top": top, "left": left,
                                     "value": image.value, "mse": value, "loss": value / scale,
                                     "mask_seed": image.mask_seed, **units.common})
                    bar.update()
    return rows


def _prepare(data, methods, images, spec_args, device, maps_crop, value, reference, normalize, batch_size, out):
    _check(reference, normalize, batch_size)
    built = _methods(methods)
    spec = MaskSpec(*spec_args)
    loaded = [_Image(s, spec, device, maps_crop, value) for s in first_samples(data, images)]
    common = {"mask": spec.describe(), "reference": reference, "normalize": normalize, "maps_crop": maps_crop,
              "mrirobust_version": mrirobust.__version__}
    return built, loaded, _Units(Path(out), common)


def _finish(rows: list[dict], out: Path, name: str, figures: list[Path], units: _Units, seconds: float,
            reconstructions: int) -> Path:
    csv_path = write_csv(rows, out / f"{name}.csv")
    parquet = write_parquet(rows, out / f"{name}.parquet")
    print(f"{reconstructions} feature reconstructions ({units.computed} units computed, the rest resumed) "
          f"in {seconds:.1f} s")
    print("wrote " + ", ".join(str(p) for p in [csv_path, parquet, *figures]))
    return csv_path


def run_heatmap(
    data: str | Path | Sequence[Sample],
    methods: Sequence[str | dict],
    *,
    stride: int = 4,
    window: int = 3,
    images: int = 1,
    out: str | Path,
    mask_type: str = "random",
    acceleration: int = 4,
    center_fraction: float = 0.08,
    value: float | None = None,
    reference: str = "rss",
    normalize: str = "none",
    maps_crop: float = 0.0,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    progress: bool = True,
) -> Path:
    """`mrirobust features heatmap`: the window at every `stride`-th position of the first `images`
    slices, for every method; writes out/heatmap.csv (+ .parquet) and Figure 7 (or 16) per image.

    Returns the CSV's path. A re-run with the same settings resumes from out/units/.
    """
    out = Path(out)
    built, loaded, units = _prepare(data, methods, images, (mask_type, (center_fraction,), (acceleration,)),
                                    device, maps_crop, value, reference, normalize, batch_size, out)
    began = time.perf_counter()
    rows = _feature_rows(loaded, built, lambda image, size: heatmap_boxes(image.shape, size, stride), [window],
                         units, reference=reference, normalize=normalize, batch_size=batch_size, kind="heatmap",
                         progress=progress)
    seconds = time.perf_counter() - began
    figures = [feature_figures.heatmap_figure(rows, image.target.cpu(), i, out / f"figure7-image{i}.png",
                                              window=window, stride=stride)
               for i, image in enumerate(loaded)]
    return _finish(rows, out, "heatmap", figures, units, seconds, len(rows))


def run_feature_sizes(
    data: str | Path | Sequence[Sample],
    methods: Sequence[str | dict],
    *,
    windows: Sequence[int] = (2, 3, 4, 5),
    placements: int = 100,
    images: int = 200,
    out: str | Path,
    seed: int = 0,
    mask_type: str = "random",
    acceleration: int = 4,
    center_fraction: float = 0.08,
    value: float | None = None,
    reference: str = "rss",
    normalize: str = "value",
    maps_crop: float = 0.0,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    progress: bool = True,
) -> Path:
    """`mrirobust features sizes` (appendix C.2): `placements` seeded random positions per image and
    window size; writes out/feature_sizes.csv (+ .parquet) and Figure 17 (mean loss per method)."""
    out = Path(out)
    if placements < 1:
        raise ConfigError("--placements", f"{placements} must be >= 1")
    built, loaded, units = _prepare(data, methods, images, (mask_type, (center_fraction,), (acceleration,)),
                                    device, maps_crop, value, reference, normalize, batch_size, out)
    began = time.perf_counter()
    indices = {id(image): i for i, image in enumerate(loaded)}
    rows = _feature_rows(
        loaded, built, lambda image, size: random_boxes(image.shape, size, placements, seed + 1000 * indices[id(image)] + size),
        list(windows), units, reference=reference, normalize=normalize, batch_size=batch_size, kind="sizes",
        progress=progress)
    seconds = time.perf_counter() - began
    figures = [feature_figures.sizes_figure(rows, out / "figure17.png")]
    return _finish(rows, out, "feature_sizes", figures, units, seconds, len(rows))


def _annotated_samples(data: str | Path, boxes: list[Box]) -> tuple[dict[tuple[str, int], Sample], list[str]]:
    """The slices the boxes name, and one message per box whose file or slice is not in the data."""
    dataset = SliceDataset(data)
    where = {(Path(info.path).stem, s): i for i, (info, s) in enumerate(dataset.index)}
    files = {stem for stem, _ in where}
    found, problems = {}, []
    for box in boxes:
        key = (box.file, box.slice)
        if key in where:
            found.setdefault(key, None)
        elif box.file not in files:
            problems.append(f"{box.file}: file not in the data")
        else:
            problems.append(f"{box.file} slice {box.slice}: slice not in the data")
    return {key: dataset[where[key]] for key in found}, problems


def run_annotated(
    data: str | Path,
    annotations_csv: str | Path,
    methods: Sequence[str | dict],
    *,
    labels: Sequence[str] | None = None,
    min_size: int = 1,
    max_size: int | None = None,
    out: str | Path,
    mask_type: str = "random",
    acceleration: int = 4,
    center_fraction: float = 0.08,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    progress: bool = True,
) -> Path:
    """`mrirobust features annotated`: MSE inside each annotated box (filtered by `labels`, a
    case-insensitive substring match, and side length) and the slice's SSIM, for every method;
    writes out/annotated.csv (+ .parquet), Figure 8 (box MSE vs SSIM with a fit) and Figure 18.

    Boxes naming files or slices not in the data are counted and listed; boxes leaving the image
    are clipped to it (and dropped, with a message, when nothing is left).
    """
    out = Path(out)
    if batch_size < 1:
        raise ConfigError("--batch-size", f"{batch_size} must be >= 1")
    annotations = read_annotations(annotations_csv)
    boxes = select(annotations.boxes, labels=labels, min_size=min_size, max_size=max_size)
    if not boxes:
        raise DataError(annotations_csv, f"no box left after filtering ({len(annotations.boxes)} boxes; "
                                         f"labels={list(labels or [])}, sizes {min_size}..{max_size})")
    samples, problems = _annotated_samples(data, boxes)
    built = _methods(methods)
    spec = MaskSpec(mask_type, (center_fraction,), (acceleration,))
    units = _Units(out, {"mask": spec.describe(), "mrirobust_version": mrirobust.__version__})
    keys = list(samples)
    rows, examples = [], {}
    began = time.perf_counter()
    bar = tqdm(total=len(built) * -(-len(keys) // batch_size), desc="features annotated", unit="unit",
               disable=not progress)
    for start in range(0, len(keys), batch_size):
        group = [samples[k] for k in keys[start:start + batch_size]]
        if len({(tuple(s.kspace.shape), tuple(s.target.shape)) for s in group}) > 1:
            group_batches = [[s] for s in group]
        else:
            group_batches = [group]
        for batch in group_batches:
            rows += _annotated_batch(batch, boxes, built, spec, device, units, problems, examples, bar)
    bar.close()
    if problems:
        print(f"{len(problems)} annotated box(es) skipped:\n  " + "\n  ".join(problems))
    if not rows:
        raise DataError(annotations_csv, "no annotated box matched a slice of the data")
    figures = [feature_figures.box_error_figure(rows, out / "figure8.png")]
    if examples:
        figures.append(feature_figures.crops_figure(examples, out / "figure18.png"))
    csv_path = _finish(rows, out, "annotated", figures, units, time.perf_counter() - began,
                       len(keys) * len(built))
    print(f"{len({(r['file'], r['slice'], r['box']) for r in rows})} boxes on {len(keys)} slices scored; "
          f"{len(problems)} skipped; {annotations.study_level} study-level rows without a box")
    return csv_path


def _annotated_batch(batch: list[Sample], boxes: list[Box], methods: list[tuple[str, Any]], spec: MaskSpec,
                     device, units: _Units, problems: list[str], examples: dict, bar) -> list[dict]:
    shape = tuple(batch[0].target.shape[-2:])
    drawn = [draw_mask(s, spec) for s in batch]
    masks = stack_masks([m for m, _ in drawn]).to(device)
    kspace = torch.stack([s.kspace for s in batch]).to(device)
    targets = torch.stack([s.target for s in batch]).to(device)
    volume_max = all(s.meta.max_value is not None for s in batch)
    variant = VOLUME_MAX if volume_max else SLICE_MAX
    max_values = torch.tensor([s.meta.max_value or 0.0 for s in batch], device=device)
    placed = []  # (index in batch, box number, Box, (top, left, height, width))
    for i, sample in enumerate(batch):
        mine = [b for b in boxes if (b.file, b.slice) == (Path(sample.meta.file).stem, sample.meta.slice)]
        for number, box in enumerate(mine):
            top, left, height, width = box.pixels(shape[0])
            bottom, right = min(top + height, shape[0]), min(left + width, shape[1])
            top, left = max(top, 0), max(left, 0)
            if bottom <= top or right <= left:
                problems.append(f"{box.file} slice {box.slice} box {number} ({box.label}): outside the "
                                f"{shape[0]}x{shape[1]} image")
                continue
            placed.append((i, number, box, (top, left, bottom - top, right - left)))
    rows = []
    for label, method in methods:
        identity = {"kind": "annotated", "slices": [(s.meta.file, s.meta.slice) for s in batch],
                    "method": config_hash(method)}

        def compute() -> dict:
            with torch.no_grad():
                image = checked_reconstruct(method, kspace * masks, masks, target_shape=shape)
            return {"image": center_crop(image, shape).cpu()}

        image = units.get(f"annotated-{label}-{Path(batch[0].meta.file).stem}-{batch[0].meta.slice}", identity,
                          compute)["image"].to(device)
        scores = score(targets, image, max_values, ssim_variant=variant)
        ssim_key = ssim_name(variant)
        for i, number, box, pixels in placed:
            error = float(region_mse(targets[i], image[i], pixels))
            sample = batch[i]
            rows.append({"file": sample.meta.file, "slice": sample.meta.slice, "box": number, "label": box.label,
                         "top": pixels[0], "left": pixels[1], "height": pixels[2], "width": pixels[3],
                         "method": label, "method_hash": config_hash(method), "box_mse": error,
                         "ssim_variant": variant, ssim_key: float(scores[ssim_key][i]),
                         "ssim": float(scores[ssim_key][i]), "mse": float(scores[MSE_NAME][i]), **units.common})
            key = (sample.meta.file, sample.meta.slice, number)
            if len(examples) < 3 or key in examples:
                examples.setdefault(key, {"target": targets[i].cpu(), "box": pixels})[label] = image[i].cpu()
        bar.update()
    return rows
