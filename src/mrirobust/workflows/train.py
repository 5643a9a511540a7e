"""Training of trainable methods (U-net, VarNet, plug-ins that declare `trainable`).

Any method whose `reconstruct` is differentiable and whose weights live in `method.model` (a
torch Module) can be trained here: masks are drawn per sample with fastMRI semantics and seeded
per (seed, epoch, slice); the loss compares the centre-cropped output with the target (L1, as
fastMRI trains its U-net, or 1 - SSIM with the volume maximum as data range, as it trains
VarNet); validation SSIM (fastMRI's volume-max variant) after every epoch; a checkpoint after
every epoch (atomic), from which an interrupted run resumes; `torchrun` data parallel (DDP).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mrirobust.atomic import atomic_path
from mrirobust.data.dataset import collate_samples
from mrirobust.data.sample import Sample, draw_mask
from mrirobust.evaluate import evaluate
from mrirobust.errors import ConfigError, MriRobustError
from mrirobust.metrics import ssim
from mrirobust.physics.fft import center_crop
from mrirobust.physics.masks import MaskSpec

LOSSES = ("l1", "ssim")
OPTIMIZERS = ("adam", "rmsprop")
CHECKPOINT = "last.ckpt"
LOG_EVERY = 20  # steps between loss read-outs (progress bar, NaN check)
BEST = "best.ckpt"
# Cards below this size get gradient checkpointing of VarNet cascades by default (fastMRI users
# hit out-of-memory with the reference VarNet on 11 GB cards).
SMALL_GPU_BYTES = 16 * 2**30


@dataclass
class TrainConfig:
    """Settings of one training run; None means the method's own default (`train_defaults`)."""

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

    def resolved(self, method: Any) -> "TrainConfig":
        """This config with the method's defaults filled in, checked."""
        defaults = dict(getattr(method, "train_defaults", {}) or {})
        values = asdict(self)
        for key in ("lr", "optimizer", "loss"):
            if values[key] is None:
                values[key] = defaults.get(key, {"lr": 1e-3, "optimizer": "adam", "loss": "l1"}[key])
        config = TrainConfig(**values)
        if config.loss not in LOSSES:
            raise ConfigError("loss", f"unknown {config.loss!r}; choose one of {', '.join(LOSSES)}")
        if config.optimizer not in OPTIMIZERS:
            raise ConfigError("optimizer", f"unknown {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if config.epochs < 1 or config.batch_size < 1:
            raise ConfigError("epochs/batch_size", "must be at least 1")
        return config

    @property
    def mask_spec(self) -> MaskSpec:
        return MaskSpec(self.mask_type, (self.center_fraction,), (self.acceleration,))


@dataclass
class TrainResult:
    """Per-epoch history and where the checkpoints are."""

    history: list[dict[str, float]] = field(default_factory=list)
    last: Path | None = None
    best: Path | None = None


class _MaskedSlices(Dataset):
    """Samples with a training mask seeded by (seed, epoch, index): reproducible, new each epoch."""

    def __init__(self, samples: Any, indices: Sequence[int], spec: MaskSpec, seed: int) -> None:
        self.samples, self.indices, self.spec, self.seed = samples, list(indices), spec, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        return _masked(self.samples[self.indices[i]], self.spec, seed=(self.seed, self.epoch, self.indices[i]))


def _masked(sample: Sample, spec: MaskSpec, seed: Any = None) -> Sample:
    """The sample under-sampled by a drawn mask (per-file seed unless `seed` is given)."""
    mask, _ = draw_mask(sample, spec, seed=seed)
    return Sample(kspace=sample.kspace * mask, meta=sample.meta, target=sample.target, mask=mask)


def _model(method: Any) -> torch.nn.Module:
    model = getattr(method, "model", None)
    if not isinstance(model, torch.nn.Module) or not getattr(method, "trainable", False):
        raise ConfigError("method", f"{getattr(method, 'name', method)!r} is not trainable (no `model` Module)")
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
    values = [value for row in result.rows for key, value in row.items() if key.startswith("ssim[")]
    return sum(values) / len(values)


def train(method: Any, train_samples: Any, val_samples: Any | None, out: str | Path,
          config: TrainConfig) -> TrainResult:
    """Train `method.model` in place; resumes from `out/last.ckpt` when it exists.

    `train_samples`/`val_samples` are indexable collections of fully sampled Samples (e.g. a
    SliceDataset). On a NaN loss the run stops with an error and the last good checkpoint stays.
    """
    config = config.resolved(method)
    out = Path(out)
    rank, world = _distributed()
    device = torch.device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    model = _model(method).to(device)
    _memory_aware_defaults(method, device, rank)
    torch.manual_seed(config.seed)

    train_idx = list(range(len(train_samples)))[: config.max_train_slices]
    val_idx = list(range(len(val_samples)))[: config.max_val_slices] if val_samples is not None else []
    loader_data = _MaskedSlices(train_samples, train_idx, config.mask_spec, config.seed)
    sampler = torch.utils.data.DistributedSampler(loader_data, seed=config.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(config.seed)

    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    method.model = trained  # reconstruct() calls self.model, so DDP's forward syncs gradients
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
        state = torch.load(result.last, map_location=device, weights_only=False)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, result.history = state["epoch"] + 1, state["history"]
        best_ssim = max((h["val_ssim"] for h in result.history if "val_ssim" in h), default=-math.inf)
        if rank == 0:
            print(f"resuming from {result.last} after epoch {state['epoch'] + 1}")

    try:
        for epoch in range(start_epoch, config.epochs):
            loader_data.epoch = epoch
            if sampler is not None:
                sampler.set_epoch(epoch)
            generator.manual_seed(config.seed + epoch)
            loader = DataLoader(loader_data, batch_size=config.batch_size, shuffle=sampler is None,
                                sampler=sampler, generator=generator, collate_fn=collate_samples,
                                num_workers=config.num_workers)
            model.train()
            total = torch.zeros((), device=device)  # summed on the device: no host sync per step
            steps = 0
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress or rank)
            for step, batch in enumerate(bar):
                target = batch["target"].to(device)
                with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
                                    enabled=config.amp):
                    image = method.reconstruct(batch["kspace"].to(device), batch["mask"].to(device),
                                               target_shape=tuple(target.shape[-2:]))
                loss = loss_fn(center_crop(image, tuple(target.shape[-2:])).float(), target,
                               _max_values(batch["meta"], target))
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
                result.history.append(entry)
                state = {"method": _config_without_checkpoint(method), "state_dict": model.state_dict(),
                         "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict() if scheduler else None,
                         "epoch": epoch, "history": result.history, "train_config": asdict(config)}
                if entry.get("val_ssim", -math.inf) > best_ssim or not val_idx:
                    best_ssim = entry.get("val_ssim", best_ssim)
                    _save(result.best, state)
                _save(result.last, state)
                if config.progress:
                    print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()))
    finally:
        method.model = model
    return result


def _config_without_checkpoint(method: Any) -> dict[str, Any]:
    config = dict(method.config()) if hasattr(method, "config") else {"name": getattr(method, "name", "")}
    config.pop("checkpoint", None)
    return config


def _memory_aware_defaults(method: Any, device: torch.device, rank: int) -> None:
    """Turn on VarNet cascade checkpointing on small GPUs unless the user chose otherwise."""
    if device.type != "cuda" or not hasattr(method, "checkpoint_cascades") or method.checkpoint_cascades:
        return
    if torch.cuda.get_device_properties(device).total_memory < SMALL_GPU_BYTES:
        method.checkpoint_cascades = True
        if rank == 0:
            print("GPU has < 16 GB: checkpointing VarNet cascades to save memory")
