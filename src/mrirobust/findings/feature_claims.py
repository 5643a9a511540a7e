"""Claims F1 and F2 (paper section 6) from the rows of the heat-map and annotated-box experiments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from mrirobust import schema
from mrirobust.findings.verdicts import Rules, Verdict, bootstrap_item, combine, matrix, missing

F1 = "heat maps: the error of a small feature depends on where it is placed"
F1_RULE = ("per method and image, the spread of the feature's loss across window positions (std / mean, CI over "
           "positions) minus the noise floor rules.location_cv; holds if its CI lies above 0 for every method "
           "and image. The methods are deterministic, so the floor is a set threshold, not repeated noise draws; "
           "neighbouring positions overlap, so the interval is optimistic")
F2 = "the ranking of methods by error inside pathology boxes equals their ranking by SSIM"
F2_RULE = ("Spearman correlation across methods between the mean SSIM and minus the mean box MSE, CI over "
           "boxes; holds if its CI lies above 0, fails below")


def _spread(means: list[np.ndarray], floor: float) -> np.ndarray:
    """std / mean of a value from the means of (value, value^2), minus `floor`."""
    first, second = means[0][:, 0], means[0][:, 1]
    std = np.sqrt(np.maximum(second - first**2, 0.0))
    return std / np.where(first > 0, first, np.inf) - floor


def location_dependence(rows: Sequence[Mapping[str, Any]], rules: Rules = Rules()) -> Verdict:
    """F1: per method and image, the loss's spread over positions against the noise floor."""
    items = []
    for method in dict.fromkeys(r[schema.METHOD] for r in rows):
        for image in dict.fromkeys(r[schema.IMAGE] for r in rows if r[schema.METHOD] == method):
            loss = np.array([r["loss"] for r in rows if r[schema.METHOD] == method and r[schema.IMAGE] == image])
            items.append(bootstrap_item(f"{method} image {image} spread - floor", [np.stack([loss, loss**2], 1)],
                                        lambda m: _spread(m, rules.location_cv), rules, unit="positions"))
    if not items:
        return missing("F1", F1, F1_RULE, "no rows")
    return combine("F1", F1, F1_RULE, items)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman correlation of (R, m) arrays (average ranks for ties; 0 where a row is constant)."""
    ra, rb = (rankdata(x, axis=1) for x in (a, b))
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    scale = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return np.where(scale > 0, (ra * rb).sum(1) / np.where(scale > 0, scale, 1.0), 0.0)


def box_ranking(rows: Sequence[Mapping[str, Any]], rules: Rules = Rules()) -> Verdict:
    """F2: does the methods' order by mean SSIM match their order by mean box error?"""
    methods = list(dict.fromkeys(r[schema.METHOD] for r in rows))
    if len(methods) < 3:
        return missing("F2", F2, F2_RULE, f"only {len(methods)} method(s): a ranking needs at least 3")
    box = lambda r: (r[schema.FILE], r[schema.SLICE], r["box"])  # noqa: E731
    values = np.concatenate([matrix(rows, box, schema.METHOD, methods, "ssim"),
                             matrix(rows, box, schema.METHOD, methods, "box_mse")], axis=1)
    count = len(methods)
    item = bootstrap_item("Spearman(SSIM, -box MSE)", [values],
                          lambda m: spearman(m[0][:, :count], -m[0][:, count:]), rules, unit="boxes")
    return combine("F2", F2, F2_RULE, [item], numbers={"methods": methods})
