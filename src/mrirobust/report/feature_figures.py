"""Figures of the small-feature experiments (paper Figures 7, 8, 16, 17, 18) from result rows.

Rows are dicts as `experiments.features` writes them: heat-map/size rows carry `image`, `method`,
`window`, `top`, `left`, `loss`; annotated rows carry `method`, `box_mse`, `ssim`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.patches import Rectangle

from mrirobust.metrics import linear_fit
from mrirobust.report.figures import plt, save_figure
from mrirobust.report.registry import KindReport, Table, register
from mrirobust.report.tables import format_table, means, ok_rows

CAPTIONS = {
    "figure7": "Figure 7: the ground truth and, per method, a heat map of the MSE inside a k x k feature (filled with "
               "the image's maximum) placed at each grid position, normalised to [0, 1] per method; each cell is "
               "centred on its window's centre. (Figure 16 when the methods are ConvDecoder optimiser variants.)",
    "figure17": "Figure 17: mean information loss of an inserted feature per method and feature size (k x k window "
                "at random placements); error bars: standard error of the mean over placements and images.",
    "figure8": "Figure 8: MSE inside each annotated pathology box vs the SSIM of its slice; faint points: every box, "
               "large points: each method's mean; dashed: linear fit over the method means with its 95% band "
               "(three methods or more).",
    "figure18": "Figure 18: crops around annotated boxes (outlined in yellow): the ground truth and every method's "
                "reconstruction on the ground truth's grey scale, one row per box.",
}


def heatmap(rows: Sequence[dict], image: int, method: str) -> tuple[np.ndarray, list[int], list[int]]:
    """The loss at each grid position normalised to [0, 1] (tops x lefts), and the tops and lefts."""
    chosen = [r for r in rows if r["image"] == image and r["method"] == method]
    tops = sorted({r["top"] for r in chosen})
    lefts = sorted({r["left"] for r in chosen})
    grid = np.full((len(tops), len(lefts)), np.nan)
    for r in chosen:
        grid[tops.index(r["top"]), lefts.index(r["left"])] = r["loss"]
    low, high = np.nanmin(grid), np.nanmax(grid)
    return ((grid - low) / (high - low) if high > low else np.zeros_like(grid)), tops, lefts


def heatmap_figure(rows: Sequence[dict], target: torch.Tensor, image: int, path: str | Path, *,
                   window: int, stride: int) -> Path:
    """Ground truth and one normalised heat map per method on the image's pixel grid (Figure 7):
    each cell is centred on its window's centre."""
    methods = list(dict.fromkeys(r["method"] for r in rows if r["image"] == image))
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(2.8 * (len(methods) + 1), 3), squeeze=False)
    axes[0, 0].imshow(target.float().numpy(), cmap="gray")
    axes[0, 0].set_title("ground truth")
    h, w = target.shape[-2:]
    centre = (window - 1) / 2
    for ax, method in zip(axes[0, 1:], methods):
        grid, tops, lefts = heatmap(rows, image, method)
        extent = (lefts[0] + centre - stride / 2, lefts[-1] + centre + stride / 2,
                  tops[-1] + centre + stride / 2, tops[0] + centre - stride / 2)
        shown = ax.imshow(grid, cmap="jet", vmin=0, vmax=1, extent=extent)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(method)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if methods:
        fig.colorbar(shown, ax=list(axes[0, 1:]), shrink=0.8)
    fig.suptitle(f"{window}x{window} feature, stride {stride}: window MSE, normalised per method")
    return save_figure(fig, path)


