"""Claim P1 (beyond the paper) from the rows of the perturb experiment: under each physical
perturbation, one method degrades fastest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mrirobust import schema
from mrirobust.findings.verdicts import Item, Rules, Verdict, bootstrap_item, combine, matrix, missing

P1 = "under each physical perturbation one method degrades fastest"
P1_RULE = ("per perturbation kind and image, each method's SSIM loss averaged over the swept severities (the "
           "area under its loss-vs-severity curve over the severity range); the statistic is the area of the "
           "method with the largest mean area minus the largest area among the others, paired CI over images; "
           "holds if its CI lies above 0 for every kind, fails if below 0 for one")


def _areas(rows: Sequence[Mapping[str, Any]], kind: str, methods: list[str], loss: str) -> np.ndarray:
    """(images, methods) area under each method's loss curve over the severities of `kind`."""
    mine = [r for r in rows if r.get("part") == schema.SWEEP and r["perturbation"] == kind
            and r.get(schema.STATUS, "ok") == "ok"]
    severities = sorted({float(r["severity"]) for r in mine})
    if len(severities) < 2:
        return np.zeros((0, len(methods)))
    image = lambda r: (r[schema.FILE], r[schema.SLICE])  # noqa: E731
    per_level = [matrix([r for r in mine if float(r["severity"]) == s], image, schema.METHOD, methods, loss)
                 for s in severities]
    count = min(len(level) for level in per_level)
    curves = np.stack([level[:count] for level in per_level], axis=-1)  # (images, methods, severities)
    span = severities[-1] - severities[0]
    return np.trapezoid(curves, np.asarray(severities), axis=-1) / span


def _margin(worst: int):
    """The statistic: the worst method's mean area minus the largest other method's, per resample
    (samples[0]: (R, methods) resampled means). The worst method is fixed from the full sample, so the
    margin can fall below 0 when another method is as bad (a max over resampled means could not)."""

    def margin(samples: list[np.ndarray]) -> np.ndarray:
        means = samples[0]
        others = np.delete(means, worst, axis=-1)
        return means[..., worst] - others.max(axis=-1)

    return margin


def fastest_degradation(rows: Sequence[Mapping[str, Any]], rules: Rules = Rules()) -> Verdict:
    """P1: per kind, does one method lose clearly more SSIM over the sweep than every other?"""
    sweep = [r for r in rows if r.get("part") == schema.SWEEP]
    if not sweep:
        return missing("P1", P1, P1_RULE, "no sweep rows")
    loss = schema.loss_column(schema.ssim_column(sweep))
    methods = list(dict.fromkeys(r[schema.METHOD] for r in sweep))
    if len(methods) < 2:
        return missing("P1", P1, P1_RULE, f"only {len(methods)} method: nothing to rank")
    items: list[Item] = []
    for kind in dict.fromkeys(r["perturbation"] for r in sweep):
        areas = _areas(sweep, kind, methods, loss)
        worst = int(np.argmax(areas.mean(axis=0))) if len(areas) else 0
        items.append(bootstrap_item(f"{kind}: {methods[worst]} degrades fastest, SSIM-loss area over the next",
                                    [areas], _margin(worst), rules))
    return combine("P1", P1, P1_RULE, items)
