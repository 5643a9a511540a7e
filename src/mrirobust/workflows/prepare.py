"""Prepared models: a method trained or tuned on a domain, cached by what determines it.

Trained and tuned models are cached under `cache/` by a hash of (method config, training data
identity, settings), so every experiment and study that needs the same model reuses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from mrirobust.data.domains import Domain, data_identity
from mrirobust.errors import ConfigError
from mrirobust.hashing import digest
from mrirobust.methods.base import describe, wrapped_setting
from mrirobust.physics.masks import MaskSpec
from mrirobust.workflows.train import TrainConfig, train
from mrirobust.workflows.tune import save_config, tune

# Tuning grids on the source per method family where a model has no `tune` of its own (`tune: {}`
# turns tuning off). l1's lambda as in the paper; at demo scale the un-trained decoders keep their
# preset settings (a grid over iterations would cost minutes per point on a CPU).
TUNE_GRIDS: dict[str, dict[str, list[Any]]] = {"l1": {"lam": [0.001, 0.002, 0.004]}}
# Settings of a training run that do not change the trained weights.
_RUN_ONLY = ("progress", "num_workers", "device")


@dataclass(frozen=True)
class Model:
    """A method config in a group, with its tuning grid (None: none) and its own training settings."""

    label: str
    group: str
    config: dict[str, Any]
    grid: dict[str, list[Any]] | None = None
    train: dict[str, Any] | None = None  # this model's TrainConfig fields over the experiment's
    checkpoints: dict[str, str] | None = None  # {domain label: weights trained there}: used, not trained

    def weights_on(self, domain: str) -> str | None:
        """The weights given for training on `domain` (its label), if any."""
        return (self.checkpoints or {}).get(domain)


@dataclass(frozen=True)
class Prepared:
    """A model ready to evaluate: its final config (checkpoint or tuned settings) and identity."""

    model: Model
    config: dict[str, Any]
    identity: str  # stable across cache locations: names evaluation units


def parse_groups(groups: Mapping[str, Sequence[str | Mapping[str, Any]]]) -> list[Model]:
    """Groups of method specs (a name or a config; a config's `label`, `tune` (grid), `train`
    (TrainConfig fields for this model only) and `checkpoints` (weights per domain) keys are taken out)."""
    models = []
    for group, specs in groups.items():
        for spec in specs:
            config = {"name": spec} if isinstance(spec, str) else dict(spec)
            label = config.pop("label", None)
            grid = config.pop("tune", None)
            train_settings = config.pop("train", None)
            checkpoints = config.pop("checkpoints", None)
            method = describe(config)
            if grid is None and not method.trainable:
                grid = TUNE_GRIDS.get(method.family)
            label = label or "-".join([config["name"], *(f"{k}{v}" for k, v in config.items() if k != "name")])
            models.append(Model(label, group, config, dict(grid) if grid else None,
                                dict(train_settings) if train_settings else None,
                                dict(checkpoints) if checkpoints else None))
    labels = [m.label for m in models]
    twice = sorted({n for n in labels if labels.count(n) > 1})
    if twice or not models:
        raise ConfigError("groups", f"give at least one model, with unique labels; repeated: {', '.join(twice)}")
    return models


def needs_preparing(config: Mapping[str, Any]) -> bool:
    """A trainable method without a checkpoint, or a wrapper (ttt) of one: `prepare` trains it."""
    wraps = wrapped_setting(config)
    if wraps is not None and isinstance(config.get(wraps), Mapping):
        return describe(config[wraps]).needs_checkpoint
    return describe(config).needs_checkpoint


@dataclass(frozen=True)
class PrepareSettings:
    """How models are prepared on a domain: where they are cached and with what."""

    cache: Path
    train: TrainConfig
    mask: MaskSpec
    tune_images: int = 4
    device: str = "cpu"
    progress: bool = False


def prepare(model: Model, source: Domain, settings: PrepareSettings) -> Prepared:
    """Train (trainable without a checkpoint) or tune (with a grid) `model` on the source, or reuse
    the cached result (a training already cached under another label included); a model given its
    checkpoint is used as is, and one given weights for this domain (`checkpoints`) uses those; a
    wrapper (ttt) gets its wrapped method prepared."""
    wraps = wrapped_setting(model.config)
    if wraps is not None and needs_preparing(model.config):  # a wrapper (ttt): prepare the wrapped method
        inner = prepare(Model(f"{model.label}.{wraps}", model.group, dict(model.config[wraps]), None, model.train),
                        source, settings)
        return Prepared(model, {**model.config, wraps: inner.config}, digest([inner.identity, model.config]))
    given = model.weights_on(source.label)
    if given is not None:
        config = {**model.config, "checkpoint": given}
        return Prepared(model, config, digest(describe(config).config()))
    train_config = replace(settings.train, **(model.train or {}))
    torch.manual_seed(train_config.seed)  # as before: what follows in this process sees the same RNG state
    method = describe(model.config)
    if method.needs_checkpoint:
        train_set = source.dataset("train", required=True)
        val_set = source.dataset("val", required=True)
        fixed = {k: v for k, v in train_config.identity().items() if k not in _RUN_ONLY}
        key = digest({"config": method.config(), "train": data_identity(train_set), "val": data_identity(val_set),
                      "settings": fixed})
        done = sorted(settings.cache.glob(f"*-{key}/done.yaml"))  # the same training under another label
        folder = done[0].parent if done else settings.cache / f"{model.label}-{key}"
        if not (folder / "done.yaml").exists():  # train() seeds the initial weights: they depend only on the key
            train(model.config, train_set, val_set, folder,
                  replace(train_config, device=settings.device, progress=settings.progress))
            save_config(method.config(), folder / "done.yaml", note=f"trained on {source.root}")
        return Prepared(model, {**model.config, "checkpoint": str(folder / "best.ckpt")}, key)
    if model.grid:
        val_set = source.dataset("val", required=True)
        count = min(settings.tune_images, len(val_set))
        key = digest({"config": method.config(), "grid": model.grid, "val": data_identity(val_set),
                      "images": count, "mask": settings.mask.describe()})
        path = settings.cache / f"{model.label}-{key}" / "tuned.yaml"
        if not path.exists():
            result = tune(model.config, model.grid, [val_set[i] for i in range(count)], settings.mask,
                          device=settings.device, progress=False)
            save_config(result.best, path, note=f"tuned on {count} slices of {source.root} "
                                                f"({settings.mask.describe()}), mean SSIM {result.best_ssim:.4f}")
        return Prepared(model, yaml.safe_load(path.read_text()), key)
    return Prepared(model, dict(model.config), digest(method.config()))
