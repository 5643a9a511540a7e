"""Reconstruct a set of slices with several methods and score them the fastMRI way.

Data flow: Samples (fully sampled, or already masked test slices) -> a mask drawn per file with
fastMRI's seeding -> batched `reconstruct` per method -> centre crop to the target -> per-slice
metrics rows that record what produced them -> per-method summaries with bootstrap CIs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import mrirobust
from mrirobust.data.sample import Sample, draw_mask
from mrirobust.hashing import digest
from mrirobust.methods.base import Reconstructor, checked_reconstruct
from mrirobust.metrics import SLICE_MAX, VOLUME_MAX, bootstrap_ci, score
from mrirobust.physics.fft import center_crop
from mrirobust.physics.masks import MaskSpec, stack_masks

METRICS = ("ssim", "psnr", "nmse", "mse")


def config_hash(method: Reconstructor) -> str:
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
class ReconResult:
    """Per-slice rows, and the reconstructions of the first slice for an example figure."""

    rows: list[dict] = field(default_factory=list)
    example: dict[str, torch.Tensor] = field(default_factory=dict)


def evaluate(
    samples: Iterable[Sample],
    methods: Sequence[Reconstructor],
    spec: MaskSpec,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    total: int | None = None,
    progress: bool = True,
) -> ReconResult:
    """Reconstruct every sample with every method and score it against its target."""
    result = ReconResult()
    hashes = {m.name: config_hash(m) for m in methods}
    bar = tqdm(total=total, desc="reconstruct", unit="slice", disable=not progress)
    with torch.no_grad():
        for batch in batches(samples, batch_size):
            _score_batch(batch, methods, spec, device, hashes, result)
            bar.update(len(batch))
    bar.close()
    return result


def _score_batch(batch: list[Sample], methods: Sequence[Reconstructor], spec: MaskSpec,
                 device: str | torch.device, hashes: dict[str, str], result: ReconResult) -> None:
    """Reconstruct one batch with every method and append its rows (and example) to `result`."""
    drawn = [draw_mask(s, spec) for s in batch]
    masks = stack_masks([m for m, _ in drawn]).to(device)
    kspace = torch.stack([s.kspace for s in batch]).to(device)
    masked = kspace * masks
    targets = torch.stack([s.require_target() for s in batch]).to(device)
    volume_max = all(s.meta.max_value is not None for s in batch)
    max_values = torch.tensor([s.meta.max_value or 0.0 for s in batch], device=device)
    for method in methods:
        image = checked_reconstruct(method, masked, masks, target_shape=tuple(targets.shape[-2:]))
        image = center_crop(image, tuple(targets.shape[-2:]))
        scores = score(targets, image, max_values, ssim_variant=VOLUME_MAX if volume_max else SLICE_MAX)
        if not result.example:
            result.example["target"] = targets[0].cpu()
        if method.name not in result.example:
            result.example[method.name] = image[0].detach().cpu()
        for i, sample in enumerate(batch):
            row = {
                "method": method.name,
                "config_hash": hashes[method.name],
                "file": sample.meta.file,
                "slice": sample.meta.slice,
                "acquisition": sample.meta.acquisition,
                "anatomy": sample.meta.anatomy,
                "mask": spec.describe() if drawn[i][1] is not None else "from-file",
                "mask_seed": "" if drawn[i][1] is None else Path(sample.meta.file).name,
                "mrirobust_version": mrirobust.__version__,
            }
            row.update({name: float(value[i]) for name, value in scores.items()})
            result.rows.append(row)


def summarise(rows: Sequence[dict], *, confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """Per method: mean and bootstrap CI of every metric column."""
    metric_keys = [k for k in rows[0] if k.split("[")[0] in METRICS] if rows else []
    summary = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        entry: dict = {"method": name, "slices": len(mine)}
        for key in metric_keys:
            mean, low, high = bootstrap_ci([r[key] for r in mine], confidence=confidence, seed=seed)
            entry[key] = (mean, low, high)
        summary.append(entry)
    return summary


def run_recon(
    data: str | Path,
    method_names: Sequence[str | dict],
    *,
    out: str | Path,
    mask_type: str = "random",
    acceleration: int = 4,
    center_fraction: float = 0.08,
    slices: str | None = None,
    device: str = "cpu",
    batch_size: int = 4,
    limit: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """`mrirobust recon`: score methods on a data folder; write CSV, summary and an example figure."""
    from mrirobust.data.dataset import SliceDataset
    from mrirobust.methods.base import build, parse_spec
    from mrirobust.report.figures import example_grid
    from mrirobust.results import format_summary, write_csv

    methods = [build(parse_spec(m) if isinstance(m, str) else m) for m in method_names]
    spec = MaskSpec(mask_type, (center_fraction,), (acceleration,))
    dataset = SliceDataset(data, slices=slices)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    samples = (dataset[i] for i in range(count))
    result = evaluate(samples, methods, spec, device=device, batch_size=batch_size, total=count,
                      progress=progress)
    out = Path(out)
    summary = summarise(result.rows)
    write_csv(result.rows, out / "slices.csv")
    write_csv([{"method": s["method"], "slices": s["slices"],
                **{f"{k}_{part}": v[j] for k, v in s.items() if isinstance(v, tuple)
                   for j, part in enumerate(("mean", "ci_low", "ci_high"))}} for s in summary],
              out / "summary.csv")
    example_grid(result.example, out / "example.png",
                 title=f"{Path(data).name}: {spec.describe()}")
    print(format_summary(summary))
    print(f"wrote {out / 'slices.csv'}, {out / 'summary.csv'} and {out / 'example.png'}")
    return result.rows
