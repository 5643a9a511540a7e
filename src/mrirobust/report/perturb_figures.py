"""Report of the perturb kind: quality vs severity per perturbation, areas under the curves and the
methods' ranking, example images at the worst parameters, worst case vs the matched l2 attack,
and the "more samples, worse result" check.

Rows are as `experiments.perturb` writes them: `part` (sweep, worst_case, samples),
`perturbation` (the kind), `severity`, `method`, `image`, the metric columns and, for worst cases,
`attack_<metric>` and the objectives. Every number carries n and a 95% bootstrap CI over images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrirobust import schema
from mrirobust.metrics import mean_ci
from mrirobust.report.figures import plt, save_figure
from mrirobust.report.registry import KindReport, Table, register
from mrirobust.report.tables import format_table, ok_rows
from mrirobust.robustness.worst_case import more_samples_worse

SWEEP, WORST, SAMPLES = schema.SWEEP, schema.WORST, schema.SAMPLES  # the `part` column
CAPTIONS = {
    "ssim_curves": "SSIM vs severity, one panel per perturbation (severity 0: the clean data; 1: the kind's strong "
                   "but plausible level, docs/perturbations.md), every method; bands: 95% bootstrap CI over images "
                   "(n in the panel title).",
    "psnr_curves": "PSNR vs severity, one panel per perturbation, every method; bands: 95% bootstrap CI over images "
                   "(n in the panel title).",
    "perturbed_examples": "Example reconstructions of the first image: the target, then each method at the worst parameters "
                "found for it (worst-case search) or, without a search, at the largest severity; one row per "
                "perturbation, all on the target's grey scale.",
}


def _mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """`mean_ci` of the finite entries (a mask-change perturbation has no attack score)."""
    return mean_ci([float(v) for v in values if _finite(v)])


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _fmt(stats: tuple[float, float, float]) -> str:
    return f"{stats[0]:.4f} [{stats[1]:.4f}, {stats[2]:.4f}]"


def _column(rows: Sequence[Mapping[str, Any]], family: str) -> str | None:
    columns = schema.metric_columns(list(dict.fromkeys(k for row in rows[:1] for k in row)))
    return next((c for c in columns if schema.metric_family(c) == family), None)


def _part(rows: Sequence[Mapping[str, Any]], part: str) -> list[Mapping[str, Any]]:
    return [r for r in ok_rows(rows) if r.get("part") == part]


def _labels(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return list(dict.fromkeys(r[key] for r in rows))


def curve(rows: Sequence[Mapping[str, Any]], kind: str, method: str, metric: str):
    """Severities, mean and 95% CI (low, high) of `metric` over images, and the image count."""
    chosen = [r for r in rows if r["perturbation"] == kind and r[schema.METHOD] == method]
    severities = sorted({r["severity"] for r in chosen})
    stats = [_mean_ci([r[metric] for r in chosen if r["severity"] == s]) for s in severities]
    images = len({r[schema.IMAGE] for r in chosen})
    mean, low, high = (np.array(c) for c in zip(*stats)) if stats else (np.array([]),) * 3
    return np.array(severities), mean, low, high, images


def curves_figure(rows: Sequence[Mapping[str, Any]], metric: str, path: Path, xlabel: str = "severity") -> Path:
    """One panel per perturbation kind: `metric` vs severity (`xlabel`) for every method, 95% CI bands."""
    kinds, methods = _labels(rows, "perturbation"), _labels(rows, schema.METHOD)
    columns = min(4, len(kinds))
    nrows = -(-len(kinds) // columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(3.4 * columns, 3.0 * nrows + 0.6), squeeze=False,
                             constrained_layout=True)
    for ax, kind in zip(axes.flat, kinds):
        count = 0
        for j, method in enumerate(methods):
            severity, mean, low, high, count = curve(rows, kind, method, metric)
            color = plt.get_cmap("tab10")(j % 10)
            ax.plot(severity, mean, "-o", color=color, markersize=3, label=method)
            ax.fill_between(severity, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(f"{kind} (n = {count} images)")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(kinds):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{metric} under perturbations (mean over images, 95% bootstrap CI)")
    return save_figure(fig, path)


def examples_figure(examples: Mapping[str, Any], path: Path) -> Path | None:
    """Rows: perturbation kinds; columns: the target and each method at its worst parameters."""
    target = examples.get("clean", {}).get("target")
    kinds = list(dict.fromkeys([*examples.get("sweep", {}), *examples.get("worst", {})]))
    if target is None or not kinds:
        return None
    methods = [m for m in examples["clean"] if m != "target"]
    vmax = float(target.max())
    fig, axes = plt.subplots(len(kinds), len(methods) + 1, figsize=(2.4 * (len(methods) + 1), 2.5 * len(kinds)),
                             squeeze=False)
    for row, kind in enumerate(kinds):
        axes[row, 0].imshow(target.float().numpy(), cmap="gray", vmin=0, vmax=vmax)
        axes[row, 0].set_ylabel(kind)
        for col, method in enumerate(methods, start=1):
            worst = examples.get("worst", {}).get(kind, {}).get(method)
            image: torch.Tensor | None = worst if worst is not None else examples.get("sweep", {}).get(kind, {}).get(
                method)
            if image is not None:
                axes[row, col].imshow(image.float().numpy(), cmap="gray", vmin=0, vmax=vmax)
            axes[row, col].set_title(f"{method} ({'worst' if worst is not None else 'max severity'})", fontsize=7)
    axes[0, 0].set_title("target")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def area_table(rows: Sequence[Mapping[str, Any]], metric: str) -> Table:
    """Per (kind, method): the area under the `metric` curve over severity, per image (trapezoids,
    divided by the severity range: the mean quality over the sweep), its CI, and the rank of the
    method within the kind (1: best; "tied" when its CI overlaps the next one's)."""
    sweep = _part(rows, SWEEP)
    body = []
    for kind in _labels(sweep, "perturbation"):
        entries = []
        for method in _labels(sweep, schema.METHOD):
            chosen = [r for r in sweep if r["perturbation"] == kind and r[schema.METHOD] == method]
            areas = []
            for image in _labels(chosen, schema.IMAGE):
                points = sorted((r["severity"], r[metric]) for r in chosen if r[schema.IMAGE] == image)
                x, y = np.array(points).T
                if len(x) > 1:
                    areas.append(float(np.trapezoid(y, x) / (x[-1] - x[0])))
            entries.append((method, len(areas), _mean_ci(areas)))
        sign = 1 if schema.metric_family(metric) in schema.HIGHER_IS_BETTER else -1
        entries.sort(key=lambda e: -sign * e[2][0] if math.isfinite(e[2][0]) else math.inf)
        for rank, (method, n, stats) in enumerate(entries, start=1):
            following = entries[rank][2] if rank < len(entries) else None
            tied = following is not None and not (stats[1] > following[2] or stats[2] < following[1])
            body.append([kind, method, n, _fmt(stats), f"{rank}{' (tied with next)' if tied else ''}"])
    return (f"Area under the {metric} curve over severity / severity range [95% bootstrap CI over images; n = "
            f"images] and the methods' ranking per perturbation", ["perturbation", schema.METHOD, "n",
                                                                   f"area {metric}", "rank"], body)


def worst_table(rows: Sequence[Mapping[str, Any]], metric: str) -> Table | None:
    """Per (kind, method): the swept and the worst-case score at the search severity, the relative
    k-space change, and the l2 attack at that change [95% CIs over images]."""
    worst = _part(rows, WORST)
    if not worst:
        return None
    sweep = _part(rows, SWEEP)
    body = []
    for kind in _labels(worst, "perturbation"):
        for method in _labels(worst, schema.METHOD):
            mine = [r for r in worst if r["perturbation"] == kind and r[schema.METHOD] == method]
            if not mine:
                continue
            severity = mine[0]["severity"]
            swept = [r[metric] for r in sweep if r["perturbation"] == kind and r[schema.METHOD] == method
                     and math.isclose(r["severity"], severity)]
            attack = [r.get(f"attack_{metric}", math.nan) for r in mine]
            body.append([kind, method, f"{severity:g}", len(mine), _fmt(_mean_ci(swept)),
                         _fmt(_mean_ci([r[metric] for r in mine])), _fmt(_mean_ci([r["relative_change"] for r in mine])),
                         _fmt(_mean_ci(attack)) if any(map(_finite, attack)) else "n/a (mask change)"])
    return (f"Worst case vs the swept draws and the l2 attack at the same ||dy|| / ||y|| ({metric}; mean [95% "
            f"bootstrap CI over images]; n = images)",
            ["perturbation", schema.METHOD, "severity", "n", f"swept {metric}", f"worst {metric}", "||dy|| / ||y||",
             f"l2 attack {metric}"], body)


def samples_table(rows: Sequence[Mapping[str, Any]], metric: str) -> Table | None:
    """Antun et al.'s check per method and adjacent pair of accelerations: quality at the lower one
    minus quality at the higher one (paired over images, negative is worse) and the verdict."""
    samples = _part(rows, SAMPLES)
    if not samples:
        return None
    body = []
    for method in _labels(samples, schema.METHOD):
        mine = [r for r in samples if r[schema.METHOD] == method]
        images = sorted({r[schema.IMAGE] for r in mine})
        scores = {a: [next(r[metric] for r in mine if r["acceleration"] == a and r[schema.IMAGE] == i) for i in images]
                  for a in sorted({r["acceleration"] for r in mine})}
        sign = 1 if schema.metric_family(metric) in schema.HIGHER_IS_BETTER else -1
        drops = {(d.lower, d.higher): d.verdict for d in more_samples_worse(scores, schema.metric_family(metric))} \
            if len(images) > 1 else {}
        ordered = sorted(scores)
        for lower, higher in zip(ordered, ordered[1:]):
            difference = _mean_ci(sign * (np.array(scores[lower]) - np.array(scores[higher])))
            verdict = drops.get((lower, higher), "no drop" if len(images) > 1 else "inconclusive")
            body.append([method, f"{lower:g}x -> {higher:g}x", len(images), _fmt(difference), verdict])
    return (f"More samples, worse result? {metric} at the lower acceleration minus at the next higher one (paired "
            f"over images; negative: more samples gave a worse image) [95% bootstrap CI; n = images]; drop: the CI "
            f"lies below 0; inconclusive: only the mean does (or n < 2)",
            [schema.METHOD, "accelerations", "n", f"difference {metric}", "verdict"], body)


def figures(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any], folder: Path, prefix: str) -> list[Path]:
    sweep = _part(rows, SWEEP)
    drawn = []
    for family in ("ssim", "psnr"):
        metric = _column(sweep, family)
        if metric:
            drawn.append(curves_figure(sweep, metric, folder / f"{prefix}{family}_curves.png"))
    example = examples_figure(artefacts.get("examples", {}), folder / f"{prefix}perturbed_examples.png")
    return drawn + ([example] if example else [])


def tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    found: list[Table | None] = []
    ok = ok_rows(rows)
    for family in ("ssim", "psnr"):
        metric = _column(ok, family)
        if metric:
            found += [area_table(rows, metric), worst_table(rows, metric), samples_table(rows, metric)]
    failed = len(rows) - len(ok)
    if failed:
        found.append((f"{failed} of {len(rows)} rows failed (their `reason` column says why)", ["failed"], [[failed]]))
    return [t for t in found if t is not None]


def text(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any]) -> str:
    metric = _column(ok_rows(rows), "ssim")
    if metric is None:
        return f"{len(rows)} rows, none scored"
    parts = [area_table(rows, metric), worst_table(rows, metric), samples_table(rows, metric)]
    return "\n\n".join(f"{title}\n{format_table(header, body)}" for title, header, body in
                       (p for p in parts if p is not None))


register(["perturb"], KindReport(figures, tables, text, CAPTIONS))
