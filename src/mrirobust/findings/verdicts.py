"""Verdicts and the decision rules they share.

A claim is decided from a statistic whose sign is the claim: positive where the claim holds. Its
paired bootstrap CI over images (`metrics.paired_bootstrap_ci`) decides: the claim holds when the
whole interval lies above zero, fails when it lies below, and is inconclusive when it covers zero
or when the rows are too few to compute it. A claim checked on several items (methods, metrics,
panels) fails when one item fails, holds when all hold, and is inconclusive otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mrirobust.metrics import paired_bootstrap_ci

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"


@dataclass(frozen=True)
class Rules:
    """The thresholds of the decision rules (one place, recorded in findings.json)."""

    confidence: float = 0.95
    resamples: int = 4000  # bootstrap resamples per statistic
    seed: int = 0
    far: float = 2.0  # A2: "far above" = more than this many times the random loss
    min_r_squared: float = 0.8  # S1-S3: "linear"
    location_cv: float = 0.25  # F1: the noise floor of the spread across positions (std / mean)


@dataclass(frozen=True)
class Item:
    """One decided comparison: what it is, its verdict, the statistic with CI and n."""

    what: str
    verdict: str
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = 0
    unit: str = "images"  # what n counts: images, models, positions, boxes
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict, the rule that decided it, its headline item and all items behind it."""

    claim: str
    statement: str
    verdict: str
    rule: str
    headline: Item
    items: tuple[Item, ...] = ()
    experiment: str = ""
    numbers: Mapping[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """One line: claim, verdict, the deciding statistic with its CI and n."""
        h = self.headline
        where = f" [{self.experiment}]" if self.experiment else ""
        if h.estimate is None:
            what = f"{h.what}: " if h.what else ""
            return f"{self.claim} {self.verdict}{where}: {self.statement} -- {what}{h.note} (n {h.n} {h.unit})"
        return (f"{self.claim} {self.verdict}{where}: {self.statement} -- {h.what} {h.estimate:.4g} "
                f"[{h.low:.4g}, {h.high:.4g}] (n {h.n} {h.unit}){f'; {h.note}' if h.note else ''}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "line": self.line()}


def decide(low: float, high: float) -> str:
    """Above zero: holds; below: fails; covering zero: inconclusive."""
    return HOLDS if low > 0 else FAILS if high < 0 else INCONCLUSIVE


def bootstrap_item(what: str, samples: Sequence[np.ndarray], statistic: Callable[[list[np.ndarray]], np.ndarray],
                   rules: Rules, unit: str = "images") -> Item:
    """The item decided by `statistic` (positive: the claim) over `samples` (rows: `unit`s)."""
    n = min(len(s) for s in samples) if samples else 0
    if n < 2:
        return Item(what, INCONCLUSIVE, n=n, unit=unit, note=f"only {n} {unit}: no interval")
    value, low, high = paired_bootstrap_ci(samples, statistic, confidence=rules.confidence,
                                           n_resamples=rules.resamples, seed=rules.seed)
    return Item(what, decide(low, high), value, low, high, n, unit)


def combine(claim: str, statement: str, rule: str, items: Sequence[Item], **extra: Any) -> Verdict:
    """A verdict over items: fails if one fails, holds if all hold; the headline is the first item
    with the overall verdict, the weakest (lowest estimate) among those."""
    if not items:
        return missing(claim, statement, rule, "nothing to compare in the rows", **extra)
    verdicts = [i.verdict for i in items]
    overall = FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE
    chosen = [i for i in items if i.verdict == overall]
    headline = min(chosen, key=lambda i: (i.estimate is not None, i.estimate if i.estimate is not None else 0.0))
    return Verdict(claim, statement, overall, rule, headline, tuple(items), **extra)


def missing(claim: str, statement: str, rule: str, why: str, **extra: Any) -> Verdict:
    """An inconclusive verdict for rows that cannot decide the claim, saying why."""
    return Verdict(claim, statement, INCONCLUSIVE, rule, Item("", INCONCLUSIVE, note=why), (), **extra)


def matrix(rows: Sequence[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any], column: str,
           columns: Sequence[Any], value: str) -> np.ndarray:
    """(units, len(columns)) values: one row per unit (e.g. image) holding a value for every column
    label (e.g. method), units lacking one dropped, in order of appearance."""
    found: dict[Any, dict[Any, float]] = {}
    for row in rows:
        if row[column] in columns and row.get(value) is not None:
            found.setdefault(key(row), {})[row[column]] = float(row[value])
    full = [[cells[c] for c in columns] for cells in found.values() if all(c in cells for c in columns)]
    return np.asarray(full, dtype=np.float64).reshape(len(full), len(columns))