def sizes_figure(rows: Sequence[dict], path: str | Path) -> Path:
    """Mean loss (and its standard error) per method and window size (Figure 17)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    sizes = sorted({r["window"] for r in rows})
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(sizes) * max(1, len(methods)) / 2, 3.2))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        stats = []
        for size in sizes:
            values = np.array([r["loss"] for r in rows if r["method"] == method and r["window"] == size])
            stats.append((values.mean(), values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else 0.0))
        mean, sem = np.array(stats).T
        ax.bar(np.arange(len(sizes)) + (j - (len(methods) - 1) / 2) * width, mean, width, yerr=sem, label=method)
    ax.set_xticks(np.arange(len(sizes)), [f"{k}x{k}" for k in sizes])
    ax.set_xlabel("feature size")
    ax.set_ylabel("mean information loss")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def box_error_figure(rows: Sequence[dict], path: str | Path) -> Path:
    """Mean box MSE vs mean SSIM per method, every box faint, with a linear fit over methods (Figure 8).

    The fit needs three methods or more (n - 2 degrees of freedom); with fewer it is left out.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    means = []
    for method in methods:
        chosen = [r for r in rows if r["method"] == method]
        x, y = np.array([r["ssim"] for r in chosen]), np.array([r["box_mse"] for r in chosen])
        points = ax.scatter(x, y, s=8, alpha=0.3)
        ax.scatter(x.mean(), y.mean(), s=50, color=points.get_facecolor()[0][:3], edgecolor="k", label=method)
        means.append((x.mean(), y.mean()))
    if len(means) >= 3 and len({m[0] for m in means}) > 1:
        fit = linear_fit(*zip(*means))
        grid = np.linspace(min(m[0] for m in means), max(m[0] for m in means), 50)
        line, low, high = fit.band(grid)
        ax.plot(grid, line, "k--", linewidth=1, label=f"fit (R$^2$={fit.r_squared:.2f})")
        ax.fill_between(grid, low, high, color="k", alpha=0.1)
    ax.set_xlabel("SSIM of the slice")
    ax.set_ylabel("MSE inside the annotated box")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def crops_figure(examples: Mapping[tuple, Mapping], path: str | Path, *, margin: int = 16) -> Path:
    """For each example box: the ground-truth crop and every method's, the box outlined (Figure 18)."""
    keys = list(examples)
    methods = [m for m in examples[keys[0]] if m not in ("target", "box")]
    fig, axes = plt.subplots(len(keys), len(methods) + 1, figsize=(2.2 * (len(methods) + 1), 2.2 * len(keys)),
                             squeeze=False)
    for row, key in enumerate(keys):
        entry = examples[key]
        top, left, height, width = entry["box"]
        h, w = entry["target"].shape[-2:]
        r0, r1 = max(0, top - margin), min(h, top + height + margin)
        c0, c1 = max(0, left - margin), min(w, left + width + margin)
        vmax = float(entry["target"].max())
        for col, name in enumerate(["target", *methods]):
            ax = axes[row, col]
            if name in entry:
                ax.imshow(entry[name][r0:r1, c0:c1].float().numpy(), cmap="gray", vmin=0, vmax=vmax)
                ax.add_patch(Rectangle((left - c0 - 0.5, top - r0 - 0.5), width, height, fill=False,
                                       edgecolor="yellow", linewidth=1))
            ax.set_title("ground truth" if name == "target" else name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        file, slice_number = str(key).split("|")[:2] if isinstance(key, str) else key[:2]
        axes[row, 0].set_ylabel(f"{Path(file).stem} s{slice_number}", fontsize=7)
    return save_figure(fig, path)


def _heatmap_figures(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any], folder: Path,
                     prefix: str) -> list[Path]:
    settings = artefacts["settings"]
    return [heatmap_figure(rows, target, int(i), folder / f"{prefix}figure7-image{i}.png", window=settings["window"],
                           stride=settings["stride"]) for i, target in sorted(artefacts["targets"].items())]


def _sizes_figures(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any], folder: Path,
                   prefix: str) -> list[Path]:
    return [sizes_figure(rows, folder / f"{prefix}figure17.png")]


def _annotated_figures(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any], folder: Path,
                       prefix: str) -> list[Path]:
    drawn = [box_error_figure(rows, folder / f"{prefix}figure8.png")]
    if artefacts.get("crops"):
        drawn.append(crops_figure(artefacts["crops"], folder / f"{prefix}figure18.png"))
    return drawn


def _placed_tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    return [("Mean feature loss per method and window", *means(ok_rows(rows), ["method", "window"], ["loss", "mse"]))]


def _annotated_tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    return [("Mean per method over boxes", *means(ok_rows(rows), ["method"], ["box_mse", "ssim"]))]


def _text(tables: Any) -> Any:
    """The command line's summary: the tables as text, and the boxes that were skipped."""

    def text(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any]) -> str:
        skipped = artefacts.get("skipped") or []
        note = (f"\n{len(skipped)} annotated box(es) skipped:\n  " + "\n  ".join(skipped)) if skipped else ""
        return "\n".join(f"{title}\n{format_table(header, body)}" for title, header, body in tables(rows)) + note

    return text


register(["heatmap"], KindReport(_heatmap_figures, _placed_tables, _text(_placed_tables), CAPTIONS))
register(["feature_sizes"], KindReport(_sizes_figures, _placed_tables, _text(_placed_tables), CAPTIONS))
register(["annotated"], KindReport(_annotated_figures, _annotated_tables, _text(_annotated_tables), CAPTIONS))
