"""Claims R1 and R2 (issue 17, beyond the paper) from the rows of a remedy experiment: a remedy
closes part of the standard's distribution-shift gap (R1), and loses less SSIM than the standard
under its own attack or a physical perturbation (R2). Each is decided from the numbers the
report shows (robustness.remedy_analysis); a remedy experiment decides the one its threat allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mrirobust import schema
from mrirobust.findings.verdicts import (
    HOLDS,
    INCONCLUSIVE,
    Item,
    Rules,
    Verdict,
    bootstrap_item,
    combine,
    missing,
)
from mrirobust.robustness import remedy_analysis as R

R1 = "each remedy closes part of the distribution-shift gap of the standard method"
R1_RULE = ("per remedy: the fraction of the standard's SSIM gap it closes, (remedy P->Q - standard P->Q) / "
           "(standard Q->Q - standard P->Q), means over the same target images, paired CI over images; holds if "
           "its CI lies above 0 for every remedy, fails if below 0 for one; inconclusive where the standard's gap "
           "(Q->Q - P->Q) has no CI above 0: there is no gap to close")
R2 = "each remedy loses less SSIM than the standard under its own attack (or a perturbation) at the largest level"
R2_RULE = ("per remedy and threat (its own attack; each perturbation kind) at the largest eps or severity: the "
           "standard's SSIM loss (clean - perturbed) minus the remedy's, paired CI over images; holds if its CI "
           "lies above 0 for every remedy and threat, fails if below 0 for one")

Rows = Sequence[Mapping[str, Any]]


def gap_closed(rows: Rows, rules: Rules = Rules()) -> Verdict | None:
    """R1 from a remedy experiment against a shift (None: the rows measure another threat)."""
    shifted = [r for r in R.quality(rows) if "condition" in r]
    if not shifted:
        return None if R.quality(rows) else missing("R1", R1, R1_RULE, "no successful rows")
    metric = schema.ssim_column(shifted)
    domains = R.shift_name(shifted)
    items = []
    for remedy in R.remedies(shifted):
        matrix = R.paired(shifted, R.gap_arms(remedy), metric)
        gap = bootstrap_item(f"{R.standard(shifted)}'s {domains} gap", [matrix], R.second_minus_first, rules)
        closed = bootstrap_item(f"{remedy}: fraction of the {domains} gap closed", [matrix], R.gap_closed, rules)
        if gap.verdict != HOLDS:
            gap_text = "no CI" if gap.estimate is None else f"{gap.estimate:.4g} [{gap.low:.4g}, {gap.high:.4g}]"
            closed = Item(closed.what, INCONCLUSIVE, closed.estimate, closed.low, closed.high, closed.n,
                          note=f"no gap to close: the standard's SSIM gap is {gap_text}")
        items.append(closed)
    return combine("R1", R1, R1_RULE, items, numbers=_seconds(rows))


def smaller_loss(rows: Rows, rules: Rules = Rules()) -> Verdict | None:
    """R2 from a remedy experiment against attacks or perturbations (None: against a shift)."""
    ok = R.quality(rows)
    found = R.threats(ok)
    if not found:
        return None if ok else missing("R2", R2, R2_RULE, "no successful rows")
    loss = schema.loss_column(schema.ssim_column(ok))
    standard = R.standard(ok)
    items = []
    for threat, levels in found:
        level = levels[-1]
        for remedy in R.remedies(ok):
            matrix = R.paired(ok, [R.level_arm(threat, level, remedy), R.level_arm(threat, level, standard)], loss)
            what = f"{threat} at {level:g}: {standard}'s SSIM loss - {remedy}'s"
            items.append(bootstrap_item(what, [matrix], R.second_minus_first, rules))
    return combine("R2", R2, R2_RULE, items, numbers=_seconds(rows))


def _seconds(rows: Rows) -> dict[str, dict[str, float]]:
    """Each method's test-time cost, shown with the verdict next to the gain."""
    return {"test seconds per slice": {r[schema.METHOD]: r["seconds_per_slice"] for r in R.costs(rows)}}
