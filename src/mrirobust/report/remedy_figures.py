"""Report of the remedy kind: the shift gap each remedy closes (bars with CIs), or SSIM/PSNR under
each method's own attack vs eps and under perturbations vs severity (curves with CI bands), the
gains over the standard per level, and each method's cost next to them.

The numbers come from `robustness.remedy_analysis` (shared with the findings R1, R2); every one
carries n and a 95% paired bootstrap CI over images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrirobust import schema
from mrirobust.report.figures import plt, save_figure
from mrirobust.report.perturb_figures import curves_figure
from mrirobust.report.registry import KindReport, Table, register
from mrirobust.report.tables import format_table
from mrirobust.robustness.remedy_analysis import (
    ATTACK,
    Estimate,
    costs,
    curve_rows,
    estimate,
    gap_arms,
    gap_closed,
    level_arm,
    paired,
    quality,
    remedies,
    second_minus_first,
    shift_name,
    standard,
    threats,
)

CAPTIONS = {
    "remedy_gap": "The fraction of the standard method's distribution-shift gap each remedy closes: (SSIM of the "
                  "remedy P->Q - standard P->Q) / (standard Q->Q - standard P->Q), means over the same target "
                  "images; whiskers: 95% paired bootstrap CI over images (n under each bar); 1 closes the whole "
                  "gap, 0 none, below 0 widens it.",
    "remedy_ssim_curves": "SSIM of the standard method and each remedy, each under its own attack vs eps (or under "
                          "each perturbation vs severity); bands: 95% bootstrap CI over images (n in the panel "
                          "title).",
    "remedy_psnr_curves": "PSNR of the standard method and each remedy, each under its own attack vs eps (or under "
                          "each perturbation vs severity); bands: 95% bootstrap CI over images (n in the panel "
                          "title).",
}
NOT_RECORDED = "not recorded"  # no trained weights, or a run (another trainer, an older version) without times
COST_HEADER = "test time / slice (x standard); training time"


def _metric(rows: Sequence[Mapping[str, Any]], family: str) -> str | None:
    return next((c for c in schema.metric_columns(list(rows[0])) if schema.metric_family(c) == family), None) \
        if rows else None


def _fmt(e: Estimate, digits: int = 4) -> str:
    if not math.isfinite(e.low):
        return f"{e.value:.{digits}f} (n {e.n}: no CI)"
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def _cost(rows: Sequence[Mapping[str, Any]], remedy: str) -> str:
    """The remedy's test-time seconds per slice, its ratio to the standard's (same run), and the
    training time of its weights."""
    found = {r[schema.METHOD]: r for r in costs(rows)}
    mine, base = found.get(remedy), found.get(standard(rows))
    if mine is None:
        return NOT_RECORDED
    seconds, reference = mine["seconds_per_slice"], base["seconds_per_slice"] if base else None
    test = f"{seconds:.3g} s ({seconds / reference:.3g}x)" if reference else f"{seconds:.3g} s"
    return f"{test}; training {_trained(mine)}"


def _trained(row: Mapping[str, Any]) -> str:
    seconds = row.get("train_seconds")
    return f"{seconds:.4g} s" if isinstance(seconds, (int, float)) and math.isfinite(seconds) else NOT_RECORDED


def gaps(rows: Sequence[Mapping[str, Any]], metric: str) -> list[tuple[str, np.ndarray, Estimate, Estimate]]:
    """Per remedy: its gap matrix, the standard's gap and the fraction closed."""
    shifted = [r for r in quality(rows) if "condition" in r]
    found = []
    for remedy in remedies(shifted):
        matrix = paired(shifted, gap_arms(remedy), metric)
        found.append((remedy, matrix, estimate(matrix, second_minus_first), estimate(matrix, gap_closed)))
    return found


def gap_table(rows: Sequence[Mapping[str, Any]], metric: str) -> Table | None:
    found = gaps(rows, metric)
    if not found:
        return None
    body = [[remedy, closed.n, *(f"{v:.4f}" for v in (matrix.mean(axis=0) if len(matrix) else [math.nan] * 3)),
             _fmt(gap), _fmt(closed, 3), _cost(rows, remedy)] for remedy, matrix, gap, closed in found]
    return (f"Shift gap closed ({metric}; means over the same target images; [95% paired bootstrap CI]; n = "
            f"images; standard: {standard(rows)})",
            ["remedy", "n", "standard P->Q", "standard Q->Q", "remedy P->Q", "gap Q->Q - P->Q", "gap closed",
             COST_HEADER], body)


