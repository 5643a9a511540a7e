"""Distribution-shift experiments on tiny generated data: model caching, resumed units, the hard set,
frequency analysis, fits, figures and bad input."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.domains import Domain
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError, DataError
from mrirobust.evaluate import evaluate
from mrirobust.experiments.base import DataSource, Experiment, Inputs, MethodInput
from mrirobust.experiments.runner import UnitCache, run_experiment
from mrirobust.experiments.shift import AnatomyShift, DatasetShift, HardShift, HardShiftSpec
from mrirobust.methods.base import build
from mrirobust.physics.masks import MaskSpec, seed_from_filename
from mrirobust.report import shift_figures
from mrirobust.report.registry import kind_report
from mrirobust.robustness.shift_analysis import fit_summary, hard_set, low_frequency_proportion

CF = 0.17  # 8 centre columns of 48: ESPIRiT (l1) needs at least its 6x6 kernel
MASK = MaskSpec("random", (CF,), (4,))
SSIM = "ssim[fastmri,volume-max]"
GROUPS = {
    "U-net": [{"name": "unet-small", "chans": 4, "num_pool_layers": 2, "label": "unet-4"},
              {"name": "unet-small", "chans": 8, "num_pool_layers": 2, "label": "unet-8"}],
    "l1": [{"name": "l1", "iters": 10, "tune": {"lam": [0.001, 0.01]}, "label": "l1"}],
    "baseline": ["zero-filled"],  # a method label of the inputs, not an inline config
}
TRAIN = {"epochs": 1, "batch_size": 2, "max_train_slices": 4}
METHODS = {"zero-filled": MethodInput({"name": "zero-filled"})}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shiftdata")
    configs = [SynthConfig("knee", split=split, num_volumes=n, slices_per_volume=s, num_coils=4, shape=(48, 48),
                           oversample=True) for split, n, s in (("train", 2, 2), ("val", 2, 1), ("test", 2, 5))]
    # the brain has another coil count and size than the knee: models must cope or say why
    configs += [SynthConfig("brain", split=split, num_volumes=n, slices_per_volume=s, num_coils=6, shape=(56, 48),
                            oversample=True) for split, n, s in (("train", 2, 2), ("val", 1, 2), ("test", 1, 3))]
    synthesize(root, configs)
    return root


def _shift(cls: type[Experiment], cache: Path, source: str | Path, target: str | Path | None = None, *,
           mask: MaskSpec = MASK, **settings: Any) -> Experiment:
    """A shift experiment on the data sources "source" (and "target"), with GROUPS and TRAIN unless given."""
    paths = {"source": source, **({"target": target} if target is not None else {})}
    inputs = Inputs({label: DataSource(Domain.parse(path), mask) for label, path in paths.items()}, METHODS,
                    device="cpu", cache=cache)
    spec = cls.spec_type(**{label: label for label in paths}, **{"groups": GROUPS, "train": TRAIN, **settings})
    return cls(spec, inputs)


def _prepared(cache: Path) -> dict[str, dict[str, int]]:
    """The models `prepare` trained (done.yaml) and tuned (tuned.yaml) in the cache, with the files' mtimes."""
    return {name: {p.parent.name: p.stat().st_mtime_ns for p in cache.glob(f"*/{name}")}
            for name in ("done.yaml", "tuned.yaml")}


def _drawn(kind: str, result: Any, folder: Path) -> list[str]:
    """The figures the kind's report draws from a result; each PNG has its PDF twin."""
    paths = kind_report(kind).figures(result.rows, result.artefacts, folder, "")
    assert all(p.stat().st_size > 0 and p.with_suffix(".pdf").stat().st_size > 0 for p in paths)
    return [p.name for p in paths]


