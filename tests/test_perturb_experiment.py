"""The perturb experiment kind end to end on tiny synthetic data, its report, its CLI command, and
poisson masks through the recon kind."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from mrirobust import schema
from mrirobust.cli import main
from mrirobust.data.domains import Domain
from mrirobust.data.sample import draw_mask
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError
from mrirobust.evaluate import Batch
from mrirobust.experiments.base import DataSource, Inputs, MethodInput
from mrirobust.experiments.perturb import KIND_NAMES, Perturb, PerturbSpec, SearchSettings
from mrirobust.experiments.recon import Recon, ReconSpec
from mrirobust.experiments.runner import UnitCache, run_experiment
from mrirobust.experiments.spec import parse, yaml_where
from mrirobust.physics.masks import MaskSpec
from mrirobust.report.registry import kind_report

METHODS = ("zero-filled", "sense")
MASK = MaskSpec("random", (0.25,), (4,))  # 8 centre columns: ESPIRiT (sense) needs a few more than its kernel


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("perturb")
    synthesize(root, [SynthConfig("knee", split="test", num_volumes=1, slices_per_volume=2, num_coils=4,
                                  shape=(32, 32))])
    return root / "knee"


def _inputs(data: Path, tmp: Path, mask: MaskSpec = MASK) -> Inputs:
    return Inputs({"d": DataSource(Domain(data, name="d"), mask)},
                  {label: MethodInput({"name": label}) for label in METHODS}, device="cpu", cache=tmp / "cache")


def _metrics(row: dict) -> dict:
    return {k: row[k] for k in schema.metric_columns(list(row))}


def test_every_kind_sweeps_every_level_and_severity_zero_is_the_clean_recon(data, tmp_path):
    spec = PerturbSpec(data="d", methods=METHODS, kinds=KIND_NAMES, images=2, accelerations=(2, 4, 8))
    cache = UnitCache(tmp_path / "units")
    result = run_experiment(Perturb(spec, _inputs(data, tmp_path)), cache, progress=False)
    sweep = [r for r in result.rows if r["part"] == "sweep"]
    assert all(r[schema.STATUS] == "ok" for r in result.rows)
    keys = {(r["perturbation"], r["severity"], r[schema.METHOD], r[schema.IMAGE]) for r in sweep}
    assert len(sweep) == len(keys) == len(KIND_NAMES) * 5 * len(METHODS) * 2
    assert sorted({r["severity"] for r in sweep}) == [0.0, 0.25, 0.5, 0.75, 1.0]
    clean = run_experiment(Recon(ReconSpec("d", METHODS, batch_size=spec.batch_size), _inputs(data, tmp_path)),
                           UnitCache(tmp_path / "recon"), progress=False).rows
    clean = {(r[schema.METHOD], r[schema.SLICE]): _metrics(r) for r in clean}
    for row in sweep:
        if row["severity"] == 0:
            assert _metrics(row) == clean[(row[schema.METHOD], row[schema.SLICE])]  # exactly
            assert row["relative_change"] == 0
        elif row["perturbation"] != "sampling":
            assert row["relative_change"] > 0
    # independent draws per image, the same draw at every severity
    for kind in KIND_NAMES:
        seeds = {(r[schema.IMAGE], r["perturbation_seed"]) for r in sweep if r["perturbation"] == kind}
        assert len(seeds) == 2 and len({s for _, s in seeds}) == 2
    # noise of std severity * max_sigma x the measured RMS changes the measured data by about that much
    for row in sweep:
        if row["perturbation"] == "noise":
            assert row["relative_change"] == pytest.approx(0.2 * row["severity"], rel=0.1)
    samples = [r for r in result.rows if r["part"] == "samples"]
    assert len(samples) == 3 * len(METHODS) * 2 and {r["acceleration"] for r in samples} == {2.0, 4.0, 8.0}
    computed = cache.computed
    again = UnitCache(tmp_path / "units")
    rows = run_experiment(Perturb(spec, _inputs(data, tmp_path)), again, progress=False).rows
    assert [json.dumps(r, sort_keys=True) for r in rows] == [json.dumps(r, sort_keys=True) for r in result.rows]
    assert computed > 0 and again.computed == 0


@pytest.fixture(scope="module")
def worst(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("worst")
    spec = PerturbSpec(data="d", methods=METHODS, kinds=("motion", "noise", "sampling"), images=2, worst_case=True,
                       search=SearchSettings(severity=0.5, trials=3, refine=2, attack_steps=2),
                       accelerations=(2, 4), batch_size=2)
    return run_experiment(Perturb(spec, _inputs(data, tmp)), UnitCache(tmp / "units"), progress=False)


def test_the_worst_case_is_at_least_as_bad_as_the_swept_draw(worst):
    ssim = schema.ssim_column(worst.rows)
    swept = {(r["perturbation"], r[schema.METHOD], r[schema.IMAGE]): r[ssim] for r in worst.rows
             if r["part"] == "sweep" and r["severity"] == 0.5}
    found = [r for r in worst.rows if r["part"] == "worst_case"]
    assert len(found) == 3 * len(METHODS) * 2 and all(r[schema.STATUS] == "ok" for r in found)
    for row in found:
        key = (row["perturbation"], row[schema.METHOD], row[schema.IMAGE])
        assert row["start_score"] == pytest.approx(swept[key], abs=1e-5)  # the search starts at the swept draw
        assert row[ssim] <= swept[key] + 1e-5
        if row["perturbation"] == "sampling":
            assert math.isnan(row["attack_objective"])
        else:
            assert row["relative_change"] > 0 and row["attack_objective"] > 0


def test_the_report_draws_every_figure_and_table(worst, tmp_path):
    report = kind_report("perturb")
    drawn = report.figures(worst.rows, worst.artefacts, tmp_path, "p-")
    assert sorted(p.name for p in drawn) == ["p-perturbed_examples.png", "p-psnr_curves.png", "p-ssim_curves.png"]
    assert all(p.stat().st_size > 0 for p in drawn) and set(report.captions) == {p.stem[2:] for p in drawn}
    tables = report.tables(worst.rows)
    titles = [title for title, _, _ in tables]
    assert sum("Area under" in t for t in titles) == 2 and sum("Worst case" in t for t in titles) == 2
    (_, header, body), _ = [t for t in tables if "More samples" in t[0]]
    assert len(body) == len(METHODS)  # one pair of accelerations per method
    for line in body:
        mean = float(line[header.index(next(h for h in header if h.startswith("difference")))].split()[0])
        assert line[-1] == ("no drop" if mean >= 0 else line[-1]) and line[-1] in ("drop", "no drop", "inconclusive")
    assert "Area under" in report.text(worst.rows, worst.artefacts)


def test_spec_errors_name_the_field():
    where = yaml_where("experiments.p")
    for value, field in (({"settings": {"motion": {"shots": "many"}}}, "experiments.p.settings.motion.shots"),
                         ({"settings": {"noise": {"colour": 1}}}, "experiments.p.settings.noise"),
                         ({"settings": {"b0": {"max_hz": 10}}}, "experiments.p.settings.b0"),
                         ({"settings": {"noise": {"seed": 1}}}, "experiments.p.settings.noise.seed"),
                         ({"kinds": ["motion", "wobble"]}, "experiments.p.kinds[1]"),
                         ({"levels": 3}, "experiments.p.levels"),
                         ({"worst_case": True, "search": {"severity": 0.3}}, "experiments.p.search.severity")):
        with pytest.raises(ConfigError) as caught:
            parse(PerturbSpec, {"data": "d", **value}, where)
        assert caught.value.field == field, value
    spec = parse(PerturbSpec, {"data": "d", "settings": {"motion.shots": 10, "motion": {"events": 2}}}, where)
    assert spec.settings == {"motion": {"shots": 10, "events": 2}}


def test_the_cli_command_runs_a_poisson_sweep_and_prints_the_tables(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["perturb", str(data), "--methods", "zero-filled", "--kinds", "noise,sampling", "--levels", "5",
                 "--images", "2", "--mask-type", "poisson", "--accelerations", "4,6", "--settings",
                 "noise.max_sigma=0.1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Area under" in printed and "More samples" in printed
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["mask"] for r in rows} == {"poisson 4x cf0.08"} and len(rows) == 2 * 5 * 2 + 2 * 2
    assert list((out / "report" / "figures").glob("*-ssim_curves.png"))
    assert main(["perturb", str(data), "--kinds", "noise", "--settings", "noise.bogus=1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--settings.noise" in capsys.readouterr().err


def test_poisson_masks_are_2d_seeded_per_file_and_go_through_recon(data, tmp_path):
    spec = MaskSpec("poisson", (0.25,), (4,))
    sample = Domain(data, name="d").dataset("test")[0]
    mask, seed = draw_mask(sample, spec)
    assert mask.shape == sample.shape and torch.equal(mask, draw_mask(sample, spec)[0])
    assert seed == tuple(map(ord, Path(sample.meta.file).name))
    assert mask.numel() / mask.sum() == pytest.approx(4, rel=0.05)
    with pytest.raises(ConfigError, match="2-D mask"):
        spec.sample(32)
    rows = run_experiment(Recon(ReconSpec("d", ("zero-filled",)), _inputs(data, tmp_path, spec)),
                          UnitCache(tmp_path / "units"), progress=False).rows
    assert len(rows) == 2 and all(0 < r[schema.ssim_column(rows)] <= 1 for r in rows)
    assert {r[schema.MASK] for r in rows} == {"poisson 4x cf0.25"}


def test_hard_shift_refuses_a_poisson_mask_before_computing(data, tmp_path):
    from mrirobust.experiments.shift import HardShift, HardShiftSpec

    spec = HardShiftSpec(source="d", groups={"baseline": ["zero-filled"]})
    with pytest.raises(ConfigError, match="centre columns") as caught:
        HardShift(spec, _inputs(data, tmp_path, MaskSpec("poisson", (0.25,), (4,)))).check()
    assert caught.value.field == "mask.type"


def test_sampling_shifts_keep_off_a_files_zero_padded_columns(data, tmp_path):
    """fastMRI files record zero-padded k-space columns; a shifted mask must not count them as samples."""
    settings = {"sampling": {"max_acceleration": 2.0, "base_acceleration": 2.0}}  # half the columns: padding too
    experiment = Perturb(PerturbSpec(data="d", methods=METHODS, kinds=("sampling",), images=2, settings=settings),
                         _inputs(data, tmp_path))
    samples = [dataclasses.replace(s, meta=dataclasses.replace(s.meta, padding_left=5, padding_right=27))
               for s in (experiment.dataset()[i] for i in range(2))]
    batch = Batch.load(samples, MASK, "cpu")
    specs = [experiment.perturbation("sampling", 1.0, seed) for seed in (1, 2)]
    shifted, _ = experiment.perturbed(batch, 0, specs)
    assert shifted.masks.any() and not shifted.masks[..., :5].any() and not shifted.masks[..., 27:].any()
