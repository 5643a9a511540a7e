"""Analysis of distribution-shift rows (paper section 5, appendix B): per-model tables, linear
fits across models, the adversarially-filtered hard set and its frequency content.

Pure functions over result rows and k-space; the experiment that produces the rows is
`mrirobust.experiments.shift`, the figures are drawn by `mrirobust.report.shift_figures`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrirobust import schema
from mrirobust.data.sample import Sample, draw_mask
from mrirobust.errors import ConfigError, ShapeError
from mrirobust.metrics import linear_fit, mean_ci
from mrirobust.physics.masks import MaskSpec


def ssim_key(rows: Sequence[Mapping[str, Any]]) -> str:
    """The SSIM column of evaluation rows (its name records the variant)."""
    return schema.ssim_column(rows)


# --- the hard set and its frequency analysis -------------------------------------------------------

def hard_set(rows: Sequence[Mapping[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """The `fraction` of rows with the lowest SSIM (at least one), as (file, slice, ssim) records."""
    if not 0 < fraction < 1:
        raise ConfigError("hard_fraction", f"{fraction} must lie strictly between 0 and 1")
    key = ssim_key(rows)
    count = max(1, math.floor(fraction * len(rows) + 1e-9))
    chosen = sorted(rows, key=lambda r: (r[key], r["file"], r["slice"]))[:count]
    return [{"file": Path(r["file"]).name, "slice": int(r["slice"]), "filter_ssim": r[key]} for r in chosen]


def column_energy(kspace: torch.Tensor) -> torch.Tensor:
    """Energy per phase-encode column of (..., C, H, W) k-space: sum over coils and readout."""
    return kspace.abs().square().sum(dim=(-3, -2))


def low_frequency_proportion(kspace: torch.Tensor, num_low: int) -> torch.Tensor:
    """Energy in the `num_low` fully sampled centre columns over the total energy (appendix B.3).

    The centre columns are placed as fastMRI's mask functions place them.
    """
    energy = column_energy(kspace)
    width = energy.shape[-1]
    start = (width - num_low + 1) // 2
    return energy[..., start:start + num_low].sum(-1) / energy.sum(-1)


def frequency_profile(kspace: torch.Tensor, points: int = 101) -> np.ndarray:
    """Column energy over total energy on a normalised frequency grid [-0.5, 0.5] (any width)."""
    energy = column_energy(kspace).double()
    energy = (energy / energy.sum(-1, keepdim=True)).cpu().numpy()
    width = energy.shape[-1]
    freqs = (np.arange(width) - width // 2) / width
    return np.interp(np.linspace(-0.5, 0.5, points), freqs, energy * width)  # density: width-independent


def frequency_rows(samples: Iterable[Sample], spec: MaskSpec, hard: set[tuple[str, int]],
                   filter_ssim: Mapping[tuple[str, int], float]
                   ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Per slice: low-frequency proportion, filter SSIM and hard/normal; each set's mean energy profile."""
    rows, profiles = [], {"hard": [], "normal": []}
    for sample in samples:
        _, num_low = spec.sample(sample.shape[-1], seed=draw_mask(sample, spec)[1])
        name = (Path(sample.meta.file).name, sample.meta.slice)
        role = "hard" if name in hard else "normal"
        rows.append({"file": name[0], "slice": name[1], "set": role, "filter_ssim": filter_ssim.get(name, math.nan),
                     "low_frequency_proportion": float(low_frequency_proportion(sample.kspace, num_low))})
        profiles[role].append(frequency_profile(sample.kspace))
    return rows, {k: np.mean(v, axis=0) for k, v in profiles.items() if v}


# --- summaries -------------------------------------------------------------------------------------

def model_table(rows: Sequence[Mapping[str, Any]], x_role: Mapping[str, Any], y_role: Mapping[str, Any],
                seed: int = 0) -> list[dict[str, Any]]:
    """Per model: mean SSIM and 95% CI on the rows matching `x_role` (x) and `y_role` (y), and x - y."""
    key = ssim_key(rows)
    table = []
    for label in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == label]
        pick = lambda role: [r[key] for r in mine if all(r[k] == v for k, v in role.items())]  # noqa: E731
        xs, ys = pick(x_role), pick(y_role)
        if not xs or not ys:
            continue
        x = mean_ci(xs, seed=seed)
        y = mean_ci(ys, seed=seed)
        table.append({"model": label, "group": mine[0]["group"], "x": x[0], "x_low": x[1], "x_high": x[2],
                      "y": y[0], "y_low": y[1], "y_high": y[2], "drop": x[0] - y[0],
                      "x_slices": len(xs), "y_slices": len(ys)})
    return table


MIN_FIT_POINTS = 5  # fewer models than this give no line: a fit through 3 or 4 points decides nothing


def fit_summary(table: Sequence[Mapping[str, Any]], min_points: int = MIN_FIT_POINTS) -> dict[str, Any]:
    """The linear fit of y on x across models with CIs on slope and intercept (None, with
    "inconclusive: only N models", below `min_points` models) and the mean drop x - y per group."""
    groups = {g: float(np.mean([t["drop"] for t in table if t["group"] == g]))
              for g in dict.fromkeys(t["group"] for t in table)}
    if len(table) < max(min_points, 3):
        return {"fit": None, "fit_note": f"inconclusive: only {len(table)} models", "drop_per_group": groups}
    try:
        fit = linear_fit([t["x"] for t in table], [t["y"] for t in table])
    except ShapeError as error:
        return {"fit": None, "fit_note": f"inconclusive: {error}", "drop_per_group": groups}
    return {"fit": asdict(fit), "drop_per_group": groups}


def format_fit(name: str, summary: Mapping[str, Any]) -> str:
    fit = summary["fit"]
    line = (f"{name}: y = {fit['slope']:.3f} x + {fit['intercept']:.3f} (slope 95% CI "
            f"[{fit['slope_ci'][0]:.3f}, {fit['slope_ci'][1]:.3f}], intercept 95% CI [{fit['intercept_ci'][0]:.3f}, "
            f"{fit['intercept_ci'][1]:.3f}], R^2 {fit['r_squared']:.3f}, n {fit['n']})"
            if fit else f"{name}: no linear fit ({summary['fit_note']})")
    drops = ", ".join(f"{g} {d:+.4f}" for g, d in summary["drop_per_group"].items())
    return f"{line}\n  mean SSIM drop per group: {drops}"