def gain_table(rows: Sequence[Mapping[str, Any]], metric: str) -> Table | None:
    ok = quality(rows)
    body = []
    for threat, levels in threats(ok):
        for level in levels:
            for remedy in remedies(ok):
                arms = [level_arm(threat, level, standard(ok)), level_arm(threat, level, remedy)]
                matrix = paired(ok, arms, metric)
                means = matrix.mean(axis=0) if len(matrix) else [math.nan] * 2
                body.append([threat, f"{level:g}", remedy, len(matrix), f"{means[0]:.4f}", f"{means[1]:.4f}",
                             _fmt(estimate(matrix, second_minus_first)), _cost(rows, remedy)])
    if not body:
        return None
    level = "eps" if threats(ok)[0][0] == ATTACK else "severity"
    return (f"Gain of each remedy over {standard(ok)} in {metric} (remedy - standard, each under its own attack "
            f"or the same perturbation draws; [95% paired bootstrap CI]; n = images)",
            ["threat", level, "remedy", "n", "standard", "remedy", "gain", COST_HEADER], body)


def cost_table(rows: Sequence[Mapping[str, Any]]) -> Table | None:
    found = costs(rows)
    if not found:
        return None
    body = [[r[schema.METHOD], r["role"], f"{r['seconds_per_slice']:.4g}", r["slices"], r["device"], _trained(r)]
            for r in found]
    return ("Cost: seconds per slice of one batch's reconstruction at test time (wall clock, on the machine "
            "of the run; one measurement, no CI) and the wall-clock training time of the weights it uses (as "
            "its training run recorded it, on that run's machine; a wrapper's: its base's)",
            [schema.METHOD, "role", "s / slice", "slices", "device", "training time"], body)


def gap_figure(rows: Sequence[Mapping[str, Any]], metric: str, path: Path) -> Path:
    """Bars: the gap fraction each remedy closes, whiskers its 95% CI, n under each bar."""
    found = gaps(rows, metric)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(found), 3.4), constrained_layout=True)
    values = [closed.value for _, _, _, closed in found]
    low = [closed.value - closed.low if math.isfinite(closed.low) else 0 for _, _, _, closed in found]
    high = [closed.high - closed.value if math.isfinite(closed.high) else 0 for _, _, _, closed in found]
    ax.bar(range(len(found)), values, yerr=[low, high], capsize=4, color="tab:green", alpha=0.8)
    ax.set_xticks(range(len(found)), [f"{name}\n(n = {closed.n})" for name, _, _, closed in found], fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axhline(1, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylabel("fraction of the shift gap closed")
    ax.set_title(f"{metric}: {shift_name(quality(rows))} gap of {standard(rows)} closed")
    return save_figure(fig, path)


def figures(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any], folder: Path, prefix: str) -> list[Path]:
    ok = quality(rows)
    if not ok:
        return []
    if artefacts.get("against") == "shift" or "condition" in ok[0]:
        metric = _metric(ok, "ssim")
        return [gap_figure(rows, metric, folder / f"{prefix}remedy_gap.png")] if metric and gaps(rows, metric) else []
    curves = curve_rows(ok)
    xlabel = "eps (||z|| / ||y||)" if curves[0]["perturbation"] == ATTACK else "severity"
    drawn = []
    for family in ("ssim", "psnr"):
        metric = _metric(curves, family)
        if metric:
            drawn.append(curves_figure(curves, metric, folder / f"{prefix}remedy_{family}_curves.png", xlabel))
    return drawn


def tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    ok = quality(rows)
    found: list[Table | None] = []
    for family in ("ssim", "psnr"):
        metric = _metric(ok, family)
        if metric:
            found += [gap_table(rows, metric), gain_table(rows, metric)]
    found.append(cost_table(rows))
    failed = len([r for r in rows if r.get(schema.STATUS, "ok") != "ok"])
    if failed:
        found.append((f"{failed} of {len(rows)} rows failed (their `reason` column says why)", ["failed"], [[failed]]))
    return [t for t in found if t is not None]


def text(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any]) -> str:
    return "\n\n".join(f"{title}\n{format_table(header, body)}" for title, header, body in tables(rows))


register(["remedy"], KindReport(figures, tables, text, CAPTIONS))
