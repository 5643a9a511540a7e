"""The paper's claims as verdicts: rows in, verdicts out, pure (no files, no store).

Layer: above report/ (the shift claims reuse the report's fits, so a verdict and the figure it
summarises cannot disagree) and below study/, which reads the store, calls `assess` and writes
findings.json; the report receives the verdicts as plain dicts through its ReportSource.

    from mrirobust.findings import JobRows, assess
    verdicts = assess([JobRows("attack", "attack", rows)])   # -> [Verdict] for A1..F2, P1, R1, R2
    print("\n".join(v.line() for v in verdicts))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import mrirobust
from mrirobust.findings import attack_claims as attack
from mrirobust.findings import feature_claims as feature
from mrirobust.findings import perturb_claims as perturb
from mrirobust.findings import remedy_claims as remedy
from mrirobust.findings import shift_claims as shift
from mrirobust.findings.verdicts import FAILS, HOLDS, INCONCLUSIVE, Rules, Verdict, missing

__all__ = ["CLAIMS", "FAILS", "HOLDS", "INCONCLUSIVE", "JobRows", "Rules", "Verdict", "assess", "as_json"]


@dataclass(frozen=True)
class JobRows:
    """One finished experiment: its name, kind, rows and (loaded only when a claim needs them) artefacts."""

    name: str
    kind: str
    rows: Sequence[Mapping[str, Any]]
    artefacts: Callable[[], Mapping[str, Any]] = field(default=dict)


Decide = Callable[[JobRows, Rules], Verdict | None]

# claim -> (the experiment kind it is decided from, its statement, how it is decided; None: this
# experiment of the kind does not decide it, e.g. a remedy experiment against a shift and R2)
CLAIMS: dict[str, tuple[str, str, Decide]] = {
    "A1": ("attack", attack.A1, lambda job, rules: attack.own_attack_margin(job.rows, rules)),
    "A2": ("attack", attack.A2, lambda job, rules: attack.adversarial_vs_random(job.rows, rules)),
    "A3": ("attack", attack.A3, lambda job, rules: attack.classical_vs_trained(job.rows, rules)),
    "S1": ("dataset_shift", shift.S1, lambda job, rules: shift.linear_shift("S1", job.rows, rules)),
    "S2": ("anatomy_shift", shift.S2, lambda job, rules: shift.linear_shift("S2", job.rows, rules)),
    "S3": ("hard_shift", shift.S3, lambda job, rules: shift.hard_shift(job.rows, job.artefacts(), rules)),
    "F1": ("heatmap", feature.F1, lambda job, rules: feature.location_dependence(job.rows, rules)),
    "F2": ("annotated", feature.F2, lambda job, rules: feature.box_ranking(job.rows, rules)),
    "P1": ("perturb", perturb.P1, lambda job, rules: perturb.fastest_degradation(job.rows, rules)),
    "R1": ("remedy", remedy.R1, lambda job, rules: remedy.gap_closed(job.rows, rules)),
    "R2": ("remedy", remedy.R2, lambda job, rules: remedy.smaller_loss(job.rows, rules)),
}


def assess(jobs: Sequence[JobRows], rules: Rules = Rules()) -> list[Verdict]:
    """Every claim's verdict, one per experiment of its kind (in the jobs' order), or one
    inconclusive verdict where the study has no such experiment."""
    verdicts = []
    for claim, (kind, statement, decide) in CLAIMS.items():
        mine = [job for job in jobs if job.kind == kind and job.rows]
        decided = [(job, verdict) for job in mine if (verdict := _decided(claim, statement, decide, job, rules))]
        if not mine:
            verdicts.append(missing(claim, statement, "", f"no finished {kind} experiment in the study"))
        elif not decided:
            verdicts.append(missing(claim, statement, "", f"no {kind} experiment of the study measures it"))
        for job, verdict in decided:
            verdicts.append(replace(verdict, experiment=job.name) if len(decided) > 1 else verdict)
    return verdicts


def _decided(claim: str, statement: str, decide: Decide, job: JobRows, rules: Rules) -> Verdict | None:
    try:
        return decide(job, rules)
    except KeyError as error:  # rows of an older layout: the claim cannot be read from them
        return missing(claim, statement, "", f"the {job.kind} rows lack the column {error}")


def as_json(verdicts: Sequence[Verdict], rules: Rules = Rules()) -> dict[str, Any]:
    """The content of findings.json: the rules' thresholds and every verdict with its line."""
    return {"mrirobust_version": mrirobust.__version__, "rules": asdict(rules),
            "verdicts": [v.as_dict() for v in verdicts]}
