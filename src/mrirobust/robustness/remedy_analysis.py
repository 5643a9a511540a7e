"""The numbers of a remedy experiment from its rows (pure): the shift gap a remedy closes and its
gain over the standard under attacks and perturbations, each with a paired bootstrap CI over images.

Rows are as `experiments.remedy` writes them: `role` (standard or remedy), `method`, and against a
shift `condition` (shifted: the standard trained on P or a remedy, evaluated on Q; in-domain: the
standard trained on Q, on Q); against attacks `eps`; against perturbations `perturbation` and
`severity`; cost rows have `part` = cost. The report and the findings both compute from here, so
a verdict and the figure it summarises cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrirobust import schema
from mrirobust.metrics import paired_bootstrap_ci

STANDARD, REMEDY = "standard", "remedy"
SHIFTED, IN_DOMAIN = "shifted", "in-domain"
COST = "cost"
ATTACK = "own attack"  # the threat of the attack mode's rows (each method under its own attack)
WORST_SUFFIX = " (worst case)"

Rows = Sequence[Mapping[str, Any]]
Arm = Mapping[str, Any]  # column values a row must have to belong to the arm
Statistic = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A statistic of paired means over images and its CI (NaN bounds: fewer than 2 images)."""

    value: float
    low: float
    high: float
    n: int


def quality(rows: Rows) -> list[Mapping[str, Any]]:
    """The successful scored rows (not the cost rows)."""
    return [r for r in rows if r.get("part") != COST and r.get(schema.STATUS, "ok") == "ok"]


def costs(rows: Rows) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("part") == COST]


def remedies(rows: Rows) -> list[str]:
    return list(dict.fromkeys(r[schema.METHOD] for r in rows if r["role"] == REMEDY))


def standard(rows: Rows) -> str:
    return next(r["standard"] for r in rows)


def shift_name(rows: Rows) -> str:
    """`P->Q` of a shift's rows (from the standard trained on P); "the" where there is none."""
    return next((f"{r['trained_on']}->{r['evaluated_on']}" for r in rows
                 if r["role"] == STANDARD and r.get("condition") == SHIFTED), "the")


def paired(rows: Rows, arms: Sequence[Arm], metric: str) -> np.ndarray:
    """(images, arms): `metric` of each image in each arm; images lacking an arm dropped."""
    found: dict[Any, dict[int, float]] = {}
    for row in rows:
        value = row.get(metric)
        if value is None or not math.isfinite(float(value)):
            continue
        for j, arm in enumerate(arms):
            if all(row.get(k) == v for k, v in arm.items()):
                found.setdefault((row[schema.FILE], row[schema.SLICE]), {})[j] = float(value)
    full = [[cells[j] for j in range(len(arms))] for cells in found.values() if len(cells) == len(arms)]
    return np.asarray(full, dtype=np.float64).reshape(len(full), len(arms))


def gap_arms(remedy: str) -> list[Arm]:
    """The columns of a gap matrix: the standard P->Q, the standard Q->Q, the remedy P->Q."""
    return [{"role": STANDARD, "condition": SHIFTED}, {"role": STANDARD, "condition": IN_DOMAIN},
            {schema.METHOD: remedy, "condition": SHIFTED}]


def gap_closed(means: list[np.ndarray]) -> np.ndarray:
    """(remedy P->Q - standard P->Q) / (standard Q->Q - standard P->Q) of a gap matrix's means."""
    m = means[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (m[..., 2] - m[..., 0]) / (m[..., 1] - m[..., 0])


def second_minus_first(means: list[np.ndarray]) -> np.ndarray:
    """The second arm's mean minus the first's: of a two-arm matrix the gain remedy - standard, of a
    gap matrix (`gap_arms`) the standard's shift gap Q->Q - P->Q."""
    return means[0][..., 1] - means[0][..., 0]


def threat_of(row: Mapping[str, Any]) -> str:
    """A quality row's threat: the own attack, a perturbation kind's sweep (its name) or its worst case."""
    if "eps" in row:
        return ATTACK
    return f"{row['perturbation']}{WORST_SUFFIX}" if row.get("part") == schema.WORST else row["perturbation"]


def threats(rows: Rows) -> list[tuple[str, list[float]]]:
    """Each threat (`threat_of`) with its levels (eps or severities), in order."""
    found: dict[str, set[float]] = {}
    for row in quality(rows):
        if "eps" in row or "severity" in row:
            found.setdefault(threat_of(row), set()).add(float(row["eps" if "eps" in row else "severity"]))
    return [(threat, sorted(levels)) for threat, levels in found.items()]


def level_arm(threat: str, level: float, method: str) -> Arm:
    """The rows of `method` under `threat` at `level` (eps or severity)."""
    if threat == ATTACK:
        return {schema.METHOD: method, "eps": level}
    if threat.endswith(WORST_SUFFIX):
        return {schema.METHOD: method, "perturbation": threat.removesuffix(WORST_SUFFIX), "severity": level,
                "part": schema.WORST}
    return {schema.METHOD: method, "perturbation": threat, "severity": level, "part": schema.SWEEP}


def curve_rows(rows: Rows) -> list[dict[str, Any]]:
    """Quality rows as quality-vs-severity curves take them, one curve per threat: the attack's eps as
    its severity; the worst cases (one severity) as points apart from the sweep."""
    return [{**r, "perturbation": threat_of(r), "severity": r["eps" if "eps" in r else "severity"]}
            for r in quality(rows)]


def estimate(matrix: np.ndarray, statistic: Statistic, *, confidence: float = 0.95, resamples: int = 4000,
             seed: int = 0) -> Estimate:
    """`statistic` of the matrix's column means with its paired bootstrap CI over its rows (images)."""
    n = len(matrix)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = float(np.asarray(statistic([matrix.mean(axis=0, keepdims=True)])).reshape(-1)[0])
    if n < 2:
        return Estimate(value, math.nan, math.nan, n)
    value, low, high = paired_bootstrap_ci([matrix], statistic, confidence=confidence, n_resamples=resamples,
                                           seed=seed)
    return Estimate(value, low, high, n)
