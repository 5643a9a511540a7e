"""Training of trainable methods (U-net, VarNet, plug-ins that declare `trainable`).

`train(spec, ...)` builds the method from its spec under the run's seed, trains its module and
writes checkpoints; the trained method is then built from the weights (`build({**spec,
"checkpoint": result.best})`), so no built method is ever changed. A trainable method keeps its
weights in `model` (a torch Module) and has `reconstruct_with(module, kspace, mask, **meta)`, its
pipeline around any module of that architecture (`unet.TrainedNetwork`). Masks are drawn per sample with fastMRI semantics and seeded
per (seed, epoch, slice); the loss compares the centre-cropped output with the target (L1, as
fastMRI trains its U-net, or 1 - SSIM with the volume maximum as data range, as it trains
VarNet); validation SSIM (fastMRI's volume-max variant) after every epoch; a checkpoint after
every epoch (atomic), from which an interrupted run resumes; `torchrun` data parallel (DDP).

Robustness training (both off by default, and then not part of a run's identity, so runs and
caches from before they existed stay valid): `jitter` adds Gaussian noise to the measurements of
every training sample (Krainovic, Soltanolkotabi, Heckel, NeurIPS 2023), drawn afresh per
(seed, epoch, slice); `adversarial` trains on y + z with z a few PGD steps towards the largest
training loss within ||z|| <= eps ||y|| on the measured locations (the l2-ball primitives of
`physics.l2ball`, which the attacks use too).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mrirobust import schema
from mrirobust.atomic import atomic_path
from mrirobust.data.augment import transformed
from mrirobust.data.dataset import collate_samples, same_shape_batches, slice_shapes
from mrirobust.data.sample import Sample, draw_mask
from mrirobust.errors import ConfigError, MriRobustError
from mrirobust.evaluate import evaluate
from mrirobust.hashing import digest
from mrirobust.methods.base import MethodInfo, build, describe
from mrirobust.methods.settings import at_least, checked_settings, one_of
from mrirobust.methods.unet import check_state_dict, load_checkpoint
from mrirobust.metrics import ssim
from mrirobust.physics.fft import center_crop
from mrirobust.physics.l2ball import adversarial_perturbation, measurement_noise
from mrirobust.physics.masks import MASK_KINDS, MaskSpec

LOSSES = ("l1", "ssim")
OPTIMIZERS = ("adam", "rmsprop")
CHECKPOINT = "last.ckpt"
LOG_EVERY = 20  # steps between loss read-outs (progress bar, NaN check)
BEST = "best.ckpt"
FALLBACK_DEFAULTS = {"lr": 1e-3, "optimizer": "adam", "loss": "l1"}  # for methods that declare none
# Settings a resumed run may change: they do not change what is computed.
RESUMABLE_CHANGES = ("epochs", "device", "progress", "num_workers")
# Cards below this size get gradient checkpointing of VarNet cascades by default (fastMRI users
# hit out-of-memory with the reference VarNet on 11 GB cards).
SMALL_GPU_BYTES = 16 * 2**30
# The robustness settings at their "off" values: left out of a run's identity while off.
ROBUSTNESS_OFF = {"jitter": 0.0, "adversarial": 0.0}
# Every optional setting at its "off" value (added after runs existed): left out while off.
OPTIONAL_OFF = {**ROBUSTNESS_OFF, "augment": "none"}
# "flips": up-down and/or left-right mirroring; "dihedral": also transposed (square targets).
AUGMENTS = ("none", "flips", "dihedral")


@dataclass
class TrainConfig:
    """Settings of one training run; None means the method's own default (`train_defaults`).

    Checked on construction (types and ranges; errors name the field), before any compute.
    """

    epochs: int = 10
    batch_size: int = 1
    lr: float | None = None
    optimizer: str | None = None
    loss: str | None = None
    lr_step: int | None = None  # StepLR period in epochs (fastMRI: 40); None: constant
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    acceleration: int = 4
    center_fraction: float = 0.08
    mask_type: str = "random"
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # mixed precision: bfloat16 autocast on CPU, float16 + grad scaling on CUDA
    num_workers: int = 0
    max_train_slices: int | None = None
    max_val_slices: int | None = None
    progress: bool = True
    # sigma: complex Gaussian noise z on each training sample's measured k-space y, scaled so that
    # E||z||^2 = (sigma ||y||)^2 per sample (`physics.l2ball.measurement_noise`); fresh every step
    jitter: float = 0.0
    # eps: per batch, `adversarial_steps` projected normalised-gradient ascent steps (one radius
    # long, from z = 0) on the training loss over ||z|| <= eps ||y|| per sample on the measured
    # locations; the step then trains on y + z
    adversarial: float = 0.0
    adversarial_steps: int = 3
    # AUGMENTS: mirror every training slice up-down and left-right (each with probability 1/2) and,
    # "dihedral", transpose it (1/2), drawn per (seed, epoch, slice) (`data.augment.transformed`):
    # more variety from a small training set, and no preferred orientation of edges
    augment: str = "none"

    def __post_init__(self) -> None:
        checked_settings(TrainConfig, asdict(self))

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        """Ranges (called by `checked_settings`)."""
        at_least(settings, 1, "epochs", "batch_size", "lr_step", "acceleration", "max_train_slices",
                 "max_val_slices", "adversarial_steps")
        at_least(settings, 0, "weight_decay", "num_workers")
        for name in ROBUSTNESS_OFF:
            if not (math.isfinite(settings[name]) and settings[name] >= 0):
                raise ConfigError(name, f"{settings[name]!r} must be a finite number >= 0 (relative to ||y||)")
        for name in ("lr", "lr_gamma"):
            if settings[name] is not None and not settings[name] > 0:
                raise ConfigError(name, f"{settings[name]!r} must be > 0")
        if not 0 < settings["center_fraction"] < 1:
            raise ConfigError("center_fraction", f"{settings['center_fraction']!r} must be in (0, 1)")
        one_of(settings, "mask_type", MASK_KINDS)
        one_of(settings, "augment", AUGMENTS)
        for name, choices in (("loss", LOSSES), ("optimizer", OPTIMIZERS)):
            if settings[name] is not None:
                one_of(settings, name, choices)

    def resolved(self, method: MethodInfo | Any) -> TrainConfig:
        """This config with the method's `train_defaults` (a MethodInfo's or a method's) filled in."""
        defaults = {**FALLBACK_DEFAULTS, **(getattr(method, "train_defaults", {}) or {})}
        values = asdict(self)
        return TrainConfig(**{**values, **{k: defaults[k] for k in FALLBACK_DEFAULTS if values[k] is None}})

    def identity(self) -> dict[str, Any]:
        """The settings that define the run, without the robustness settings while they are off
        (what checkpoints and cache keys compare: those of runs without them stay valid)."""
        return run_identity(asdict(self))

    @property
    def mask_spec(self) -> MaskSpec:
        return MaskSpec(self.mask_type, (self.center_fraction,), (self.acceleration,))