def test_dataset_shift_caches_models_resumes_units_and_fits(data, tmp_path):
    source, target = f"{data}/knee@CORPDFS_FBK", f"{data}/knee@CORPD_FBK"
    cache, units = tmp_path / "cache", UnitCache(tmp_path / "a")
    first = run_experiment(_shift(DatasetShift, cache, source, target), units, progress=False)
    prepared = _prepared(cache)
    assert {name: len(found) for name, found in prepared.items()} == {"done.yaml": 2, "tuned.yaml": 1}
    rows = first.rows
    assert {r["role"] for r in rows} == {"in", "out"}
    assert {r["evaluated_on"] for r in rows} == {"knee[CORPDFS_FBK]", "knee[CORPD_FBK]"}
    labels = {"unet-4", "unet-8", "l1", "zero-filled"}
    assert {r["model"] for r in rows} == labels and all(r["method"] == r["model"] for r in rows)
    assert {d: set(images) for d, images in first.artefacts["examples"].items()} == {
        f"knee[CORPDFS_FBK] -> {d}": {"target", *labels} for d in ("knee[CORPDFS_FBK]", "knee[CORPD_FBK]")}
    assert _drawn("dataset_shift", first, tmp_path / "figures") == ["figure2.png", "examples.png"]

    # another experiment with the same model cache trains and tunes nothing
    second = run_experiment(_shift(DatasetShift, cache, source, target), UnitCache(tmp_path / "b"), progress=False)
    assert _prepared(cache) == prepared
    assert second.rows == rows

    # a re-run with the same unit cache reconstructs nothing and gives identical rows
    again = UnitCache(tmp_path / "a")
    assert run_experiment(_shift(DatasetShift, cache, source, target), again, progress=False).rows == rows
    assert again.computed == 0 and units.computed > 0

    # the fit is the least-squares line through the per-model means (numpy as reference)
    (name, _, _, table, summary), = shift_figures.fits(rows)
    assert name == "figure2" and [t["model"] for t in table] == ["unet-4", "unet-8", "l1", "zero-filled"]
    for t in table:
        for axis, role in (("x", "in"), ("y", "out")):
            mine = [r[SSIM] for r in rows if r["model"] == t["model"] and r["role"] == role]
            assert t[axis] == pytest.approx(np.mean(mine))
    x, y = (np.array([t[k] for t in table]) for k in ("x", "y"))
    # 4 models are fewer than the default 5 a line needs: no fit, and the text says why
    assert summary["fit"] is None and summary["fit_note"] == "inconclusive: only 4 models"
    assert kind_report("dataset_shift").text(rows, first.artefacts).startswith(
        "figure2: no linear fit (inconclusive: only 4 models)")
    slope, intercept = np.polyfit(x, y, 1)
    fit = fit_summary(table, min_points=3)["fit"]
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(intercept)
    assert summary["drop_per_group"]["U-net"] == pytest.approx(np.mean((x - y)[:2]))
    few = [{**r, "min_fit_points": 3} for r in rows]  # the experiment's setting, carried by its rows
    text = kind_report("dataset_shift").text(few, first.artefacts)
    assert text.startswith(f"figure2: y = {slope:.3f} x + {intercept:.3f}")

    # a group member given its checkpoint is evaluated as is: nothing trained, the trained model's rows
    (checkpoint,) = [p for p in cache.glob("unet-4-*/best.ckpt")]
    given = {"U-net": [{**GROUPS["U-net"][0], "checkpoint": str(checkpoint)}]}
    fresh = tmp_path / "fresh-cache"
    reused = run_experiment(_shift(DatasetShift, fresh, source, target, groups=given), UnitCache(tmp_path / "c"),
                            progress=False)
    assert not list(fresh.glob("*/done.yaml"))
    def scores(found: list[dict]) -> list[tuple]:
        return [(r["role"], r["file"], r["slice"], r[SSIM]) for r in found if r["model"] == "unet-4"]

    assert scores(reused.rows) == scores(rows)


