"""Torch devices named by the user, checked to exist before anything runs on them."""

from __future__ import annotations

import torch

from mrirobust.errors import ConfigError

CHOICES = "auto, cpu, cuda or cuda:N"


def _cuda_missing() -> str:
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return "this torch is built without CUDA (a CPU-only install)"
    return "no CUDA GPU is visible (no driver, or CUDA_VISIBLE_DEVICES hides them)"


def resolve_device(text: str | torch.device, field: str = "device") -> torch.device:
    """The device `text` names ('auto': the first CUDA GPU when there is one, else the CPU).

    Raises ConfigError(field) for a name torch does not parse ('gpu7'), a backend this machine or
    this torch build lacks ('cuda' on a CPU-only torch) and an index past the last device ('cuda:7').
    """
    if isinstance(text, str) and text.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text.strip() if isinstance(text, str) else text)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(field, f"{text!r} is not a torch device; use {CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(field, f"{text!r}: {_cuda_missing()}; use --device cpu")
        count = torch.cuda.device_count()
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(field, f"{text!r}: Apple MPS is not available on this machine; use {CHOICES}")
        count = 1
    elif device.type == "xpu" and hasattr(torch, "xpu"):
        if not torch.xpu.is_available():
            raise ConfigError(field, f"{text!r}: no Intel XPU is available; use {CHOICES}")
        count = torch.xpu.device_count()
    else:
        raise ConfigError(field, f"{text!r}: {device.type} devices are not supported; use {CHOICES}")
    if device.index is not None and device.index >= count:
        raise ConfigError(field, f"{text!r}: only {count} {device.type} device(s) here "
                                 f"({device.type}:0 to {device.type}:{count - 1})")
    return device
