"""Figures of the distribution-shift experiments: Figures 2, 4, 6, 13 (scatter of per-model mean
SSIM with CIs, y = x and the linear fit with its band), Figure 14 (frequency content of the hard
set) and example reconstructions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrirobust import schema
from mrirobust.metrics import LinearFit
from mrirobust.report.figures import plt, save_figure
from mrirobust.report.registry import KindReport, Table, register
from mrirobust.report.tables import pivot
from mrirobust.robustness.shift_analysis import MIN_FIT_POINTS, fit_summary, format_fit, model_table

# One marker and colour per group, in order of appearance.
_STYLES = [("o", "tab:blue"), ("s", "tab:orange"), ("^", "tab:green"), ("D", "tab:red"), ("v", "tab:purple"),
           ("P", "tab:brown"), ("X", "tab:pink"), ("*", "tab:gray")]

CAPTIONS = {
    "figure2": "Figure 2: dataset shift: mean SSIM per model on the target dataset (y) vs on the source dataset it "
               "was trained/tuned on (x); bars: 95% CIs over slices; dotted: y = x; red: linear fit across models "
               "with its 95% band.",
    "figure4": "Figure 4: anatomy shift, one panel per test anatomy: mean SSIM per model trained on the other "
               "anatomy (y) vs trained on the test anatomy itself (x); bars: 95% CIs; dotted: y = x; red: linear "
               "fit across models with its 95% band.",
    "figure13": "Figure 13: anatomy shift, one panel per training anatomy: each model's mean SSIM on the other "
                "anatomy (y) vs on its training anatomy (x); bars: 95% CIs; dotted: y = x; red: linear fit across "
                "models with its 95% band.",
    "figure6": "Figure 6: adversarially-filtered shift: mean SSIM per model on the hard set (the slices with the "
               "lowest SSIM under a filter method that is not evaluated) vs on the normal set; bars: 95% CIs; "
               "dotted: y = x; red: linear fit across models with its 95% band.",
    "figure14": "Figure 14: frequency content of the hard set. Left: low-frequency proportion (energy in the "
                "sampled centre / total energy) vs the filter method's SSIM, hard vs normal slices. Right: mean "
                "energy density along the phase-encode direction per set (log scale), the sampled centre shaded.",
    "examples": "Example reconstructions of the first slice, one row per direction (trained on -> evaluated on): "
                "the target and every model's reconstruction on the target's grey scale.",
}
_TITLES = {
    "figure2": "Dataset shift: out- vs in-distribution SSIM per model",
    "figure4": "Anatomy shift: each test set, trained on the other anatomy vs the same",
    "figure13": "Anatomy shift: each model on its training anatomy vs the other",
    "figure6": "Adversarially-filtered shift: hard vs normal set",
}

# (x label, y label, per-model table rows with x/x_low/x_high/y/..., fit as a dict or None)
Panel = tuple[str, str, Sequence[Mapping[str, Any]], Mapping[str, Any] | None]


def scatter_figure(panels: Sequence[Panel], path: str | Path, *, title: str = "") -> Path:
    """One scatter panel per entry: a point per model with 95% CI bars, y = x, and the fit with its band."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    groups = list(dict.fromkeys(t["group"] for _, _, table, _ in panels for t in table))
    for ax, (xlabel, ylabel, table, fit) in zip(axes[0], panels):
        values = [v for t in table for v in (t["x"], t["y"], t["x_low"], t["x_high"], t["y_low"], t["y_high"])
                  if math.isfinite(v)]  # one slice has no CI (NaN bounds)
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


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def panels(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, dict, dict]]:
    """(name, x label, y label, x role, y role) of each scatter panel the rows of a shift call for."""
    kind = rows[0]["shift"]
    domains = list(dict.fromkeys(r["trained_on"] for r in rows))
    if kind == "hard_shift":
        return [("figure6", "SSIM on the normal set", "SSIM on the hard set", {"role": "normal"}, {"role": "hard"})]
    if kind == "dataset_shift":
        source = domains[0]
        target = next(r["evaluated_on"] for r in rows if r["evaluated_on"] != source)
        return [("figure2", f"SSIM on {source}", f"SSIM on {target}", {"role": "in"}, {"role": "out"})]
    a, b = domains[0], next(r["evaluated_on"] for r in rows if r["evaluated_on"] != domains[0])
    found = []
    for one, other in ((a, b), (b, a)):  # Figure 4: the same test set
        found.append((f"figure4-test-{_safe(other)}", f"trained on {other}, SSIM on {other}",
                      f"trained on {one}, SSIM on {other}", {"trained_on": other, "evaluated_on": other},
                      {"trained_on": one, "evaluated_on": other}))
    for one, other in ((a, b), (b, a)):  # Figure 13: the same model, two test sets
        found.append((f"figure13-train-{_safe(one)}", f"trained on {one}, SSIM on {one}",
                      f"trained on {one}, SSIM on {other}", {"trained_on": one, "evaluated_on": one},
                      {"trained_on": one, "evaluated_on": other}))
    return found