def test_anatomy_shift_both_directions_other_coils_and_readout(data, tmp_path):
    groups = {**GROUPS, "VarNet": [{"name": "varnet-small", "num_cascades": 1, "chans": 4, "pools": 2}]}
    result = run_experiment(_shift(AnatomyShift, tmp_path / "cache", data / "knee", data / "brain", groups=groups),
                            UnitCache(tmp_path / "units"), progress=False)
    rows = result.rows
    pairs = {(r["trained_on"], r["evaluated_on"]) for r in rows}
    assert pairs == {("knee", "knee"), ("knee", "brain"), ("brain", "brain"), ("brain", "knee")}
    # VarNet trained on 96-row knee k-space sees the 112-row brain through the resolution fix
    fixes = {(r["trained_on"], r["evaluated_on"]): r["resolution_fix"] for r in rows if r["group"] == "VarNet"}
    assert fixes == {("knee", "knee"): None, ("knee", "brain"): 96, ("brain", "brain"): None, ("brain", "knee"): 112}
    assert all(np.isfinite(r[SSIM]) for r in rows)
    assert {name for name, *_ in shift_figures.fits(rows)} == {
        "figure4-test-brain", "figure4-test-knee", "figure13-train-knee", "figure13-train-brain"}
    assert _drawn("anatomy_shift", result, tmp_path / "figures") == ["figure4.png", "figure13.png", "examples.png"]

    # weights given per domain (`checkpoints`, as the demo ships them) stand in for both trainings
    trained = {("brain" if "brain" in (p.parent / "done.yaml").read_text() else "knee"): str(p)
               for p in (tmp_path / "cache").glob("unet-4-*/best.ckpt")}
    member = {**GROUPS["U-net"][0], "checkpoint": trained["knee"]}
    fresh = tmp_path / "fresh-cache"
    given = run_experiment(_shift(AnatomyShift, fresh, data / "knee", data / "brain",
                                  groups={"U-net": [{**member, "checkpoints": {"brain": trained["brain"]}}]}),
                           UnitCache(tmp_path / "given"), progress=False)
    assert not list(fresh.glob("*/done.yaml"))

    def scores(found: list[dict]) -> list[tuple]:
        return sorted((r["trained_on"], r["evaluated_on"], r["file"], r["slice"], r[SSIM]) for r in found
                      if r["model"] == "unet-4")

    assert scores(given.rows) == scores(rows) and len(scores(rows)) == 2 * (10 + 3)  # 2 directions, 13 test slices
    # without the target's weights, its "trained on brain" model would be the knee one: refused
    with pytest.raises(ConfigError, match="unet-4 comes with trained weights .* none trained on brain"):
        _shift(AnatomyShift, fresh, data / "knee", data / "brain", groups={"U-net": [member]}).check()


def test_shifts_sharing_units_label_rows_with_their_own_kind(data, tmp_path):
    # the demo's dataset and anatomy shifts share evaluation units (the identity holds no kind)
    source, target, groups = f"{data}/knee@CORPDFS_FBK", f"{data}/knee@CORPD_FBK", {"baseline": ["zero-filled"]}
    units = UnitCache(tmp_path / "units")
    anatomy = run_experiment(_shift(AnatomyShift, tmp_path / "cache", source, target, groups=groups, images=2),
                             units, progress=False)
    computed = units.computed
    dataset = run_experiment(_shift(DatasetShift, tmp_path / "cache", source, target, groups=groups, images=2),
                             units, progress=False)
    assert units.computed == computed > 0  # every unit of the dataset shift was the anatomy shift's
    assert {r["shift"] for r in anatomy.rows} == {"anatomy_shift"}
    assert {r["shift"] for r in dataset.rows} == {"dataset_shift"}
    assert [name for name, *_ in shift_figures.fits(dataset.rows)] == ["figure2"]


def test_hard_set_is_the_filter_methods_lowest_tenth(data, tmp_path):
    groups = {"U-net": GROUPS["U-net"], "l1": GROUPS["l1"]}
    result = run_experiment(_shift(HardShift, tmp_path / "cache", data / "knee", groups=groups,
                                   filter_method="zero-filled"), UnitCache(tmp_path / "units"), progress=False)
    candidates = SliceDataset(data / "knee" / "test", slices="middle:5")
    assert len(candidates) == 10
    reference = evaluate(iter(candidates), [build("zero-filled")], MASK, progress=False).rows
    lowest = min(reference, key=lambda r: r[SSIM])
    chosen = result.artefacts["hard_set"]
    assert [(r["file"], r["slice"]) for r in chosen] == [(Path(lowest["file"]).name, lowest["slice"])]
    assert chosen[0]["filter_ssim"] == pytest.approx(lowest[SSIM]) and chosen[0]["filter"] == "filter-zero-filled"
    rows = result.rows
    assert {r["model"] for r in rows} == {"unet-4", "unet-8", "l1"}  # the filter method is not evaluated
    assert {(r["file"], r["slice"]) for r in rows if r["role"] == "hard"} == {(lowest["file"], lowest["slice"])}
    assert {r["role"] for r in rows} == {"hard", "normal"}
    assert _drawn("hard_shift", result, tmp_path / "figures") == ["figure6.png", "examples.png", "figure14.png"]

    # low-frequency proportion by hand: width 48, 0.17 * 48 -> 8 centre columns, placed by fastMRI
    # at (48 - 8 + 1) // 2 = 20, i.e. columns 20..27; energies in numpy
    freq = {(r["file"], r["slice"]): r for r in result.artefacts["frequency"]}
    assert len(freq) == 10 and [r["set"] for r in freq.values()].count("hard") == 1
    sample = candidates[3]
    name = Path(sample.meta.file).name
    assert MASK.sample(48, seed=seed_from_filename(name))[0][20:28].all()
    energy = (np.abs(sample.kspace.numpy()) ** 2).sum(axis=(0, 1))
    expected = energy[20:28].sum() / energy.sum()
    assert freq[(name, sample.meta.slice)]["low_frequency_proportion"] == pytest.approx(expected, rel=1e-5)


