"""Distribution shifts (paper section 5, appendix B): dataset, anatomy and adversarially-filtered.

Every method enters as a group of variants (U-net widths, VarNet cascade counts, l1 transforms,
un-trained decoders) so that a scatter plot of out- against in-distribution SSIM has many points
and a linear fit across them says whether all methods lose a similar amount.

- dataset: models trained/tuned on the source, evaluated on the source and the target domain.
- anatomy: the same in both directions (source -> target and target -> source).
- hard: the source's `hard_slices` (5 middle slices per volume) reconstructed by a filter method
  that is not evaluated; the `hard_fraction` with the lowest SSIM is the hard set (saved as CSV),
  the rest the normal set.

Trained and tuned models are cached under `cache/` by a hash of (method config, training data
identity, settings), so other experiments reuse them. Evaluation is split into units (one model
on one domain) stored atomically under `out/units/`; a re-run skips finished units.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

import mrirobust
from mrirobust.atomic import atomic_path
from mrirobust.data.dataset import SliceDataset
from mrirobust.data.mridata import MridataSliceDataset
from mrirobust.data.sample import Sample, draw_mask
from mrirobust.errors import ConfigError, DataError, MriRobustError, ShapeError
from mrirobust.evaluate import evaluate
from mrirobust.hashing import digest
from mrirobust.methods.base import build, describe
from mrirobust.methods.train import TrainConfig, train
from mrirobust.methods.tune import save_config, tune
from mrirobust.metrics import bootstrap_ci, linear_fit
from mrirobust.physics.masks import MaskSpec
from mrirobust.results import write_csv, write_parquet

KINDS = ("dataset", "anatomy", "hard")
FORMATS = ("fastmri", "mridata")
# Demo-scale groups: small variants that train in minutes on a CPU. Paper scale: the Table 1/2
# presets (`unet-ref`, `unet2`.., `varnet-ref`, `varnet2`..) and the full-size decoders.
DEMO_GROUPS: dict[str, list[str | dict[str, Any]]] = {
    "U-net": [{"name": "unet-small", "chans": c} for c in (4, 8, 16)],
    "VarNet": [{"name": "varnet-small", "num_cascades": n} for n in (1, 2, 4)],
    "l1": ["l1", "l1-fourier", "l1-dct"],
    "un-trained": ["convdecoder-small", "deepdecoder-small"],
}
# Tuning grids on the source per method family (a model's own `tune` key replaces them; `tune: {}`
# turns tuning off). l1's lambda as in the paper; at demo scale the un-trained decoders keep their
# preset settings (a grid over iterations would cost minutes per point on a CPU).
TUNE_GRIDS: dict[str, dict[str, list[Any]]] = {"l1": {"lam": [0.001, 0.002, 0.004]}}
# CG-SENSE filters the hard set: not one of the evaluated methods (the paper used i-RIM, a fifth
# method), deterministic, cheap, and limited by the same under-sampling as every method.
DEFAULT_FILTER = "sense"


# --- domains ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Domain:
    """A data folder and filters. `train`/`val`/`test` sub-folders are its splits where present."""

    root: Path
    acquisitions: tuple[str, ...] | None = None
    anatomy: str | None = None
    format: str = "fastmri"  # "mridata": Stanford 3-D FSE ISMRMRD files (evaluation only)
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.format not in FORMATS:
            raise ConfigError("domain format", f"unknown {self.format!r}; choose from {', '.join(FORMATS)}")
        if isinstance(self.acquisitions, str):
            object.__setattr__(self, "acquisitions", (self.acquisitions,))

    @classmethod
    def parse(cls, text: str | Path | Domain) -> Domain:
        """`PATH`, `PATH@ACQ1,ACQ2` (acquisition filter) or `mridata:PATH` (Stanford knees)."""
        if isinstance(text, Domain):
            return text
        text = str(text)
        fmt = "fastmri"
        if text.startswith("mridata:"):
            fmt, text = "mridata", text[len("mridata:"):]
        path, _, acquisitions = text.partition("@")
        return cls(Path(path), tuple(acquisitions.split(",")) if acquisitions else None, format=fmt)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = self.root.name if self.root.name not in ("train", "val", "test") else self.root.parent.name
        return base + (f"[{'+'.join(self.acquisitions)}]" if self.acquisitions else "")

    def split(self, split: str, *, required: bool = False) -> Path:
        """`root/split`, or fastMRI's own `root/multicoil_split`; the root itself if neither exists."""
        for path in (self.root / split, self.root / f"multicoil_{split}"):
            if path.is_dir():
                return path
        if required:
            raise ConfigError("source", f"{self.root} has no {split}/ folder; training and tuning need "
                                        "train/ and val/ splits of the source domain")
        return self.root

    def dataset(self, split: str, *, slices: str | None = None, required: bool = False) -> Any:
        """The split's slices (a DataError names the folder when a filter leaves none)."""
        root = self.split(split, required=required)
        if self.format == "mridata":
            return MridataSliceDataset(root, slices=slices)
        return SliceDataset(root, acquisitions=self.acquisitions, anatomy=self.anatomy, slices=slices)


