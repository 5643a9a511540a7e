"""Figures for papers: matplotlib, headless, written atomically as PNG with a PDF twin."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mrirobust.atomic import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write `fig` to `path` (format from the suffix) atomically and close it; a PNG also gets a
    vector PDF twin beside it, for papers."""
    path = Path(path)
    targets = [path] + ([path.with_suffix(".pdf")] if path.suffix == ".png" else [])
    for target in targets:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=target.suffix.lstrip(".") or "png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def example_grid(images: Mapping[str, torch.Tensor], path: str | Path, *, title: str = "") -> Path:
    """Target and each method's reconstruction (top) with the absolute error (bottom).

    `images` maps names to (H, W) magnitude images; the entry "target" is the reference. All
    panels share the target's grey scale so that contrast differences are visible.
    """
    target = images["target"].float().numpy()
    names = [n for n in images if n != "target"]
    vmax = float(target.max())
    fig, axes = plt.subplots(2, len(names) + 1, figsize=(2.6 * (len(names) + 1), 5.4), squeeze=False)
    axes[0, 0].imshow(target, cmap="gray", vmin=0, vmax=vmax)
    axes[0, 0].set_title("target")
    axes[1, 0].axis("off")
    for col, name in enumerate(names, start=1):
        image = images[name].float().numpy()
        axes[0, col].imshow(image, cmap="gray", vmin=0, vmax=vmax)
        axes[0, col].set_title(name)
        axes[1, col].imshow(abs(image - target), cmap="magma", vmin=0, vmax=0.25 * vmax)
        axes[1, col].set_title("|error| (x4)")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
