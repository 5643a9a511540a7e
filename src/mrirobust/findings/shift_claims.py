"""Claims S1-S3 (paper section 5) from the rows of the distribution-shift experiments.

The fits are the report's own (`report.shift_figures.fits`: one point per model, a line only
through at least the experiment's `min_fit_points` models). A fit item holds when the slope's
t-interval lies above 0, contains 1 (every model drops by about the same amount, whatever its
in-distribution quality) and R^2 reaches `rules.min_r_squared`; it fails when the interval
excludes 1 (the drop depends systematically on the in-distribution quality).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mrirobust import schema
from mrirobust.findings.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Item,
    Rules,
    Verdict,
    bootstrap_item,
    combine,
    matrix,
    missing,
)
from mrirobust.report.shift_figures import fits

FIT_RULE = ("per panel, the fit of out- on in-distribution SSIM across models: holds if the slope's CI lies "
            "above 0 and contains 1 and R^2 >= rules.min_r_squared; fails if the CI excludes 1")
S1 = "dataset shift: out-of-distribution SSIM is linear in in-distribution SSIM and all families drop alike"
S2 = "anatomy shift: SSIM on the other anatomy is linear in SSIM on the own and all families drop alike"
S3 = "hard set: every family drops, with similar slopes, and hard images carry less low-frequency energy"
S3_RULE = (FIT_RULE + "; per group, mean SSIM normal - hard (CI over images, hard and normal resampled apart) "
           "above 0; low-frequency proportion normal - hard above 0")


def fit_item(name: str, table: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], rules: Rules) -> Item:
    """The slope of one panel's fit, decided by FIT_RULE."""
    fit = summary["fit"]
    if fit is None:
        return Item(f"{name} slope", INCONCLUSIVE, n=len(table), unit="models", note=summary["fit_note"])
    low, high = fit["slope_ci"]
    drops = ", ".join(f"{g} {d:+.3f}" for g, d in summary["drop_per_group"].items())
    note = (f"intercept {fit['intercept']:.3f} [{fit['intercept_ci'][0]:.3f}, {fit['intercept_ci'][1]:.3f}], "
            f"R^2 {fit['r_squared']:.3f}, mean drop per group {drops}")
    if low > 1 or high < 1:
        verdict = FAILS
    else:
        verdict = HOLDS if low > 0 and fit["r_squared"] >= rules.min_r_squared else INCONCLUSIVE
    return Item(f"{name} slope", verdict, fit["slope"], low, high, fit["n"], "models", note)


def _fit_items(rows: Sequence[Mapping[str, Any]], rules: Rules) -> list[Item]:
    return [fit_item(name, table, summary, rules) for name, _, _, table, summary in fits(rows)]


def linear_shift(claim: str, rows: Sequence[Mapping[str, Any]], rules: Rules = Rules()) -> Verdict:
    """S1 (dataset shift) or S2 (anatomy shift): every panel's fit by FIT_RULE."""
    statement = S1 if claim == "S1" else S2
    if not rows:
        return missing(claim, statement, FIT_RULE, "no rows")
    return combine(claim, statement, FIT_RULE, _fit_items(rows, rules))


def _image(row: Mapping[str, Any]) -> tuple[str, int]:
    return row[schema.FILE], row[schema.SLICE]


def group_drops(rows: Sequence[Mapping[str, Any]], rules: Rules) -> list[Item]:
    """Per group: mean SSIM of its models on the normal set minus on the hard set."""
    ssim = schema.ssim_column(rows)
    items = []
    for group in dict.fromkeys(r["group"] for r in rows):
        models = list(dict.fromkeys(r["model"] for r in rows if r["group"] == group))
        sets = [matrix([r for r in rows if r["role"] == role], _image, "model", models, ssim)
                for role in ("normal", "hard")]
        items.append(bootstrap_item(f"{group} drop normal - hard", sets,
                                    lambda m: m[0].mean(axis=1) - m[1].mean(axis=1), rules))
    return items


def low_frequency_item(frequency: Sequence[Mapping[str, Any]], rules: Rules) -> Item:
    """Low-frequency proportion of the normal minus the hard slices."""
    sets = [np.array([[r["low_frequency_proportion"]] for r in frequency if r["set"] == role]).reshape(-1, 1)
            for role in ("normal", "hard")]
    return bootstrap_item("low-frequency proportion normal - hard", sets, lambda m: m[0][:, 0] - m[1][:, 0], rules)


def hard_shift(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any], rules: Rules = Rules()) -> Verdict:
    """S3: the hard-set fit, every group's drop and the hard set's low-frequency energy."""
    if not rows:
        return missing("S3", S3, S3_RULE, "no rows")
    items = _fit_items(rows, rules) + group_drops(rows, rules)
    if artefacts.get("frequency"):
        items.append(low_frequency_item(artefacts["frequency"], rules))
    return combine("S3", S3, S3_RULE, items)