def _files(dataset: Any) -> list[Path]:
    return [Path(v.path) for v in dataset.volumes] if hasattr(dataset, "volumes") else list(dataset.files)


def data_identity(dataset: Any) -> list[tuple[str, int, int]]:
    """(file name, size, mtime) of the files behind a dataset: changes when the data change."""
    return [(p.name, (s := p.stat()).st_size, s.st_mtime_ns) for p in _files(dataset)]


def _shapes(dataset: Any) -> set[tuple[int, int, int]]:
    """(coils, H, W) of the k-space in a dataset (from the index; mridata: its first slice)."""
    if hasattr(dataset, "volumes"):
        return {(v.num_coils, *v.shape) for v in dataset.volumes}
    return {tuple(dataset[0].kspace.shape)}


# --- models: groups, training and tuning with a cache ----------------------------------------------

@dataclass(frozen=True)
class Model:
    """One point of a scatter plot: a method config in a group, with its tuning grid (None: none)."""

    label: str
    group: str
    config: dict[str, Any]
    grid: dict[str, list[Any]] | None = None
    train: dict[str, Any] | None = None  # this model's TrainConfig fields over the experiment's


def parse_groups(groups: Mapping[str, Sequence[str | Mapping[str, Any]]]) -> list[Model]:
    """Groups of method specs (a name or a config; a config's `label`, `tune` (grid) and `train`
    (TrainConfig fields for this model only) keys are taken out)."""
    models = []
    for group, specs in groups.items():
        for spec in specs:
            config = {"name": spec} if isinstance(spec, str) else dict(spec)
            label = config.pop("label", None)
            grid = config.pop("tune", None)
            train = config.pop("train", None)
            method = build(config)
            if grid is None and not method.trainable:
                grid = TUNE_GRIDS.get(method.family)
            label = label or "-".join([config["name"], *(f"{k}{v}" for k, v in config.items() if k != "name")])
            models.append(Model(label, group, config, dict(grid) if grid else None, dict(train) if train else None))
    labels = [m.label for m in models]
    twice = sorted({n for n in labels if labels.count(n) > 1})
    if twice or not models:
        raise ConfigError("groups", f"give at least one model, with unique labels; repeated: {', '.join(twice)}")
    return models


@dataclass
class Prepared:
    """A model ready to evaluate: its final config (checkpoint or tuned settings) and identity."""

    model: Model
    config: dict[str, Any]
    identity: str  # stable across cache locations: names evaluation units


