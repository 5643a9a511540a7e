"""Figures of the adversarial experiment (paper Figures 3, 9, 10) from its result rows.

Rows are dicts as `experiments.attack` writes them: `attacked` (a method or "random"),
`evaluated`, `eps`, `status` and a loss column such as "ssim[fastmri,volume-max]_loss" (clean - perturbed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.lines import Line2D

from mrirobust import schema
from mrirobust.metrics import mean_ci
from mrirobust.report.figures import plt, save_figure
from mrirobust.report.registry import KindReport, Table, register
from mrirobust.report.tables import ok_rows, pivot

RANDOM = "random"  # the `attacked` label of the random-perturbation control
L1_BASES = {"l1": "wavelet", "l1-fourier": "Fourier", "l1-dct": "DCT"}
CAPTIONS = {
    "figure3": "Figure 3: loss in SSIM (clean - perturbed) vs relative perturbation size eps, one panel per attacked "
               "method, every method evaluated on the perturbations; dashed: a random perturbation of the same "
               "norm; bands: 95% bootstrap CI over images.",
    "figure9": "Figure 9: each method under its own attack at the largest eps. First column: the ground truth; per "
               "attacked method: its clean reconstruction, the ground truth seen through the perturbation "
               "(perturbed ground truth) and its reconstruction from the perturbed measurement.",
    "figure10": "Figure 10: l1 with wavelet, Fourier and DCT sparsifying bases, each under its own attack: loss in "
                "SSIM vs eps; dashed: a random perturbation of the same norm; bands: 95% bootstrap CI over images.",
}


def loss_curve(rows: Sequence[dict], attacked: str, evaluated: str, loss_key: str,
               confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """eps, mean loss and its bootstrap CI (low, high) over images; the CI is the mean below 2 images."""
    chosen = [r for r in rows if r["attacked"] == attacked and r["evaluated"] == evaluated and r["status"] == "ok"]
    budgets = sorted({r["eps"] for r in chosen})
    stats = []
    for eps in budgets:
        values = [r[loss_key] for r in chosen if r["eps"] == eps]
        stats.append(mean_ci(values, confidence=confidence))
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


def transfer_matrix(rows: Sequence[dict], *, loss_key: str, eps: float | None = None
                    ) -> tuple[list[str], list[str], np.ndarray]:
    """Mean loss at `eps` (default: the largest) per (attacked, evaluated): row and column labels, matrix."""
    eps = max(r["eps"] for r in rows) if eps is None else eps
    chosen = [r for r in rows if r["eps"] == eps and r["status"] == "ok"]
    attackers = list(dict.fromkeys(r["attacked"] for r in rows))
    victims = list(dict.fromkeys(r["evaluated"] for r in rows))
    matrix = np.full((len(attackers), len(victims)), np.nan)
    for i, a in enumerate(attackers):
        for j, v in enumerate(victims):
            values = [r[loss_key] for r in chosen if r["attacked"] == a and r["evaluated"] == v]
            matrix[i, j] = np.mean(values) if values else np.nan
    return attackers, victims, matrix


def format_transfer(rows: Sequence[dict], *, loss_key: str) -> str:
    """The transfer matrix at the largest eps as text, and whether each method is hurt most by its own attack."""
    eps = max(r["eps"] for r in rows)
    attackers, victims, matrix = transfer_matrix(rows, loss_key=loss_key, eps=eps)
    width = max(len(n) for n in attackers + victims + ["attacked \\ evaluated"]) + 2
    lines = [f"mean {loss_key} at eps={eps:g} (rows: attacked, columns: evaluated; nan: failed)",
             "attacked \\ evaluated".ljust(width) + "".join(v.rjust(width) for v in victims)]
    lines += [a.ljust(width) + "".join(f"{x:.4f}".rjust(width) for x in matrix[i]) for i, a in enumerate(attackers)]
    verdicts = []
    for j, victim in enumerate(victims):
        if victim not in attackers:
            continue
        column = matrix[:, j]
        if np.isnan(column).all():
            verdicts.append(f"{victim}: no results")
            continue
        worst = attackers[int(np.nanargmax(column))]
        verdicts.append(f"{victim}: {'yes' if worst == victim else f'no (worst: {worst})'}")
    if verdicts:
        lines.append("hurt most by its own attack? " + "; ".join(verdicts))
    return "\n".join(lines)


def _loss_key(rows: Sequence[Mapping[str, Any]]) -> str:
    return schema.loss_column(schema.ssim_column(ok_rows(rows) or rows))


def figures(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any], folder: Path, prefix: str) -> list[Path]:
    loss_key = _loss_key(rows)
    drawn = [loss_figure(rows, folder / f"{prefix}figure3.png", loss_key=loss_key)]
    if artefacts.get("examples"):
        drawn.append(examples_figure(artefacts["examples"], folder / f"{prefix}figure9.png", eps=artefacts["eps"]))
    basis = basis_figure(rows, folder / f"{prefix}figure10.png", loss_key=loss_key)
    return drawn + ([basis] if basis else [])


def tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    loss = _loss_key(rows)
    ok = ok_rows(rows)
    failed = len(rows) - len(ok)
    header, body = pivot(ok, ["attacked", "eps"], "evaluated", loss)
    return [(f"Transfer matrix: mean {loss} (rows: attacked method and eps, columns: evaluated method)"
             + (f"; {failed} failed rows left out" if failed else ""), header, body)]


def text(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any]) -> str:
    failed = sum(r["status"] != "ok" for r in rows)
    note = f"\n{failed} of {len(rows)} rows failed; their `reason` column says why" if failed else ""
    return format_transfer(ok_rows(rows) or rows, loss_key=_loss_key(rows)) + note


register(["attack"], KindReport(figures, tables, text, CAPTIONS))