def fits(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, list[dict], dict]]:
    """(panel, x label, y label, per-model table, fit summary) of every panel."""
    found = []
    for name, xlabel, ylabel, x_role, y_role in panels(rows):
        table = model_table(rows, x_role, y_role)
        least = rows[0].get("min_fit_points", MIN_FIT_POINTS)
        found.append((name, xlabel, ylabel, table, fit_summary(table, least)))
    return found


def figures(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any], folder: Path, prefix: str) -> list[Path]:
    by_figure: dict[str, list] = {}
    for name, xlabel, ylabel, table, summary in fits(rows):
        by_figure.setdefault(name.split("-")[0], []).append((xlabel, ylabel, table, summary["fit"]))
    drawn = [scatter_figure(figure_panels, folder / f"{prefix}{figure}.png", title=_TITLES[figure])
             for figure, figure_panels in by_figure.items()]
    if artefacts.get("examples"):
        drawn.append(examples_figure(artefacts["examples"], folder / f"{prefix}examples.png",
                                     title=f"{rows[0]['shift']}, {artefacts.get('mask', '')}"))
    if artefacts.get("frequency"):
        profiles = {k: np.asarray(v) for k, v in artefacts["profiles"].items()}
        drawn.append(frequency_figure(artefacts["frequency"], profiles, folder / f"{prefix}figure14.png",
                                      centre_fraction=artefacts["centre_fraction"]))
    return drawn


def tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    ssim = schema.ssim_column(rows)
    labelled = [{**r, "evaluation": f"{r['trained_on']} -> {r['evaluated_on']} ({r['role']})"} for r in rows]
    found = [(f"Mean {ssim} per model (columns: trained on -> evaluated on (role))",
              *pivot(labelled, ["group", "model"], "evaluation", ssim))]
    for name, xlabel, ylabel, _, summary in fits(rows):
        fit = summary["fit"]
        body = [["fit", *(f"{fit[k]:.4f} [{fit[k + '_ci'][0]:.4f}, {fit[k + '_ci'][1]:.4f}]"
                          for k in ("slope", "intercept")), f"{fit['r_squared']:.3f}", fit["n"]]] \
            if fit else [["fit", "-", "-", "-", summary.get("fit_note", "")]]
        body += [[f"drop {g}", f"{d:+.4f}", "", "", ""] for g, d in summary["drop_per_group"].items()]
        header = ["", "slope [95% CI]", "intercept [95% CI]", "R^2", "n"]
        found.append((f"{name}: y = {ylabel} against x = {xlabel}", header, body))
    hard = sorted({(r["file"], r["slice"]) for r in rows if r["role"] == "hard"})
    if hard:
        found.append((f"The hard set: {len(hard)} slices", ["file", "slice"], [list(h) for h in hard]))
    return found


def text(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any]) -> str:
    return "\n".join(format_fit(name, summary) for name, _, _, _, summary in fits(rows))


register(["dataset_shift", "anatomy_shift", "hard_shift"], KindReport(figures, tables, text, CAPTIONS))