def prepare(model: Model, source: Domain, *, cache: Path, train_config: TrainConfig, spec: MaskSpec,
            tune_images: int, device: str, progress: bool) -> Prepared:
    """Train (trainable) or tune (with a grid) `model` on the source, or reuse the cached result."""
    train_config = replace(train_config, **(model.train or {}))
    torch.manual_seed(train_config.seed)  # as before: what follows in this process sees the same RNG state
    method = describe(model.config)
    if method.trainable:
        train_set = source.dataset("train", required=True)
        val_set = source.dataset("val", required=True)
        settings = {k: v for k, v in asdict(train_config).items() if k not in ("progress", "num_workers", "device")}
        key = digest({"config": method.config(), "train": data_identity(train_set), "val": data_identity(val_set),
                       "settings": settings})
        folder = cache / f"{model.label}-{key}"
        if not (folder / "done.yaml").exists():  # train() seeds the initial weights: they depend only on the key
            train(model.config, train_set, val_set, folder, replace(train_config, device=device, progress=progress))
            save_config(method.config(), folder / "done.yaml", note=f"trained on {source.root}")
        return Prepared(model, {**model.config, "checkpoint": str(folder / "best.ckpt")}, key)
    if model.grid:
        val_set = source.dataset("val", required=True)
        count = min(tune_images, len(val_set))
        key = digest({"config": method.config(), "grid": model.grid, "val": data_identity(val_set),
                       "images": count, "mask": spec.describe()})
        path = cache / f"{model.label}-{key}" / "tuned.yaml"
        if not path.exists():
            result = tune(model.config, model.grid, [val_set[i] for i in range(count)], spec, device=device,
                          progress=False)
            save_config(result.best, path, note=f"tuned on {count} slices of {source.root} ({spec.describe()}), "
                                                f"mean SSIM {result.best_ssim:.4f}")
        return Prepared(model, yaml.safe_load(path.read_text()), key)
    return Prepared(model, dict(model.config), digest(method.config()))


# --- checks before any model runs ------------------------------------------------------------------

def check_compatible(source: Any, evaluated: Mapping[str, Any], models: Sequence[Model], spec: MaskSpec,
                     train_batch: int) -> dict[str, int | None]:
    """Raise a clear error for data that the models cannot take; return each domain's readout fix.

    U-net, VarNet, l1 and the decoders take any coil count and image size (U-net works on the RSS
    image, VarNet estimates one map per coil). What does break: mixed shapes in a training batch,
    a mask centre narrower than the ESPIRiT kernel (l1, SENSE), a target larger than its k-space.
    VarNet's `resolution_fix` is set to the training readout length for a domain with another one.
    """
    train_shapes = _shapes(source) if source is not None else set()
    if train_batch > 1 and len(train_shapes) > 1:
        raise ConfigError("train batch_size", f"the source training set mixes k-space shapes "
                                              f"{sorted(train_shapes)} (coils, H, W); train with batch_size 1")
    readouts = {h for _, h, _ in train_shapes}
    fixes = {}
    for label, dataset in evaluated.items():
        for info in getattr(dataset, "volumes", []):
            if info.target_shape is None:
                raise DataError(info.path, "has no reconstruction_rss target to score against")
            if info.target_shape[0] > info.shape[0] or info.target_shape[1] > info.shape[1]:
                raise DataError(info.path, f"target {info.target_shape} is larger than the k-space {info.shape}")
        shapes = _shapes(dataset)
        for model in models:
            espirit = describe(model.config).settings.get("espirit")  # CG-SENSE's, l1's EspiritSettings
            kernel = getattr(espirit, "kernel_size", None)
            for _, _, width in shapes:
                centre = min(round(width * f) for f in spec.center_fractions)
                if kernel is not None and centre < kernel:
                    raise ConfigError("center_fraction", f"{model.label} on {label}: the mask keeps {centre} centre "
                                                         f"columns of {width}; ESPIRiT needs at least kernel_size="
                                                         f"{kernel}; raise the centre fraction")
        domain_readouts = {h for _, h, _ in shapes}
        fixes[label] = (next(iter(readouts)) if len(readouts) == 1 and domain_readouts != readouts else None)
    return fixes


# --- evaluation units ------------------------------------------------------------------------------

