"""The findings layer: every claim's decision rule on synthetic rows whose answer is known (holds,
fails, inconclusive), the paired bootstrap against the plain one, and the report's first section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mrirobust import metrics
from mrirobust.findings import CLAIMS, FAILS, HOLDS, INCONCLUSIVE, JobRows, as_json, assess
from mrirobust.findings.attack_claims import adversarial_vs_random, classical_vs_trained, own_attack_margin
from mrirobust.findings.feature_claims import box_ranking, location_dependence, spearman
from mrirobust.findings.perturb_claims import fastest_degradation
from mrirobust.findings.shift_claims import hard_shift, linear_shift
from mrirobust.report.html import ReportSource, write_report
from mrirobust.robustness.shift_analysis import fit_summary

SSIM, PSNR = "ssim[fastmri,volume-max]", "psnr[volume-max]"
IMAGES = 8
NOISE = np.linspace(-1, 1, IMAGES)  # a fixed, zero-mean per-image jitter


def _attack_rows(losses: dict[tuple[str, str], float], families: dict[str, str], jitter: float = 0.002,
                 images: int = IMAGES) -> list[dict]:
    """Attack rows at eps 0 and 0.05: mean loss `losses[(attacked, evaluated)]`, SSIM and PSNR."""
    rows = []
    noise = np.linspace(-1, 1, images)
    for (attacked, evaluated), loss in losses.items():
        for eps in (0.0, 0.05):
            for i in range(images):
                value = (loss + jitter * noise[i]) if eps else 0.0
                rows.append({"attacked": attacked, "evaluated": evaluated, "eps": eps, "status": "ok",
                             "file": f"f{i}.h5", "slice": 0, "image": i, "evaluated_family": families[evaluated],
                             SSIM: 0.8 - value, f"{SSIM}_loss": value, PSNR: 30 - 100 * value,
                             f"{PSNR}_loss": 100 * value})
    return rows


FAMILIES = {"unet": "trained", "l1": "l1"}


def _two(own: float, other: float, random: float = 0.001) -> dict[tuple[str, str], float]:
    return {("unet", "unet"): own, ("l1", "unet"): other, ("l1", "l1"): own, ("unet", "l1"): other,
            ("random", "unet"): random, ("random", "l1"): random}


def test_a1_own_attack_margin():
    assert own_attack_margin(_attack_rows(_two(0.1, 0.02), FAMILIES)).verdict == HOLDS
    failed = own_attack_margin(_attack_rows(_two(0.02, 0.1), FAMILIES))
    assert failed.verdict == FAILS and failed.headline.estimate == pytest.approx(-0.08 * 100)  # PSNR is worst
    assert len(failed.items) == 4 and failed.headline.n == IMAGES
    assert own_attack_margin(_attack_rows(_two(0.05, 0.05), FAMILIES, jitter=0.02)).verdict == INCONCLUSIVE
    one = own_attack_margin(_attack_rows({("unet", "unet"): 0.1, ("random", "unet"): 0.0}, FAMILIES))
    assert one.verdict == INCONCLUSIVE and "only 1 attacked" in one.line()


def test_a2_adversarial_vs_random():
    assert adversarial_vs_random(_attack_rows(_two(0.1, 0.02, random=0.01), FAMILIES)).verdict == HOLDS
    verdict = adversarial_vs_random(_attack_rows(_two(0.012, 0.02, random=0.01), FAMILIES))
    assert verdict.verdict == FAILS and verdict.headline.estimate == pytest.approx((0.012 - 2 * 0.01) * 100)
    # noise that raises the score (a negative random loss) counts as no loss: the attack must still hurt
    raised = adversarial_vs_random(_attack_rows(_two(-0.02, 0.0, random=-0.04), FAMILIES))
    assert raised.verdict == FAILS and raised.headline.estimate == pytest.approx(-0.02 * 100)
    no_control = {k: v for k, v in _two(0.1, 0.02).items() if k[0] != "random"}
    assert adversarial_vs_random(_attack_rows(no_control, FAMILIES)).verdict == INCONCLUSIVE


def test_a3_classical_vs_trained():
    losses = {("unet", "unet"): 0.05, ("l1", "l1"): 0.2, ("random", "unet"): 0.0, ("random", "l1"): 0.0}
    verdict = classical_vs_trained(_attack_rows(losses, FAMILIES))
    assert verdict.verdict == HOLDS and verdict.numbers == {"classical": ["l1"], "trained": ["unet"]}
    losses.update({("l1", "l1"): 0.01})
    assert classical_vs_trained(_attack_rows(losses, FAMILIES)).verdict == FAILS
    assert classical_vs_trained(_attack_rows(losses, {"unet": "l1", "l1": "l1"})).verdict == INCONCLUSIVE
    few = classical_vs_trained(_attack_rows({**losses, ("l1", "l1"): 0.2}, FAMILIES, images=1))
    assert few.verdict == INCONCLUSIVE and few.headline.n == 1


def _shift_rows(kind: str, x: list[float], slope: float, intercept: float, least: int = 5) -> list[dict]:
    """Per model (two groups), in/normal SSIM around x and out/hard around slope * x + intercept."""
    roles = ("in", "out") if kind == "dataset_shift" else ("normal", "hard")
    rows = []
    for m, mean in enumerate(x):
        scatter = 0.004 * (-1) ** (m // 2)  # off the line, so the slope has an interval
        for role, value in ((roles[0], mean), (roles[1], slope * mean + intercept + scatter)):
            for i in range(IMAGES):
                rows.append({"shift": kind, "role": role, "model": f"m{m}", "group": f"g{m % 2}",
                             "trained_on": "knee", "evaluated_on": "knee" if role == "in" else "brain",
                             "file": f"{role}{i}.h5", "slice": 0, SSIM: value + 0.01 * NOISE[i],
                             "min_fit_points": least})
    return rows


X = [0.6, 0.65, 0.7, 0.75, 0.8, 0.85]


def test_s1_s2_linear_with_equal_drops():
    holds = linear_shift("S1", _shift_rows("dataset_shift", X, 1.0, -0.1))
    assert holds.verdict == HOLDS and holds.headline.unit == "models" and holds.headline.n == 6
    assert holds.headline.low < 1 < holds.headline.high
    fails = linear_shift("S1", _shift_rows("dataset_shift", X, 0.4, 0.3))
    assert fails.verdict == FAILS and fails.headline.estimate == pytest.approx(0.4)
    few = linear_shift("S2", _shift_rows("dataset_shift", X[:4], 1.0, -0.1))
    assert few.verdict == INCONCLUSIVE and "inconclusive: only 4 models" in few.line()


def test_s3_hard_set_drops_and_low_frequency():
    rows = _shift_rows("hard_shift", X, 1.0, -0.1)
    low = [{"set": role, "low_frequency_proportion": base + 0.01 * n}
           for role, base in (("normal", 0.5), ("hard", 0.3)) for n in NOISE]
    verdict = hard_shift(rows, {"frequency": low})
    assert verdict.verdict == HOLDS and {i.verdict for i in verdict.items} == {HOLDS} and len(verdict.items) == 4
    swapped = [{**r, "set": "hard" if r["set"] == "normal" else "normal"} for r in low]
    assert hard_shift(rows, {"frequency": swapped}).verdict == FAILS
    rising = _shift_rows("hard_shift", X, 1.0, 0.05)  # the "hard" set is easier: no group drops
    assert hard_shift(rising, {}).verdict == FAILS
    assert hard_shift(_shift_rows("hard_shift", X[:3], 1.0, -0.1), {}).verdict == INCONCLUSIVE  # 3 models


def test_fit_summary_needs_min_points_and_gives_intercept_ci():
    table = [{"x": x, "y": x - 0.1 + 0.001 * (i % 2), "drop": 0.1, "group": "g"} for i, x in enumerate(X)]
    summary = fit_summary(table)
    fit = summary["fit"]
    assert fit["n"] == 6 and fit["intercept_ci"][0] < -0.1 < fit["intercept_ci"][1]
    assert fit_summary(table[:4]) == {"fit": None, "fit_note": "inconclusive: only 4 models",
                                      "drop_per_group": {"g": 0.1}}
    assert fit_summary(table[:4], min_points=3)["fit"]["n"] == 4


def _heatmap_rows(losses: list[float], images: int = 2) -> list[dict]:
    return [{"method": "zero-filled", "image": i, "loss": value} for i in range(images) for value in losses]


def test_f1_location_dependence():
    spread = list(np.geomspace(0.1, 10, 40))  # std / mean far above the 0.25 floor
    assert location_dependence(_heatmap_rows(spread)).verdict == HOLDS
    flat = list(1 + 0.01 * np.linspace(-1, 1, 40))
    verdict = location_dependence(_heatmap_rows(flat))
    assert verdict.verdict == FAILS and verdict.headline.unit == "positions" and verdict.headline.n == 40
    assert location_dependence(_heatmap_rows([1.0])).verdict == INCONCLUSIVE


def _box_rows(ssim: list[float], box_mse: list[float], boxes: int = 10) -> list[dict]:
    return [{"method": f"m{m}", "file": f"f{b}.h5", "slice": 0, "box": 0, "ssim": s + 0.005 * NOISE[b % IMAGES],
             "box_mse": e * (1 + 0.05 * NOISE[b % IMAGES])}
            for m, (s, e) in enumerate(zip(ssim, box_mse)) for b in range(boxes)]


def test_f2_box_ranking_and_spearman():
    assert spearman(np.array([[1.0, 2, 3], [1, 1, 1]]), np.array([[3.0, 2, 1], [1, 2, 3]])).tolist() == [-1.0, 0.0]
    assert box_ranking(_box_rows([0.6, 0.7, 0.8, 0.9], [4, 3, 2, 1])).verdict == HOLDS
    fails = box_ranking(_box_rows([0.6, 0.7, 0.8, 0.9], [1, 2, 3, 4]))
    assert fails.verdict == FAILS and fails.headline.estimate == pytest.approx(-1.0) and fails.headline.n == 10
    assert box_ranking(_box_rows([0.6, 0.7], [2, 1])).verdict == INCONCLUSIVE


def _perturb_rows(slopes: dict[str, float], jitter: float = 0.002) -> list[dict]:
    """Sweep rows of one kind: SSIM loss = slope x severity (+ a per-image jitter) per method."""
    return [{"part": "sweep", "perturbation": "motion", "severity": s, "method": m, "status": "ok",
             "file": f"f{i}.h5", "slice": 0, "image": i, SSIM: 0.8 - slope * s,
             f"{SSIM}_loss": slope * s + jitter * NOISE[i] * s}
            for m, slope in slopes.items() for s in (0.0, 0.25, 0.5, 0.75, 1.0) for i in range(IMAGES)]


def test_p1_one_method_degrades_fastest():
    held = fastest_degradation(_perturb_rows({"unet": 0.3, "l1": 0.1, "zero-filled": 0.05}))
    assert held.verdict == HOLDS and "unet degrades fastest" in held.headline.what
    assert held.headline.estimate == pytest.approx((0.3 - 0.1) / 2, abs=1e-3)  # mean of slope x s over [0, 1]
    tied = fastest_degradation(_perturb_rows({"unet": 0.3, "l1": 0.3, "zero-filled": 0.05}, jitter=0.01))
    assert tied.verdict in (INCONCLUSIVE, FAILS)
    assert fastest_degradation(_perturb_rows({"unet": 0.3})).verdict == INCONCLUSIVE  # nothing to rank


def test_paired_bootstrap_equals_the_plain_one_on_differences():
    rng = np.random.default_rng(1)
    a = rng.normal(size=30)
    b = a + rng.normal(0.1, 0.05, size=30)  # strongly paired with a
    plain = metrics.bootstrap_ci(a - b, n_resamples=2000, seed=3)
    paired = metrics.paired_bootstrap_ci([np.stack([a, b], 1)], lambda m: m[0][:, 0] - m[0][:, 1],
                                         n_resamples=2000, seed=3)
    assert paired == pytest.approx(plain)
    assert metrics.paired_bootstrap_ci([a[:, None]], lambda m: m[0][:, 0], n_resamples=2000, seed=3) == \
        pytest.approx(metrics.bootstrap_ci(a, n_resamples=2000, seed=3))
    unpaired = metrics.paired_bootstrap_ci([a[:, None], b[:, None]], lambda m: m[0][:, 0] - m[1][:, 0],
                                           n_resamples=2000, seed=3)
    assert unpaired[2] - unpaired[1] > 5 * (paired[2] - paired[1])  # pairing is what makes the CI tight


def test_assess_gives_every_claim_and_says_what_is_missing():
    jobs = [JobRows("attack", "attack", _attack_rows(_two(0.1, 0.02), FAMILIES)),
            JobRows("heat", "heatmap", _heatmap_rows(list(np.geomspace(0.1, 10, 40))))]
    verdicts = assess(jobs)
    assert [v.claim for v in verdicts] == list(CLAIMS)
    by_claim = {v.claim: v for v in verdicts}
    assert by_claim["A1"].verdict == HOLDS and by_claim["F1"].verdict == HOLDS
    assert by_claim["S1"].verdict == INCONCLUSIVE and "no finished dataset_shift" in by_claim["S1"].line()
    old = [{"method": m, "ssim": 0.5, "box_mse": 1.0} for m in "abc"]  # no file, slice, box columns
    assert "lack the column" in {v.claim: v for v in assess([JobRows("old", "annotated", old)])}["F2"].line()
    content = as_json(verdicts)
    assert content["rules"]["far"] == 2.0 and content["verdicts"][0]["line"] == verdicts[0].line()


def test_report_opens_with_the_verdicts(tmp_path: Path):
    verdicts = [v.as_dict() for v in assess([JobRows("a", "attack", _attack_rows(_two(0.02, 0.1), FAMILIES))])]
    source = ReportSource(tmp_path, "s", [], {}, lambda key: [], lambda key: {}, findings=verdicts)
    page = write_report(source, tmp_path / "report").read_text()
    assert page.index("<section") == page.index('<section id="findings"')  # the first section
    assert page.count("<li>") == len(CLAIMS) and 'style="color:#a00">A1 fails' in page
    assert "n 8 images" in page
