"""Distribution-shift experiments on tiny generated data: caching, resume, hard set, frequency
analysis, fits, figures and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mrirobust.robustness.shifts as shifts
from mrirobust.data.dataset import SliceDataset
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError, DataError
from mrirobust.evaluate import evaluate
from mrirobust.methods.train import TrainConfig
from mrirobust.physics.masks import MaskSpec, seed_from_filename

CF = 0.17  # 8 centre columns of 48: ESPIRiT (l1) needs at least its 6x6 kernel
GROUPS = {
    "U-net": [{"name": "unet-small", "chans": 4, "num_pool_layers": 2},
              {"name": "unet-small", "chans": 8, "num_pool_layers": 2}],
    "l1": [{"name": "l1", "iters": 10, "tune": {"lam": [0.001, 0.01]}}],
    "baseline": ["zero-filled"],
}
TRAIN = TrainConfig(epochs=1, batch_size=2, max_train_slices=4)


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


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """Count training and tuning calls made by the shift experiment."""
    counts = {"train": 0, "tune": 0}
    for name in counts:
        real = getattr(shifts, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(shifts, name, counted)
    return counts


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _run(kind, source, target, out, cache, **kwargs):
    settings = dict(groups=GROUPS, out=out, cache=cache, train_config=TRAIN, center_fraction=CF, progress=False)
    return shifts.run_shift(kind, source, target, **{**settings, **kwargs})


def test_dataset_shift_caches_models_resumes_units_and_fits(data, tmp_path, calls, monkeypatch):
    source, target = f"{data}/knee@CORPDFS_FBK", f"{data}/knee@CORPD_FBK"
    first = _run("dataset", source, target, tmp_path / "a", tmp_path / "cache")
    assert calls == {"train": 2, "tune": 1}
    for name in ("shift.parquet", "models.csv", "fits.json", "figure2.png", "examples.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    rows = _read(first)
    assert {r["role"] for r in rows} == {"in", "out"}
    assert {r["evaluated_on"] for r in rows} == {"knee[CORPDFS_FBK]", "knee[CORPD_FBK]"}

    # another experiment with the same cache trains and tunes nothing
    second = _run("dataset", source, target, tmp_path / "b", tmp_path / "cache")
    assert calls == {"train": 2, "tune": 1}
    assert _read(second) == rows

    # a re-run in the same folder reconstructs nothing and gives identical rows
    monkeypatch.setattr(shifts, "evaluate", lambda *a, **k: pytest.fail("a finished unit was recomputed"))
    assert _read(_run("dataset", source, target, tmp_path / "a", tmp_path / "cache")) == rows

    # the saved fit is the least-squares line through the per-model means (numpy as reference)
    table = _read(tmp_path / "a" / "models.csv")
    x, y = (np.array([float(t[k]) for t in table]) for k in ("x", "y"))
    for t in table:
        mine = [float(r["ssim[fastmri,volume-max]"]) for r in rows if r["model"] == t["model"] and r["role"] == "in"]
        assert float(t["x"]) == pytest.approx(np.mean(mine))
    fit = json.loads((tmp_path / "a" / "fits.json").read_text())["figure2"]
    slope, intercept = np.polyfit(x, y, 1)
    assert fit["fit"]["slope"] == pytest.approx(slope) and fit["fit"]["intercept"] == pytest.approx(intercept)
    assert fit["drop_per_group"]["U-net"] == pytest.approx(np.mean((x - y)[:2]))


def test_anatomy_shift_both_directions_other_coils_and_readout(data, tmp_path):
    groups = {**GROUPS, "VarNet": [{"name": "varnet-small", "num_cascades": 1, "chans": 4, "pools": 2}]}
    path = _run("anatomy", data / "knee", data / "brain", tmp_path / "out", tmp_path / "cache", groups=groups)
    rows = _read(path)
    pairs = {(r["trained_on"], r["evaluated_on"]) for r in rows}
    assert pairs == {("knee", "knee"), ("knee", "brain"), ("brain", "brain"), ("brain", "knee")}
    # VarNet trained on 96-row knee k-space sees the 112-row brain through the resolution fix
    fixes = {(r["trained_on"], r["evaluated_on"]): r["resolution_fix"] for r in rows if r["group"] == "VarNet"}
    assert fixes == {("knee", "knee"): "", ("knee", "brain"): "96", ("brain", "brain"): "", ("brain", "knee"): "112"}
    assert all(np.isfinite(float(r["ssim[fastmri,volume-max]"])) for r in rows)
    fits = json.loads((tmp_path / "out" / "fits.json").read_text())
    assert set(fits) == {"figure4-test-brain", "figure4-test-knee", "figure13-train-knee", "figure13-train-brain"}
    assert (tmp_path / "out" / "figure4.png").exists() and (tmp_path / "out" / "figure13.png").exists()


def test_hard_set_is_the_filter_methods_lowest_tenth(data, tmp_path):
    groups = {"U-net": GROUPS["U-net"], "l1": GROUPS["l1"]}
    out = tmp_path / "out"
    path = _run("hard", data / "knee", None, out, tmp_path / "cache", groups=groups, filter_method="zero-filled")
    spec = MaskSpec("random", (CF,), (4,))
    candidates = SliceDataset(data / "knee" / "test", slices="middle:5")
    assert len(candidates) == 10
    reference = evaluate(iter(candidates), [shifts.build("zero-filled")], spec, progress=False).rows
    lowest = min(reference, key=lambda r: r["ssim[fastmri,volume-max]"])
    saved = _read(out / "hard_set.csv")
    assert [(r["file"], int(r["slice"])) for r in saved] == [(Path(lowest["file"]).name, lowest["slice"])]
    assert float(saved[0]["filter_ssim"]) == pytest.approx(lowest["ssim[fastmri,volume-max]"])
    assert shifts.read_hard_set(out / "hard_set.csv") == {(Path(lowest["file"]).name, lowest["slice"])}
    rows = _read(path)
    hard_rows = {(r["file"], r["slice"]) for r in rows if r["role"] == "hard"}
    assert hard_rows == {(lowest["file"], str(lowest["slice"]))}
    assert (out / "figure6.png").exists() and (out / "figure14.png").exists()

    # low-frequency proportion by hand: width 48, 0.17 * 48 -> 8 centre columns, placed by fastMRI
    # at (48 - 8 + 1) // 2 = 20, i.e. columns 20..27; energies in numpy
    freq = {(r["file"], int(r["slice"])): r for r in _read(out / "frequency.csv")}
    sample = candidates[3]
    name = Path(sample.meta.file).name
    assert spec.sample(48, seed=seed_from_filename(name))[0][20:28].all()
    energy = (np.abs(sample.kspace.numpy()) ** 2).sum(axis=(0, 1))
    expected = energy[20:28].sum() / energy.sum()
    assert float(freq[(name, sample.meta.slice)]["low_frequency_proportion"]) == pytest.approx(expected, rel=1e-5)


def test_low_frequency_proportion_and_hard_fraction():
    kspace = torch.zeros(2, 3, 4, 10, dtype=torch.complex64)
    kspace[0, :, :, 4:6] = 1  # all energy in the centre columns
    kspace[1] = 1  # flat spectrum
    assert shifts.low_frequency_proportion(kspace, 2).tolist() == pytest.approx([1.0, 0.2])
    rows = [{"file": f"f{i}.h5", "slice": i, "ssim[x]": s} for i, s in enumerate(np.linspace(0.9, 0.5, 25))]
    assert [r["slice"] for r in shifts.hard_set(rows, 0.1)] == [24, 23]
    with pytest.raises(ConfigError, match="hard_fraction"):
        shifts.hard_set(rows, 1.5)


def test_bad_input_fails_before_any_model_runs(data, tmp_path, calls):
    with pytest.raises(DataError, match="acquisitions"):
        _run("dataset", f"{data}/knee@CORPDFS_FBK", f"{data}/knee@AXT2", tmp_path / "o", tmp_path / "c")
    with pytest.raises(ConfigError, match="ESPIRiT"):  # 4 centre columns: too few for l1's maps
        _run("dataset", data / "knee", data / "brain", tmp_path / "o", tmp_path / "c", center_fraction=0.08)
    with pytest.raises(ConfigError, match="not evaluated"):
        _run("hard", data / "knee", None, tmp_path / "o", tmp_path / "c", filter_method="zero-filled")
    with pytest.raises(ConfigError, match="train/"):
        _run("dataset", data / "knee" / "test", data / "brain", tmp_path / "o", tmp_path / "c")
    with pytest.raises(ConfigError, match="target"):
        _run("dataset", data / "knee", None, tmp_path / "o", tmp_path / "c")
    assert calls == {"train": 0, "tune": 0}


def test_shift_command_end_to_end_and_bad_groups(data, tmp_path, capsys):
    from mrirobust.cli import main

    groups = tmp_path / "groups.yaml"
    groups.write_text("U-net:\n  - {name: unet-small, chans: 4, num_pool_layers: 2}\nbaseline:\n  - zero-filled\n")
    assert main(["shift", "anatomy", str(data / "knee"), str(data / "brain"), "--groups", str(groups),
                 "--out", str(tmp_path / "out"), "--epochs", "1", "--max-train-slices", "2",
                 "--center-fraction", str(CF), "--images", "2"]) == 0
    assert (tmp_path / "out" / "shift.csv").exists() and (tmp_path / "out" / "fits.json").exists()
    groups.write_text("- not a mapping\n")
    capsys.readouterr()
    assert main(["shift", "hard", str(data / "knee"), "--groups", str(groups), "--out", str(tmp_path / "bad")]) == 2
    assert "--groups" in capsys.readouterr().err