def test_low_frequency_proportion_and_hard_fraction():
    kspace = torch.zeros(2, 3, 4, 10, dtype=torch.complex64)
    kspace[0, :, :, 4:6] = 1  # all energy in the centre columns
    kspace[1] = 1  # flat spectrum
    assert low_frequency_proportion(kspace, 2).tolist() == pytest.approx([1.0, 0.2])
    rows = [{"file": f"f{i}.h5", "slice": i, "ssim[x]": s} for i, s in enumerate(np.linspace(0.9, 0.5, 25))]
    assert [r["slice"] for r in hard_set(rows, 0.1)] == [24, 23]
    with pytest.raises(ConfigError, match="hard_fraction"):
        hard_set(rows, 1.5)
    with pytest.raises(ConfigError, match="hard_fraction"):
        HardShiftSpec(source="source", hard_fraction=1.0)


def test_bad_input_fails_before_any_model_runs(data, tmp_path):
    cache, units = tmp_path / "cache", UnitCache(tmp_path / "units")
    cases = [
        (DataError, "acquisitions", DatasetShift, (f"{data}/knee@CORPDFS_FBK", f"{data}/knee@AXT2"), {}),
        # 4 centre columns: too few for l1's maps
        (ConfigError, "ESPIRiT", DatasetShift, (data / "knee", data / "brain"),
         {"mask": MaskSpec("random", (0.08,), (4,))}),
        (ConfigError, "not evaluated", HardShift, (data / "knee",), {"filter_method": "zero-filled"}),
        (ConfigError, "train/", DatasetShift, (data / "knee" / "test", data / "brain"), {}),
        (ConfigError, "^target: ", DatasetShift, (data / "knee",), {}),
        (ConfigError, "name them apart", DatasetShift, (data / "knee", data / "knee"), {}),
    ]
    for error, match, cls, paths, settings in cases:
        with pytest.raises(error, match=match):
            run_experiment(_shift(cls, cache, *paths, **settings), units, progress=False)
    assert units.computed == 0 and not units.root.exists() and not cache.exists()


def test_shift_command_end_to_end_and_bad_groups(data, tmp_path, capsys):
    from mrirobust.cli import main

    groups = tmp_path / "groups.yaml"
    groups.write_text("U-net:\n  - {name: unet-small, chans: 4, num_pool_layers: 2}\nbaseline:\n  - zero-filled\n")
    out = tmp_path / "out"
    assert main(["shift", "anatomy", str(data / "knee"), str(data / "brain"), "--groups", str(groups),
                 "--train", "epochs=1", "--train", "max_train_slices=2", "--center-fraction", str(CF),
                 "--images", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["kind"] for r in rows} == {"anatomy_shift"} and {r["group"] for r in rows} == {"U-net", "baseline"}
    per_unit = {}
    for r in rows:
        per_unit.setdefault((r["model"], r["trained_on"], r["evaluated_on"]), []).append(r)
    assert len(per_unit) == 2 * 4 and all(len(found) == 2 for found in per_unit.values())  # --images 2
    domains = {r["trained_on"] for r in rows}
    assert len(domains) == 2
    for panel in [*(f"figure4-test-{d}" for d in domains), *(f"figure13-train-{d}" for d in domains)]:
        assert f"\n{panel}: " in f"\n{printed}"  # the fits summary
    page = (out / "report" / "index.html").read_text()
    assert "-figure4.png" in page and "-figure13.png" in page

    groups.write_text("- not a mapping\n")
    assert main(["shift", "hard", str(data / "knee"), "--groups", str(groups), "--out", str(tmp_path / "bad")]) == 2
    assert "--groups" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "store").exists()
