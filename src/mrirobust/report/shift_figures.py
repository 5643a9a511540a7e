"""Figures of the distribution-shift experiments: Figures 2, 4, 6, 13 (scatter of per-model mean
SSIM with CIs, y = x and the linear fit with its band), Figure 14 (frequency content of the hard
set) and example reconstructions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrirobust.metrics import LinearFit
from mrirobust.report.figures import plt, save_figure

# One marker and colour per group, in order of appearance.
_STYLES = [("o", "tab:blue"), ("s", "tab:orange"), ("^", "tab:green"), ("D", "tab:red"), ("v", "tab:purple"),
           ("P", "tab:brown"), ("X", "tab:pink"), ("*", "tab:gray")]

# (x label, y label, per-model table rows with x/x_low/x_high/y/..., fit as a dict or None)
Panel = tuple[str, str, Sequence[Mapping[str, Any]], Mapping[str, Any] | None]


def scatter_figure(panels: Sequence[Panel], path: str | Path, *, title: str = "") -> Path:
    """One scatter panel per entry: a point per model with 95% CI bars, y = x, and the fit with its band."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    groups = list(dict.fromkeys(t["group"] for _, _, table, _ in panels for t in table))
    for ax, (xlabel, ylabel, table, fit) in zip(axes[0], panels):
        values = [v for t in table for v in (t["x_low"], t["x_high"], t["y_low"], t["y_high"])]
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        pad = 0.05 * max(high - low, 0.02)
        line = np.linspace(low - pad, high + pad, 50)
        ax.plot(line, line, color="black", lw=0.8, ls=":", label="y = x")
        if fit is not None:
            y, band_low, band_high = LinearFit(**{**fit, "slope_ci": tuple(fit["slope_ci"]),
                                                  "intercept_ci": tuple(fit["intercept_ci"])}).band(line)
            ax.plot(line, y, color="tab:red", lw=1, label=f"fit: {fit['slope']:.2f}x + {fit['intercept']:.2f}")
            ax.fill_between(line, band_low, band_high, color="tab:red", alpha=0.15, lw=0)
        for group in groups:
            mine = [t for t in table if t["group"] == group]
            if not mine:
                continue
            marker, colour = _STYLES[groups.index(group) % len(_STYLES)]
            x = np.array([t["x"] for t in mine])
            y = np.array([t["y"] for t in mine])
            xerr = np.array([[t["x"] - t["x_low"] for t in mine], [t["x_high"] - t["x"] for t in mine]])
            yerr = np.array([[t["y"] - t["y_low"] for t in mine], [t["y_high"] - t["y"] for t in mine]])
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=marker, color=colour, ms=5, capsize=2, lw=0.8,
                        label=group)
        ax.set_xlim(line[0], line[-1])
        ax.set_ylim(line[0], line[-1])
        ax.set_aspect("equal")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def examples_figure(examples: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path, *,
                    title: str = "") -> Path:
    """One row per (trained on -> evaluated on): the target and every model's reconstruction of the
    first slice, on the target's grey scale."""
    rows = list(examples)
    columns = max(len(images) for images in examples.values())
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.0 * columns, 2.2 * len(rows)), squeeze=False)
    for r, name in enumerate(rows):
        images = examples[name]
        vmax = float(images["target"].max())
        ordered = ["target"] + [k for k in images if k != "target"]
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(ordered):
                ax.axis("off")
                continue
            ax.imshow(images[ordered[c]].float().numpy(), cmap="gray", vmin=0, vmax=vmax)
            ax.set_title(ordered[c], fontsize=6)
        axes[r, 0].set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def frequency_figure(rows: Sequence[Mapping[str, Any]], profiles: Mapping[str, np.ndarray], path: str | Path, *,
                     centre_fraction: float) -> Path:
    """Figure 14. Left: low-frequency proportion against the filter's SSIM, hard vs normal.
    Right: mean energy density along the phase-encode direction per set (log scale), with the
    fully sampled centre marked."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for role, colour in (("normal", "tab:blue"), ("hard", "tab:red")):
        mine = [r for r in rows if r["set"] == role]
        left.scatter([r["filter_ssim"] for r in mine], [r["low_frequency_proportion"] for r in mine], s=12,
                     color=colour, label=f"{role} ({len(mine)})")
        if role in profiles:
            freqs = np.linspace(-0.5, 0.5, len(profiles[role]))
            right.semilogy(freqs, profiles[role], color=colour, label=role)
    left.set_xlabel("SSIM of the filter method")
    left.set_ylabel("low-frequency proportion (centre / total energy)")
    left.legend()
    right.axvspan(-centre_fraction / 2, centre_fraction / 2, color="gray", alpha=0.2, label="sampled centre")
    right.set_xlabel("phase-encode frequency (cycles per pixel)")
    right.set_ylabel("mean energy density (fraction of total x width)")
    right.legend()
    fig.suptitle("Hard images carry less energy in the sampled centre")
    return save_figure(fig, path)
