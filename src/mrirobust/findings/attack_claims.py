"""Claims A1-A3 (paper section 4) from the rows of an attack experiment, at its largest eps.

Every statistic is a difference of mean losses (clean - perturbed for SSIM and PSNR: positive is
worse) over the same images, so the bootstrap resamples images and keeps the pairing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mrirobust import schema
from mrirobust.findings.verdicts import Rules, Verdict, bootstrap_item, combine, matrix, missing

RANDOM = "random"  # the `attacked` label of the random control (experiments.attack.RANDOM)
CLASSICAL_FAMILIES = ("l1", "untrained")  # A3: methods fitted to each measurement without training data
TRAINED_FAMILY = "trained"

A1 = "each attacked method is hurt most by its own perturbation"
A1_RULE = ("per method and metric (SSIM, PSNR) at the largest eps: own-attack loss minus the largest mean loss "
           "under another method's attack; holds if its CI lies above 0 for every method and metric")
A2 = "the adversarial loss is far above the loss from random noise of the same norm"
A2_RULE = ("per attacked method and metric at the largest eps: own-attack loss minus FAR x the random-noise loss "
           "(FAR = rules.far; a random loss below 0, noise that raised the score, counts as 0); holds if its CI lies "
           "above 0 for every method and metric")
A3 = "l1 and the un-trained decoders are no more robust to attacks than the trained networks"
A3_RULE = ("per metric at the largest eps, each method under its own attack: the least-hurt l1/un-trained "
           "method's loss minus the trained networks' mean loss; holds if its CI lies above 0, fails below")


def _image(row: Mapping[str, Any]) -> tuple[str, int]:
    return row[schema.FILE], row[schema.SLICE]


def _largest(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    ok = [r for r in rows if r[schema.STATUS] == "ok"]
    eps = max((r["eps"] for r in ok), default=0)
    return [r for r in ok if r["eps"] == eps] if eps > 0 else []


def _losses(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """{"SSIM": its loss column, "PSNR": ...} for the metrics the rows carry."""
    found: dict[str, str] = {}
    for column in schema.metric_columns(list(rows[0])):
        family = schema.metric_family(column).upper()
        if family in ("SSIM", "PSNR") and family not in found and schema.loss_column(column) in rows[0]:
            found[family] = schema.loss_column(column)
    return found


def _attacked(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    evaluated = {r["evaluated"] for r in rows}
    return [a for a in dict.fromkeys(r["attacked"] for r in rows) if a != RANDOM and a in evaluated]


def own_attack_margin(rows: Sequence[Mapping[str, Any]], rules: Rules = Rules()) -> Verdict:
    """A1: per method and metric, own-attack loss minus the worst other attack's (positive: hurt most by its own)."""
    chosen = _largest(rows)
    if not chosen:
        return missing("A1", A1, A1_RULE, "no successful rows at an eps above 0")
    attacked = _attacked(chosen)
    if len(attacked) < 2:
        return missing("A1", A1, A1_RULE, f"only {len(attacked)} attacked method(s): nothing to compare")
    items = []
    for victim in attacked:
        others = [a for a in attacked if a != victim]
        mine = [r for r in chosen if r["evaluated"] == victim]
        for metric, column in _losses(chosen).items():
            values = matrix(mine, _image, "attacked", [victim, *others], column)
            items.append(bootstrap_item(f"{victim} {metric} own - worst other", [values],
                                        lambda m: m[0][:, 0] - m[0][:, 1:].max(axis=1), rules))
    return combine("A1", A1, A1_RULE, items, numbers={"mean SSIM loss": mean_losses(chosen)})


def adversarial_vs_random(rows: Sequence[Mapping[str, Any]], rules: Rules = Rules()) -> Verdict:
    """A2: per attacked method and metric, own-attack loss minus `rules.far` times the random loss,
    floored at 0 per image: where noise raises SSIM (it can, on a blurred reconstruction: SSIM's
    contrast term rewards added variance), an attack that raises it less must not count as "far
    above" it."""
    chosen = _largest(rows)
    attacked = _attacked(chosen)
    if not attacked or not any(r["attacked"] == RANDOM for r in chosen):
        return missing("A2", A2, A2_RULE, "needs an attacked method and the random control at an eps > 0")
    items = []
    for method in attacked:
        mine = [r for r in chosen if r["evaluated"] == method]
        for metric, column in _losses(chosen).items():
            values = matrix(mine, _image, "attacked", [method, RANDOM], column)
            items.append(bootstrap_item(f"{method} {metric} own - {rules.far:g} x random", [values],
                                        lambda m: m[0][:, 0] - rules.far * np.maximum(m[0][:, 1], 0), rules))
    return combine("A2", A2, A2_RULE, items)


def classical_vs_trained(rows: Sequence[Mapping[str, Any]], rules: Rules = Rules()) -> Verdict:
    """A3: the least-hurt classical method (l1, un-trained) against the trained networks' mean, own attacks."""
    chosen = [r for r in _largest(rows) if r["attacked"] == r["evaluated"]]
    if chosen and "evaluated_family" not in chosen[0]:
        return missing("A3", A3, A3_RULE, "the rows name no method family (an older mrirobust)")
    family = {r["evaluated"]: r["evaluated_family"] for r in chosen}
    classical = [m for m, f in family.items() if f in CLASSICAL_FAMILIES]
    trained = [m for m, f in family.items() if f == TRAINED_FAMILY]
    if not classical or not trained:
        return missing("A3", A3, A3_RULE,
                       f"needs an l1/un-trained and a trained method under their own attacks (found {classical} "
                       f"and {trained})")
    count = len(classical)
    items = [bootstrap_item(f"{metric} min(l1/un-trained) - mean(trained)",
                            [matrix(chosen, _image, "evaluated", classical + trained, column)],
                            lambda m: m[0][:, :count].min(axis=1) - m[0][:, count:].mean(axis=1), rules)
             for metric, column in _losses(chosen).items()]
    return combine("A3", A3, A3_RULE, items, numbers={"classical": classical, "trained": trained})


def mean_losses(chosen: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean SSIM loss per (attacked -> evaluated) of rows at one eps: the numbers behind A1."""
    column = schema.loss_column(schema.ssim_column(chosen))
    pairs = dict.fromkeys((r["attacked"], r["evaluated"]) for r in chosen)
    return {f"{a} -> {e}": float(np.mean([r[column] for r in chosen if (r["attacked"], r["evaluated"]) == (a, e)]))
            for a, e in pairs}