@dataclass
class _Run:
    """Shared settings of one experiment's evaluation units."""

    out: Path
    spec: MaskSpec
    device: str
    batch_size: int
    images: int | None

    def unit(self, prepared: Prepared, domain: str, dataset: Any, *, trained_on: str,
             resolution_fix: int | None = None) -> dict:
        """Rows of `prepared` on the first `images` slices of `dataset` (stored, or computed and stored)."""
        config = dict(prepared.config)
        if resolution_fix is not None and "resolution_fix" in build(config).config():
            config.setdefault("resolution_fix", resolution_fix)  # VarNet on another readout length
        count = len(dataset) if self.images is None else min(self.images, len(dataset))
        key = digest({"model": prepared.identity, "config": {k: v for k, v in config.items() if k != "checkpoint"},
                       "data": data_identity(dataset), "slices": [_slice_id(dataset.index[i]) for i in range(count)],
                       "mask": self.spec.describe(), "version": mrirobust.__version__})
        path = self.out / "units" / f"{prepared.model.label}-on-{_safe(domain)}-{key}.pt"
        if path.exists():
            return self._labelled(torch.load(path, weights_only=True), prepared, domain, trained_on)
        method = build(config)
        if getattr(method, "model", None) is not None:
            method.model.eval()
        try:
            result = evaluate((dataset[i] for i in range(count)), [method], self.spec, device=self.device,
                              batch_size=self.batch_size, progress=False)
        except MriRobustError as error:
            raise type(error)(f"{prepared.model.label} (trained on {trained_on}) on {domain}: {error}") from error
        extra = {"resolution_fix": config.get("resolution_fix")}
        unit = {"rows": [{**extra, **row} for row in result.rows], "example": dict(result.example)}
        with atomic_path(path) as tmp:
            torch.save(unit, tmp)
        return self._labelled(unit, prepared, domain, trained_on)

    @staticmethod
    def _labelled(unit: dict, prepared: Prepared, domain: str, trained_on: str) -> dict:
        """A unit's rows with the experiment's labels (not stored: a model that is neither trained nor
        tuned shares its units between directions)."""
        extra = {"model": prepared.model.label, "group": prepared.model.group, "trained_on": trained_on,
                 "evaluated_on": domain}
        return {**unit, "rows": [{**extra, **row} for row in unit["rows"]]}


def _slice_id(entry: tuple) -> list:
    """(file name, slice) of a dataset index entry: SliceDataset (info, s), mridata (path, pos, x)."""
    return [Path(getattr(entry[0], "path", entry[0])).name, int(entry[-1])]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def ssim_key(rows: Sequence[Mapping[str, Any]]) -> str:
    """The SSIM column of evaluation rows (its name records the variant)."""
    return next(k for k in rows[0] if k.startswith("ssim["))


# --- the hard set and its frequency analysis -------------------------------------------------------

