"""The remedy kind (issue 17): against a shift, an attack and a perturbation through the study runner
on tiny data with cheap method pairs; the gap-closed arithmetic by hand; R1/R2 verdicts on
constructed rows; the report's figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mrirobust import schema
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError
from mrirobust.experiments.remedy import RemedySpec
from mrirobust.experiments.spec import parse, yaml_where
from mrirobust.findings import FAILS, HOLDS, INCONCLUSIVE, JobRows, assess
from mrirobust.findings.remedy_claims import gap_closed as r1
from mrirobust.findings.remedy_claims import smaller_loss as r2
from mrirobust.report.registry import kind_report
from mrirobust.robustness import remedy_analysis as R
from mrirobust.study.runner import run_study
from mrirobust.study.store import Store

SSIM = "ssim[fastmri,volume-max]"
UNET = {"name": "unet-small", "chans": 4, "num_pool_layers": 2,
        "train": {"data": "knee", "epochs": 1, "batch_size": 2, "max_train_slices": 4}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("remedy")
    synthesize(root, [SynthConfig(anatomy, split=split, num_volumes=n, slices_per_volume=s, num_coils=4,
                                  shape=(48, 48)) for anatomy in ("knee", "brain")
                      for split, n, s in (("train", 2, 2), ("val", 1, 1), ("test", 1, 3))])
    return root


def _study(data: Path, **experiments) -> dict:
    return {"name": "remedy", "mask": {"type": "random", "acceleration": 4, "center_fraction": 0.17},
            "data": {"knee": str(data / "knee"), "brain": str(data / "brain")},
            "methods": {"zero-filled": "zero-filled", "sense": "sense", "unet": UNET},
            "experiments": experiments}


def _rows(out: Path) -> dict[str, list[dict]]:
    store = Store(out / "store")
    return {job["name"]: store.rows(job["key"]) for job in store.plan()["jobs"] if job["kind"] == "remedy"}


def test_remedy_against_shift_attack_and_perturbation_through_the_study(data, tmp_path):
    experiments = {
        "gap": {"kind": "remedy", "against": "shift", "standard": "unet", "remedies": ["sense"], "source": "knee",
                "target": "brain", "images": 3},
        "attacked": {"kind": "remedy", "against": "attack", "standard": "zero-filled", "remedies": ["sense"],
                     "data": "knee", "eps": [0, 0.05], "images": 3, "attack": {"steps": 3}},
        "moved": {"kind": "remedy", "against": "perturb", "standard": "zero-filled", "remedies": ["sense"],
                  "data": "knee", "kinds": ["noise", "sampling"], "images": 3}}
    out = run_study(_study(data, **experiments), tmp_path / "out", device="cpu", progress=False, report=True)
    rows = _rows(out)
    # shift: the standard trained on P (knee) and on Q (brain), the remedy, each on the 3 target images
    gap = R.quality(rows["gap"])
    arms = {(r["role"], r["condition"], r["trained_on"]) for r in gap}
    assert arms == {("standard", "shifted", "knee"), ("standard", "in-domain", "brain"), ("remedy", "shifted", "-")}
    assert all(r["evaluated_on"] == "brain" for r in gap) and len(gap) == 9
    matrix = R.paired(gap, R.gap_arms("sense"), SSIM)
    assert matrix.shape == (3, 3)
    # each method under its own attack only, no random control; eps 0 is the clean score
    attacked = R.quality(rows["attacked"])
    assert {(r["attacked"], r["evaluated"]) for r in attacked} == {("zero-filled", "zero-filled"), ("sense", "sense")}
    assert len(attacked) == 2 * 2 * 3
    assert all(r[SSIM] == r[schema.clean_column(SSIM)] for r in attacked if r["eps"] == 0)
    # perturbations: the sweeps only (no "more samples" part), 5 severities
    moved = R.quality(rows["moved"])
    assert {r["part"] for r in moved} == {"sweep"} and len(moved) == 2 * 5 * 2 * 3
    # a cost row per method: seconds per slice measured on the run's device
    for name in rows:
        cost = R.costs(rows[name])
        assert [(r[schema.METHOD], r["role"]) for r in cost][0][1] == "standard" and len(cost) == 2
        assert all(r["seconds_per_slice"] > 0 and r["device"] == "cpu" for r in cost)
    # training time: the unet standard's run as its checkpoint recorded it; sense has no weights
    trained = {r[schema.METHOD]: r["train_seconds"] for r in R.costs(rows["gap"])}
    assert trained["unet"] > 0 and trained["sense"] is None
    # the verdicts: one R1 (from the shift experiment), two R2 (attack, perturb), each with n 3
    findings = json.loads((out / "findings.json").read_text())["verdicts"]
    claims = [(v["claim"], v["experiment"]) for v in findings if v["claim"] in ("R1", "R2")]
    assert claims == [("R1", ""), ("R2", "attacked"), ("R2", "moved")]
    assert all(v["headline"]["n"] == 3 for v in findings if v["claim"] in ("R1", "R2"))
    assert all(set(v["numbers"]["test seconds per slice"]) == {"zero-filled", "sense"}
               for v in findings if v["claim"] == "R2")
    page = (out / "report" / "index.html").read_text()
    figures = sorted(p.name for p in (out / "report" / "figures").glob("*remedy*.png"))
    assert len([f for f in figures if f.endswith("remedy_gap.png")]) == 1
    assert len([f for f in figures if f.endswith("remedy_ssim_curves.png")]) == 2
    assert "Shift gap closed" in page and "s / slice" in page and "not recorded" in page
    assert f"{trained['unet']:.4g} s" in page


def _gap_rows(shifted: list[float], in_domain: list[float], remedy: list[float]) -> list[dict]:
    rows = []
    for role, method, condition, values in (("standard", "unet", "shifted", shifted),
                                            ("standard", "unet", "in-domain", in_domain),
                                            ("remedy", "ttt", "shifted", remedy)):
        rows += [{"role": role, schema.METHOD: method, "standard": "unet", "condition": condition,
                  "trained_on": "knee" if condition == "shifted" else "brain", "evaluated_on": "brain",
                  schema.FILE: "f", schema.SLICE: i, SSIM: v} for i, v in enumerate(values)]
    return rows


def test_gap_closed_is_the_ratio_of_mean_differences():
    shifted, in_domain, remedy = [0.5, 0.6, 0.55, 0.7], [0.8, 0.9, 0.7, 0.9], [0.7, 0.8, 0.6, 0.75]
    matrix = R.paired(_gap_rows(shifted, in_domain, remedy), R.gap_arms("ttt"), SSIM)
    by_hand = (np.mean(remedy) - np.mean(shifted)) / (np.mean(in_domain) - np.mean(shifted))  # 0.2 / 0.2375
    found = R.estimate(matrix, R.gap_closed, resamples=500)
    assert found.value == pytest.approx(by_hand) and found.n == 4
    assert found.low <= found.value <= found.high
    assert R.estimate(matrix[:1], R.gap_closed).n == 1 and math.isnan(R.estimate(matrix[:1], R.gap_closed).low)


def test_r1_holds_fails_or_is_inconclusive():
    base, top = [0.5, 0.6, 0.55, 0.7, 0.62], [0.8, 0.9, 0.85, 0.95, 0.9]
    closes = r1(_gap_rows(base, top, [b + 0.2 for b in base]))
    assert closes.verdict == HOLDS and closes.headline.estimate == pytest.approx(0.2 / (np.mean(top) - np.mean(base)))
    assert "fraction of the knee->brain gap closed" in closes.line()
    assert r1(_gap_rows(base, top, [b - 0.1 for b in base])).verdict == FAILS
    noisy = r1(_gap_rows(base, top, [b + d for b, d in zip(base, (0.3, -0.3, 0.2, -0.25, 0.1))]))
    assert noisy.verdict == INCONCLUSIVE
    no_gap = r1(_gap_rows(base, [b + d for b, d in zip(base, (0.1, -0.1, 0.05, -0.05, 0))], base))
    assert no_gap.verdict == INCONCLUSIVE and "no gap to close" in no_gap.line()
    assert r2(_gap_rows(base, top, base)) is None  # a shift experiment does not decide R2


def _attack_rows(standard_loss: list[float], remedy_loss: list[float]) -> list[dict]:
    rows = []
    for role, method, losses in (("standard", "unet", standard_loss), ("remedy", "jitter", remedy_loss)):
        for eps, scale in ((0, 0.0), (0.08, 1.0)):
            rows += [{"role": role, schema.METHOD: method, "standard": "unet", "eps": eps, schema.FILE: "f", schema.IMAGE: i,
                      schema.SLICE: i, SSIM: 0.9 - scale * v, schema.loss_column(SSIM): scale * v}
                     for i, v in enumerate(losses)]
    return rows


def test_r2_on_constructed_attack_rows_and_only_where_measured():
    big, small = [0.2, 0.25, 0.3, 0.22], [0.05, 0.04, 0.06, 0.05]
    holds = r2(_attack_rows(big, small))
    assert holds.verdict == HOLDS and "own attack at 0.08" in holds.line()
    assert holds.headline.estimate == pytest.approx(np.mean(big) - np.mean(small))
    assert r2(_attack_rows(small, big)).verdict == FAILS
    assert r2(_attack_rows(big, [0.4, 0.05, 0.35, 0.1])).verdict == INCONCLUSIVE
    assert r1(_attack_rows(big, small)) is None
    verdicts = {v.claim: v for v in assess([JobRows("a", "remedy", _attack_rows(big, small))])}
    assert verdicts["R2"].verdict == HOLDS and "measures it" in verdicts["R1"].line()
    assert "no finished remedy experiment" in {v.claim: v for v in assess([])}["R1"].line()


def test_report_draws_gap_bars_and_gain_tables(tmp_path):
    rows = _gap_rows([0.5, 0.6, 0.55], [0.8, 0.9, 0.7], [0.7, 0.8, 0.6])
    report = kind_report("remedy")
    drawn = report.figures(rows, {"against": "shift"}, tmp_path, "x-")
    assert [p.name for p in drawn] == ["x-remedy_gap.png"] and drawn[0].stat().st_size > 0
    assert "gap closed" in report.text(rows, {})
    attack = _attack_rows([0.2, 0.25, 0.3], [0.05, 0.04, 0.06])
    assert "remedy_ssim_curves" in report.figures(attack, {}, tmp_path, "")[0].name
    assert "own attack  0.08" in report.text(attack, {})


def test_bad_specs_are_named():
    where = yaml_where("experiments.r")
    with pytest.raises(ConfigError, match="experiments.r.remedies: unet listed twice"):
        parse(RemedySpec, {"standard": "unet", "remedies": ["unet"], "data": "knee"}, where)
    with pytest.raises(ConfigError, match="experiments.r.target: missing"):
        parse(RemedySpec, {"standard": "unet", "remedies": ["t"], "against": "shift", "source": "knee"}, where)
    with pytest.raises(ConfigError, match="experiments.r.eps"):
        parse(RemedySpec, {"standard": "unet", "remedies": ["t"], "data": "knee", "eps": [2.0]}, where)


def test_a_standard_without_a_target_version_is_refused_before_compute(data, tmp_path):
    experiment = {"kind": "remedy", "against": "shift", "standard": "zero-filled", "remedies": ["sense"],
                  "source": "knee", "target": "brain"}
    with pytest.raises(ConfigError, match="experiments.gap.standard: 'zero-filled' is neither trained, tuned nor given"):
        run_study(_study(data, gap=experiment), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "store").exists()


def test_remedy_against_perturbations_compares_each_methods_own_worst_case(data, tmp_path):
    experiment = {"kind": "remedy", "against": "perturb", "standard": "zero-filled", "remedies": ["sense"],
                  "data": "knee", "kinds": ["noise"], "images": 2, "worst_case": True,
                  "search": {"trials": 2, "refine": 0, "attack_steps": 2}}
    out = run_study(_study(data, worst=experiment), tmp_path / "out", device="cpu", progress=False)
    rows = _rows(out)["worst"]
    assert R.threats(rows) == [("noise", [0.0, 0.25, 0.5, 0.75, 1.0]), ("noise (worst case)", [1.0])]
    worst = R.paired(rows, [R.level_arm("noise (worst case)", 1.0, m) for m in ("zero-filled", "sense")], SSIM)
    swept = R.paired(rows, [R.level_arm("noise", 1.0, m) for m in ("zero-filled", "sense")], SSIM)
    assert worst.shape == swept.shape == (2, 2)
    assert (worst <= swept + 1e-6).all()  # the search starts from the swept draw: never better than it
    curves = {r["perturbation"] for r in R.curve_rows(rows)}
    assert curves == {"noise", "noise (worst case)"}
    verdict = r2(rows)
    assert [item.what.split(":")[0] for item in verdict.items] == ["noise at 1", "noise (worst case) at 1"]
