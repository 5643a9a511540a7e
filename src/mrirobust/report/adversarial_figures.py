"""Figures of the adversarial experiment (paper Figures 3, 9, 10) from its result rows.

Rows are dicts as `robustness.adversarial` writes them: `attacked` (a method or "random"),
`evaluated`, `eps`, `status` and a loss column such as "ssim[volume-max]_loss" (clean - perturbed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.lines import Line2D

from mrirobust.metrics import bootstrap_ci
from mrirobust.report.figures import plt, save_figure

RANDOM = "random"  # the `attacked` label of the random-perturbation control
L1_BASES = {"l1": "wavelet", "l1-fourier": "Fourier", "l1-dct": "DCT"}


def loss_curve(rows: Sequence[dict], attacked: str, evaluated: str, loss_key: str,
               confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """eps, mean loss and its bootstrap CI (low, high) over images; the CI is the mean below 2 images."""
    chosen = [r for r in rows if r["attacked"] == attacked and r["evaluated"] == evaluated and r["status"] == "ok"]
    budgets = sorted({r["eps"] for r in chosen})
    stats = []
    for eps in budgets:
        values = [r[loss_key] for r in chosen if r["eps"] == eps]
        stats.append(bootstrap_ci(values, confidence=confidence) if len(values) > 1 else (values[0],) * 3)
    mean, low, high = (np.array(column) for column in zip(*stats)) if stats else (np.array([]),) * 3
    return np.array(budgets), mean, low, high


def _plot_curve(ax, rows, attacked, evaluated, loss_key, color, label=None, random=False) -> None:
    eps, mean, low, high = loss_curve(rows, attacked, evaluated, loss_key)
    if eps.size:
        ax.plot(eps, mean, "--" if random else "-", color=color, label=label, marker=None if random else "o",
                markersize=3, linewidth=1 if random else 1.5)
        ax.fill_between(eps, low, high, color=color, alpha=0.08 if random else 0.2, linewidth=0)


def _legend(ax, handles_from) -> None:
    """Method colours plus one entry for the dashed random-z curves."""
    handles, labels = handles_from.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1))
    labels.append("random z, same norm")
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))


def loss_figure(rows: Sequence[dict], path: str | Path, *, loss_key: str, columns: int = 4) -> Path:
    """Figure 3: one panel per attacked method, loss vs eps for every evaluated method with 95% CIs;
    the random perturbation of the same norm dashed."""
    attacked = [a for a in dict.fromkeys(r["attacked"] for r in rows) if a != RANDOM]
    evaluated = list(dict.fromkeys(r["evaluated"] for r in rows))
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(evaluated)}
    ncols = min(columns, len(attacked))
    nrows = -(-len(attacked) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.0 * nrows + 0.6), squeeze=False,
                             sharey=True, constrained_layout=True)
    reference = "||k-space||" if rows[0].get("norm") == "full" else "||y||"
    for ax, attacker in zip(axes.flat, attacked):
        for name in evaluated:
            _plot_curve(ax, rows, attacker, name, loss_key, colors[name], name)
            _plot_curve(ax, rows, RANDOM, name, loss_key, colors[name], random=True)
        ax.set_title(f"attack on {attacker}")
        ax.set_xlabel(f"eps = ||z|| / {reference}")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(attacked):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{loss_key.removesuffix('_loss')} loss\n(clean - perturbed)")
    _legend(axes[0, -1], axes.flat[0])
    fig.suptitle("performance loss under adversarial perturbations (mean over images, 95% bootstrap CI)")
    return save_figure(fig, path)


def basis_figure(rows: Sequence[dict], path: str | Path, *, loss_key: str) -> Path | None:
    """Figure 10: l1 with wavelet, Fourier and DCT bases, each under its own attack; None unless
    at least two of them were attacked."""
    present = [name for name in L1_BASES if any(r["attacked"] == name for r in rows)]
    if len(present) < 2:
        return None
    fig, ax = plt.subplots(figsize=(4.4, 3.4))
    for i, name in enumerate(present):
        color = plt.get_cmap("tab10")(i)
        _plot_curve(ax, rows, name, name, loss_key, color, f"{name} ({L1_BASES[name]})")
        _plot_curve(ax, rows, RANDOM, name, loss_key, color, random=True)
    ax.set_xlabel("eps")
    ax.set_ylabel(f"{loss_key.removesuffix('_loss')} loss (clean - perturbed)")
    ax.set_title("l1 sparsifying bases under their own attacks")
    ax.grid(alpha=0.3)
    _legend(ax, ax)
    return save_figure(fig, path)


def examples_figure(examples: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path, *, eps: float) -> Path:
    """Figure 9: per attacked method, its clean reconstruction, the perturbed ground truth and its
    reconstruction from the perturbed measurement; the ground truth in the first column.

    `examples["clean"]` maps "target" and method names to (h, w) images; `examples[method]` holds
    "perturbed_target" and the methods' perturbed reconstructions under that method's attack.
    """
    clean = examples["clean"]
    attacked = [name for name in examples if name not in ("clean", RANDOM) and name in examples[name]]
    target = clean["target"].float().numpy()
    vmax = float(target.max())
    fig, axes = plt.subplots(3, len(attacked) + 1, figsize=(2.6 * (len(attacked) + 1), 8), squeeze=False)
    axes[0, 0].imshow(target, cmap="gray", vmin=0, vmax=vmax)
    axes[0, 0].set_title("ground truth")
    for col, name in enumerate(attacked, start=1):
        panels = (clean.get(name), examples[name]["perturbed_target"], examples[name][name])
        for row, image in enumerate(panels):
            if image is not None:
                axes[row, col].imshow(image.float().numpy(), cmap="gray", vmin=0, vmax=vmax)
        axes[0, col].set_title(name)
    for row, label in enumerate(("clean reconstruction", "perturbed ground truth", "perturbed reconstruction")):
        axes[row, 1 if attacked else 0].set_ylabel(label)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[1:, 0]:
        ax.axis("off")
    fig.suptitle(f"each method under its own attack, eps = {eps:g}")
    return save_figure(fig, path)