def hard_set(rows: Sequence[Mapping[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """The `fraction` of rows with the lowest SSIM (at least one), as (file, slice, ssim) records."""
    if not 0 < fraction < 1:
        raise ConfigError("hard_fraction", f"{fraction} must lie strictly between 0 and 1")
    key = ssim_key(rows)
    count = max(1, math.floor(fraction * len(rows) + 1e-9))
    chosen = sorted(rows, key=lambda r: (r[key], r["file"], r["slice"]))[:count]
    return [{"file": Path(r["file"]).name, "slice": int(r["slice"]), "filter_ssim": r[key]} for r in chosen]


def write_hard_set(records: Sequence[Mapping[str, Any]], path: str | Path, *, filter_label: str) -> Path:
    """The hard-set index as CSV (file, slice, filter method, its SSIM): reusable and publishable."""
    return write_csv([{"file": r["file"], "slice": r["slice"], "filter": filter_label,
                       "filter_ssim": r["filter_ssim"]} for r in records], path)


def read_hard_set(path: str | Path) -> set[tuple[str, int]]:
    """(file name, slice) pairs of a saved hard-set index."""
    with open(path, newline="") as handle:
        return {(row["file"], int(row["slice"])) for row in csv.DictReader(handle)}


def column_energy(kspace: torch.Tensor) -> torch.Tensor:
    """Energy per phase-encode column of (..., C, H, W) k-space: sum over coils and readout."""
    return kspace.abs().square().sum(dim=(-3, -2))


def low_frequency_proportion(kspace: torch.Tensor, num_low: int) -> torch.Tensor:
    """Energy in the `num_low` fully sampled centre columns over the total energy (appendix B.3).

    The centre columns are placed as fastMRI's mask functions place them.
    """
    energy = column_energy(kspace)
    width = energy.shape[-1]
    start = (width - num_low + 1) // 2
    return energy[..., start:start + num_low].sum(-1) / energy.sum(-1)


def frequency_profile(kspace: torch.Tensor, points: int = 101) -> np.ndarray:
    """Column energy over total energy on a normalised frequency grid [-0.5, 0.5] (any width)."""
    energy = column_energy(kspace).double()
    energy = (energy / energy.sum(-1, keepdim=True)).cpu().numpy()
    width = energy.shape[-1]
    freqs = (np.arange(width) - width // 2) / width
    return np.interp(np.linspace(-0.5, 0.5, points), freqs, energy * width)  # density: width-independent


def frequency_rows(samples: Iterable[Sample], spec: MaskSpec, hard: set[tuple[str, int]],
                   filter_ssim: Mapping[tuple[str, int], float]
                   ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Per slice: low-frequency proportion, filter SSIM and hard/normal; each set's mean energy profile."""
    rows, profiles = [], {"hard": [], "normal": []}
    for sample in samples:
        _, num_low = spec.sample(sample.shape[-1], seed=draw_mask(sample, spec)[1])
        name = (Path(sample.meta.file).name, sample.meta.slice)
        role = "hard" if name in hard else "normal"
        rows.append({"file": name[0], "slice": name[1], "set": role, "filter_ssim": filter_ssim.get(name, math.nan),
                     "low_frequency_proportion": float(low_frequency_proportion(sample.kspace, num_low))})
        profiles[role].append(frequency_profile(sample.kspace))
    return rows, {k: np.mean(v, axis=0) for k, v in profiles.items() if v}


# --- summaries -------------------------------------------------------------------------------------

def model_table(rows: Sequence[Mapping[str, Any]], x_role: Mapping[str, Any], y_role: Mapping[str, Any],
                seed: int = 0) -> list[dict[str, Any]]:
    """Per model: mean SSIM and 95% CI on the rows matching `x_role` (x) and `y_role` (y), and x - y."""
    key = ssim_key(rows)
    table = []
    for label in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == label]
        pick = lambda role: [r[key] for r in mine if all(r[k] == v for k, v in role.items())]  # noqa: E731
        xs, ys = pick(x_role), pick(y_role)
        if not xs or not ys:
            continue
        x = _mean_ci(xs, seed)
        y = _mean_ci(ys, seed)
        table.append({"model": label, "group": mine[0]["group"], "x": x[0], "x_low": x[1], "x_high": x[2],
                      "y": y[0], "y_low": y[1], "y_high": y[2], "drop": x[0] - y[0],
                      "x_slices": len(xs), "y_slices": len(ys)})
    return table


def _mean_ci(values: Sequence[float], seed: int) -> tuple[float, float, float]:
    if len(values) < 2:
        return float(values[0]), float(values[0]), float(values[0])
    return bootstrap_ci(values, seed=seed)


def fit_summary(table: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The linear fit of y on x across models (None with fewer than 3 distinct points) and the
    mean drop x - y per group."""
    groups = {g: float(np.mean([t["drop"] for t in table if t["group"] == g]))
              for g in dict.fromkeys(t["group"] for t in table)}
    try:
        fit = linear_fit([t["x"] for t in table], [t["y"] for t in table])
    except ShapeError as error:
        return {"fit": None, "fit_note": str(error), "drop_per_group": groups}
    return {"fit": asdict(fit), "drop_per_group": groups}


def format_fit(name: str, summary: Mapping[str, Any]) -> str:
    fit = summary["fit"]
    line = (f"{name}: y = {fit['slope']:.3f} x + {fit['intercept']:.3f} (slope 95% CI "
            f"[{fit['slope_ci'][0]:.3f}, {fit['slope_ci'][1]:.3f}], R^2 {fit['r_squared']:.3f}, n {fit['n']})"
            if fit else f"{name}: no linear fit ({summary['fit_note']})")
    drops = ", ".join(f"{g} {d:+.4f}" for g, d in summary["drop_per_group"].items())
    return f"{line}\n  mean SSIM drop per group: {drops}"


# --- the experiment --------------------------------------------------------------------------------

def run_shift(
    kind: str,
    source: str | Path | Domain,
    target: str | Path | Domain | None = None,
    *,
    groups: Mapping[str, Sequence[str | Mapping[str, Any]]] | None = None,
    out: str | Path,
    cache: str | Path | None = None,
    train_config: TrainConfig | None = None,
    tune_images: int = 4,
    mask_type: str = "random",
    acceleration: int = 4,
    center_fraction: float = 0.08,
    images: int | None = None,
    eval_split: str = "test",
    filter_method: str | Mapping[str, Any] = DEFAULT_FILTER,
    hard_slices: str = "middle:5",
    hard_fraction: float = 0.1,
    device: str = "cpu",
    batch_size: int = 4,
    progress: bool = True,
) -> Path:
    """`mrirobust shift KIND`: train/tune the groups on the source, evaluate, write rows, fits, figures.

    Returns `out/shift.csv`. dataset/anatomy need `target`; `hard` uses the source only.
    """
    from mrirobust.report import shift_figures

    if kind not in KINDS:
        raise ConfigError("kind", f"unknown {kind!r}; choose from {', '.join(KINDS)}")
    if images is not None and (isinstance(images, bool) or images < 1):
        raise ConfigError("--images", f"{images!r} must be an integer >= 1")
    source = Domain.parse(source)
    if kind != "hard" and target is None:
        raise ConfigError("target", f"a {kind} shift needs a target domain")
    target = Domain.parse(target) if target is not None else None
    models = parse_groups(groups or DEMO_GROUPS)
    spec = MaskSpec(mask_type, (center_fraction,), (acceleration,))
    train_config = replace(train_config or TrainConfig(epochs=2, batch_size=1), mask_type=mask_type,
                           acceleration=acceleration, center_fraction=center_fraction)
    out = Path(out)
    cache = Path(cache) if cache is not None else out / "cache"
    run = _Run(out, spec, device, batch_size, images)

    # Directions (train domain, evaluation domains) and every dataset, opened before any model runs.
    directions = [(source, [source] if kind == "hard" else [source, target])]
    if kind == "anatomy":
        directions.append((target, [target, source]))
    slices = hard_slices if kind == "hard" else None
    if target is not None and kind != "hard" and target.label == source.label:
        raise ConfigError("target", f"source and target are both labelled {source.label!r}; name them apart")
    evaluated = {d.label: d.dataset(eval_split, slices=slices) for _, ds in directions for d in ds}
    filter_spec = {"name": filter_method} if isinstance(filter_method, str) else dict(filter_method)
    if kind == "hard" and filter_spec["name"] in {m.config["name"] for m in models}:
        raise ConfigError("filter_method", f"{filter_spec['name']!r} is one of the evaluated methods; the hard set "
                                           "must be chosen by a method that is not evaluated")
    needs_training = any(build(m.config).trainable or m.grid for m in models)
    fixes = {}
    for train_domain, _ in directions:
        train_set = train_domain.dataset("train", required=True) if needs_training else None
        check_models = models + ([Model("filter", "filter", filter_spec)] if kind == "hard" else [])
        fixes[train_domain.label] = check_compatible(train_set, evaluated, check_models, spec,
                                                     train_config.batch_size)

    rows: list[dict[str, Any]] = []
    examples: dict[str, dict[str, torch.Tensor]] = {}
    total = len(directions) * len(models) * (1 + len(directions[0][1])) + (kind == "hard")
    bar = tqdm(total=total, desc=f"{kind} shift", unit="unit", disable=not progress)
    hard: set[tuple[str, int]] = set()
    filtered: list[dict[str, Any]] = []
    if kind == "hard":
        filter_model = Prepared(Model("filter-" + filter_spec["name"], "filter", filter_spec), filter_spec,
                                digest(build(filter_spec).config()))
        bar.set_postfix_str(f"filter {filter_spec['name']}")
        filtered = run.unit(filter_model, source.label, evaluated[source.label], trained_on="-")["rows"]
        bar.update()
        records = hard_set(filtered, hard_fraction)
        write_hard_set(records, out / "hard_set.csv", filter_label=filter_model.model.label)
        hard = {(r["file"], r["slice"]) for r in records}
    for train_domain, eval_domains in directions:
        for model in models:
            bar.set_postfix_str(f"prepare {model.label} on {train_domain.label}")
            prepared = prepare(model, train_domain, cache=cache, train_config=train_config, spec=spec,
                               tune_images=tune_images, device=device, progress=False)
            bar.update()
            for domain in eval_domains:
                bar.set_postfix_str(f"{model.label} on {domain.label}")
                unit = run.unit(prepared, domain.label, evaluated[domain.label], trained_on=train_domain.label,
                                resolution_fix=fixes[train_domain.label][domain.label])
                for row in unit["rows"]:
                    role = ("in" if domain == train_domain else "out") if kind != "hard" else (
                        "hard" if (Path(row["file"]).name, row["slice"]) in hard else "normal")
                    rows.append({"shift": kind, "role": role, **row})
                examples.setdefault(f"{train_domain.label} -> {domain.label}", {"target": unit["example"]["target"]})
                examples[f"{train_domain.label} -> {domain.label}"][model.label] = next(
                    v for k, v in unit["example"].items() if k != "target")
                bar.update()
    bar.close()
    return _report(kind, rows, examples, directions, out, source=source, spec=spec, hard=hard,
                   filtered=filtered, evaluated=evaluated, images=images, figures=shift_figures)


def _report(kind: str, rows: list[dict[str, Any]], examples: dict, directions: list, out: Path, *,
            source: Domain, spec: MaskSpec, hard: set, filtered: list, evaluated: dict, images: int | None,
            figures: Any) -> Path:
    """Write rows, per-model tables, fits and figures; print the fits."""
    csv_path = write_csv(rows, out / "shift.csv")
    write_parquet(rows, out / "shift.parquet")
    panels = []  # (name, x label, y label, x role, y role)
    if kind == "dataset":
        (a, (_, b)), = directions
        panels.append(("figure2", f"SSIM on {a.label}", f"SSIM on {b.label}", {"role": "in"}, {"role": "out"}))
    elif kind == "anatomy":
        (a, _), (b, _) = directions
        for one, other, fig in ((a, b, "figure4"), (b, a, "figure4")):  # Figure 4: same test set
            panels.append((f"{fig}-test-{_safe(other.label)}", f"trained on {other.label}, SSIM on {other.label}",
                           f"trained on {one.label}, SSIM on {other.label}",
                           {"trained_on": other.label, "evaluated_on": other.label},
                           {"trained_on": one.label, "evaluated_on": other.label}))
        for one, other in ((a, b), (b, a)):  # Figure 13: same model, two test sets
            panels.append((f"figure13-train-{_safe(one.label)}", f"trained on {one.label}, SSIM on {one.label}",
                           f"trained on {one.label}, SSIM on {other.label}",
                           {"trained_on": one.label, "evaluated_on": one.label},
                           {"trained_on": one.label, "evaluated_on": other.label}))
    else:
        panels.append(("figure6", "SSIM on the normal set", "SSIM on the hard set", {"role": "normal"},
                       {"role": "hard"}))
    tables, fits, written = [], {}, [csv_path]
    for name, xlabel, ylabel, x_role, y_role in panels:
        table = model_table(rows, x_role, y_role)
        summary = fit_summary(table)
        fits[name] = {**summary, "x": xlabel, "y": ylabel}
        tables += [{"panel": name, **t} for t in table]
        print(format_fit(name, summary))
    written.append(write_csv(tables, out / "models.csv"))
    with atomic_path(out / "fits.json") as tmp:
        tmp.write_text(json.dumps(fits, indent=2, default=float))
    written.append(out / "fits.json")
    by_figure: dict[str, list] = {}
    for name, xlabel, ylabel, *_ in panels:
        by_figure.setdefault(name.split("-")[0], []).append(
            (xlabel, ylabel, [t for t in tables if t["panel"] == name], fits[name]["fit"]))
    for figure, figure_panels in by_figure.items():
        written.append(figures.scatter_figure(figure_panels, out / f"{figure}.png", title=_TITLES[figure]))
    written.append(figures.examples_figure(examples, out / "examples.png", title=f"{kind} shift, {spec.describe()}"))
    if kind == "hard":
        dataset = evaluated[source.label]
        count = len(dataset) if images is None else min(images, len(dataset))
        filter_ssim = {(Path(r["file"]).name, r["slice"]): r[ssim_key(filtered)] for r in filtered}
        freq_rows, profiles = frequency_rows((dataset[i] for i in range(count)), spec, hard, filter_ssim)
        written.append(write_csv(freq_rows, out / "frequency.csv"))
        written.append(figures.frequency_figure(freq_rows, profiles, out / "figure14.png",
                                                centre_fraction=spec.center_fractions[0]))
    print("wrote " + ", ".join(str(p) for p in written))
    return csv_path


_TITLES = {
    "figure2": "Dataset shift: out- vs in-distribution SSIM per model",
    "figure4": "Anatomy shift: each test set, trained on the other anatomy vs the same",
    "figure13": "Anatomy shift: each model on its training anatomy vs the other",
    "figure6": "Adversarially-filtered shift: hard vs normal set",
}