def run_identity(values: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig values (also a checkpoint's, which may predate the optional settings) with
    jitter, adversarial (and its steps) and augment left out while they are off."""
    values = {**OPTIONAL_OFF, **values}
    off = [k for k, v in OPTIONAL_OFF.items() if values[k] == v]
    off += ["adversarial_steps"] if "adversarial" in off else []
    return {k: v for k, v in values.items() if k not in off}


@dataclass
class TrainResult:
    """Per-epoch history and where the checkpoints are."""

    history: list[dict[str, float]] = field(default_factory=list)
    last: Path | None = None
    best: Path | None = None


class _MaskedSlices(Dataset):
    """Samples (transformed per `config.augment`) with a training mask (and jitter noise, if any)
    seeded by (seed, epoch, index): reproducible, new each epoch."""

    def __init__(self, samples: Any, indices: Sequence[int], config: TrainConfig) -> None:
        self.samples, self.indices, self.config = samples, list(indices), config
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        seed = (self.config.seed, self.epoch, self.indices[i])
        sample = self.samples[self.indices[i]]
        if self.config.augment != "none":
            coins = torch.rand(3, generator=_generator("augment", seed)) < 0.5
            sample = transformed(sample, [d for d, coin in zip((-2, -1), coins) if coin],
                                 transpose=bool(coins[2]) and self.config.augment == "dihedral")
        sample = _masked(sample, self.config.mask_spec, seed=seed)
        if not self.config.jitter:
            return sample
        noise = measurement_noise(sample.kspace[None], sample.mask, self.config.jitter, _generator("jitter", seed))[0]
        return Sample(kspace=sample.kspace + noise, meta=sample.meta, target=sample.target, mask=sample.mask)


def _generator(purpose: str, seed: tuple[int, int, int]) -> torch.Generator:
    return torch.Generator().manual_seed(int(digest([purpose, *seed], 15), 16))


def _masked(sample: Sample, spec: MaskSpec, seed: Any = None) -> Sample:
    """The sample under-sampled by a drawn mask (per-file seed unless `seed` is given)."""
    mask, _ = draw_mask(sample, spec, seed=seed)
    return Sample(kspace=sample.kspace * mask, meta=sample.meta, target=sample.target, mask=mask)


def _batch_loss(method: Any, modules: tuple[torch.nn.Module, torch.nn.Module], batch: Mapping[str, Any],
                loss_fn: Callable[..., torch.Tensor], config: TrainConfig, device: torch.device) -> torch.Tensor:
    """The training loss of one batch through `modules[0]` (the trained module or its DDP wrapper),
    on y + z with z from `adversarial_perturbation` when `config.adversarial` is on; the attack's
    passes take input gradients only, through the bare module `modules[1]` (no DDP sync)."""
    target, kspace, mask = batch["target"].to(device), batch["kspace"].to(device), batch["mask"].to(device)
    shape, max_values = tuple(target.shape[-2:]), _max_values(batch["meta"], target)

    def loss_at(module: torch.nn.Module, kspace: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
                            enabled=config.amp):
            image = method.reconstruct_with(module, kspace, mask, target_shape=shape)
        return loss_fn(center_crop(image, shape).float(), target, max_values)

    if config.adversarial:
        kspace = kspace + adversarial_perturbation(lambda k: loss_at(modules[1], k), kspace, mask,
                                                   config.adversarial, config.adversarial_steps)
    return loss_at(modules[0], kspace)


def _model(method: Any) -> torch.nn.Module:
    model = getattr(method, "model", None)
    if not isinstance(model, torch.nn.Module) or not callable(getattr(method, "reconstruct_with", None)):
        raise ConfigError("method", f"{method.name!r} declares `trainable` but has no `model` Module and "
                                    "`reconstruct_with(model, ...)` (see workflows.train)")
    return model


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "l1":
        return lambda image, target, max_value: (image - target).abs().mean()
    return lambda image, target, max_value: 1 - ssim(target, image, max_value).mean()


def _max_values(meta: Sequence[Any], target: torch.Tensor) -> torch.Tensor:
    """SSIM data range per sample: the volume max from the file, else the slice max."""
    values = [m.max_value if m.max_value is not None else float(t.max()) for m, t in zip(meta, target)]
    return torch.tensor(values, dtype=target.dtype, device=target.device)


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank() if world > 1 else 0), world


def _save(path: Path, state: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def validate(method: Any, samples: Any, indices: Sequence[int], spec: MaskSpec, device: str,
             batch_size: int) -> float:
    """Mean SSIM (fastMRI's volume-max variant where the files carry it) on validation slices.

    Masks use fastMRI's per-file seeds, as in `mrirobust recon`.
    """

    model = _model(method)
    was_training = model.training
    model.eval()
    result = evaluate((samples[i] for i in indices), [method], spec, device=device, batch_size=batch_size,
                      progress=False)
    model.train(was_training)
    column = schema.ssim_column(result.rows)
    values = [row[column] for row in result.rows]
    return sum(values) / len(values)


def train(spec: str | Mapping[str, Any], train_samples: Any, val_samples: Any | None, out: str | Path,
          config: TrainConfig) -> TrainResult:
    """Build the method `spec` (a name or config, as `build` takes) under `config.seed` and train its
    module; resumes from `out/last.ckpt` when it exists. Build the trained method from
    `result.best` (or `result.last`).

    `train_samples`/`val_samples` are indexable collections of fully sampled Samples (e.g. a
    SliceDataset). On a NaN loss the run stops with an error and the last good checkpoint stays.
    """
    info = describe(spec)
    if not info.trainable:
        raise ConfigError("method", f"{info.name!r} is not trainable (family {info.family!r})")
    config = config.resolved(info)
    out = Path(out)
    rank, world = _distributed()
    device = torch.device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(config.seed)  # the initial weights: a run depends only on its settings
    method = build(spec)
    model = _model(method).to(device)
    _memory_aware_defaults(model, device, rank)
    torch.manual_seed(config.seed)

    train_idx = list(range(len(train_samples)))[: config.max_train_slices]
    val_idx = list(range(len(val_samples)))[: config.max_val_slices] if val_samples is not None else []
    if config.augment == "dihedral" and train_idx:
        shape = tuple(train_samples[train_idx[0]].require_target().shape)
        if shape[0] != shape[1]:
            raise ConfigError("augment", f"'dihedral' transposes the target, which must be square, not {shape}; "
                                         "use 'flips'")
    loader_data = _MaskedSlices(train_samples, train_idx, config)
    shapes = slice_shapes(train_samples, train_idx) if config.batch_size > 1 else []
    mixed = len(set(shapes)) > 1  # then batches of one shape each
    if mixed and world > 1:
        raise ConfigError("batch_size", f"slices of several shapes ({sorted(set(shapes))}) batch only on one "
                                        "process; train with batch_size 1 or one shape")
    sampler = torch.utils.data.DistributedSampler(loader_data, seed=config.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(config.seed)

    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model  # its forward syncs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
                 if config.optimizer == "adam"
                 else torch.optim.RMSprop(params, lr=config.lr, weight_decay=config.weight_decay))
    scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma)
                 if config.lr_step else None)
    use_scaler = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    loss_fn = _loss_fn(config.loss)

    result = TrainResult(last=out / CHECKPOINT, best=out / BEST)
    start_epoch, best_ssim = 0, -math.inf
    if result.last.exists():
        start_epoch, result.history = _resume(result.last, model, optimizer, scheduler, config)
        best_ssim = max((h["val_ssim"] for h in result.history if "val_ssim" in h), default=-math.inf)
        if rank == 0:
            print(f"resuming from {result.last} after epoch {start_epoch}")

    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        loader_data.epoch = epoch
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator.manual_seed(config.seed + epoch)
        if mixed:
            loader = DataLoader(loader_data, batch_sampler=same_shape_batches(shapes, config.batch_size, generator),
                                collate_fn=collate_samples, num_workers=config.num_workers)
        else:
            loader = DataLoader(loader_data, batch_size=config.batch_size, shuffle=sampler is None,
                                sampler=sampler, generator=generator, collate_fn=collate_samples,
                                num_workers=config.num_workers)
        model.train()
        total = torch.zeros((), device=device)  # summed on the device: no host sync per step
        steps = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress or rank)
        for step, batch in enumerate(bar):
            loss = _batch_loss(method, (trained, model), batch, loss_fn, config, device)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total, steps = total + loss.detach(), steps + 1
            if steps % LOG_EVERY == 0 or steps == len(loader):
                mean = float(total) / steps  # one sync every LOG_EVERY steps
                if not math.isfinite(mean):
                    raise MriRobustError(
                        f"training loss became {mean} at epoch {epoch + 1} (by step {step + 1}); stopped. "
                        + (f"The last good checkpoint is {result.last}." if result.last.exists()
                           else "No checkpoint was written yet.")
                    )
                bar.set_postfix(loss=f"{mean:.4f}")
        if scheduler is not None:
            scheduler.step()
        entry = {"epoch": epoch + 1, "train_loss": float(total) / max(steps, 1), "lr": optimizer.param_groups[0]["lr"]}
        if rank == 0:
            if val_idx:
                entry["val_ssim"] = validate(method, val_samples, val_idx, config.mask_spec, str(device),
                                             config.batch_size)
            entry["seconds"] = time.perf_counter() - began  # the epoch's wall clock, validation included
            result.history.append(entry)
            state = {"method": _config_without_checkpoint(info), "state_dict": model.state_dict(),
                     "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict() if scheduler else None,
                     "epoch": epoch, "history": result.history, "train_config": asdict(config)}
            if entry.get("val_ssim", -math.inf) > best_ssim or not val_idx:
                best_ssim = entry.get("val_ssim", best_ssim)
                _save(result.best, state)
            _save(result.last, state)
            if config.progress:
                print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()))
    return result


def training_seconds(checkpoint: str | Path) -> float | None:
    """Wall-clock seconds of the whole run that wrote `checkpoint` (a `best.ckpt` is read through
    its run's `last.ckpt`, which holds every epoch), or None where the run recorded no times
    (other trainers' checkpoints, runs of versions before the epoch time was kept)."""
    path = Path(checkpoint)
    if path.name == BEST and (path.parent / CHECKPOINT).exists():
        path = path.parent / CHECKPOINT
    state = load_checkpoint(path)
    history = state.get("history") if isinstance(state, Mapping) else None
    if not history or any("seconds" not in entry for entry in history):
        return None
    return float(sum(entry["seconds"] for entry in history))


def _config_without_checkpoint(info: MethodInfo) -> dict[str, Any]:
    config = info.config()
    config.pop("checkpoint", None)
    return config


def _resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, config: TrainConfig) -> tuple[int, list[dict[str, float]]]:
    """Restore weights, optimiser and scheduler from `path`; (first epoch to run, history so far).

    A file that is not this run's checkpoint (junk, another architecture or other settings) is
    a one-line ConfigError naming it, before any training step.
    """
    fresh = "delete it or choose another output folder to start afresh"
    state = load_checkpoint(path)
    keys = ("state_dict", "optimizer", "epoch", "history", "train_config")
    if not isinstance(state, Mapping) or not all(k in state for k in keys):
        raise ConfigError("checkpoint", f"{path}: not a checkpoint written by `mrirobust train`; {fresh}")
    check_state_dict(model, state["state_dict"], str(path))
    saved, current = run_identity(state["train_config"]), config.identity()
    changed = next((k for k in [*current, *saved] if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)),
                   None)
    if changed is not None:
        was, now = ({**OPTIONAL_OFF, **values}.get(changed) for values in (state["train_config"], asdict(config)))
        raise ConfigError(changed, f"{path} was trained with {changed}={was!r}, not {now!r}; {fresh}")
    try:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError, RuntimeError) as error:
        raise ConfigError("checkpoint", f"{path}: cannot restore the optimiser ({type(error).__name__}); "
                                        f"{fresh}") from None
    return state["epoch"] + 1, list(state["history"])


def _memory_aware_defaults(model: torch.nn.Module, device: torch.device, rank: int) -> None:
    """Turn on VarNet cascade checkpointing on small GPUs unless the user chose otherwise.

    Set on the module being trained (same outputs and gradients, less memory), not on a method.
    """
    if device.type != "cuda" or getattr(model, "checkpoint_cascades", True):
        return
    if torch.cuda.get_device_properties(device).total_memory < SMALL_GPU_BYTES:
        model.checkpoint_cascades = True
        if rank == 0:
            print("GPU has < 16 GB: checkpointing VarNet cascades to save memory")
