"""The command line end to end on small generated data, and its bad-input behaviour."""

from __future__ import annotations

import csv
import json

import pytest

from mrirobust.cli import main
from mrirobust.data.synthetic import SynthConfig, synthesize


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, [SynthConfig("knee", split="test", num_volumes=2, slices_per_volume=2,
                                  num_coils=8, shape=(128, 128), oversample=True)])
    return root / "knee" / "test"


def test_data_info_summarises_the_folder(small_data, capsys):
    assert main(["data", "info", str(small_data)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["files"] == 2 and info["slices"] == 4


def test_recon_writes_scores_summary_and_figure(small_data, tmp_path, capsys):
    out = tmp_path / "recon"
    assert main(["recon", str(small_data), "--methods", "zero-filled,sense", "--out", str(out),
                 "--acceleration", "4"]) == 0
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 4
    def column(method: str, key: str) -> list[float]:
        return [float(r[key]) for r in rows if r["method"] == method]

    # CG-SENSE with ESPIRiT maps must beat zero-filled: NMSE on every slice, SSIM on average.
    assert all(s < z for s, z in zip(column("sense", "nmse"), column("zero-filled", "nmse")))
    ssim_key = "ssim[fastmri,volume-max]"
    assert sum(column("sense", ssim_key)) > sum(column("zero-filled", ssim_key))
    figures = list((out / "report" / "figures").glob("*example.png"))
    assert len(figures) == 1 and figures[0].stat().st_size > 0
    assert figures[0].name in (out / "report" / "index.html").read_text()
    printed = capsys.readouterr().out
    assert "sense" in printed and "bootstrap CI" in printed


def test_one_slice_recon_has_no_ci_and_variants_get_two_labels(small_data, tmp_path, capsys):
    """One slice gives empty CI bounds (not an error); two configs of one method are two rows."""
    tuned = tmp_path / "l1-strong.yaml"
    tuned.write_text("name: l1\nlam: 0.05\niters: 5\n")
    out = tmp_path / "one"
    assert main(["recon", str(small_data), "--methods", f"l1,{tuned}", "--limit", "1", "--out", str(out),
                 "--center-fraction", "0.16"]) == 0
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and len({r["method"] for r in rows}) == 2 and len({r["config_hash"] for r in rows}) == 2
    assert "nan" in capsys.readouterr().out


def test_bad_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "broken.h5"
    bad.write_text("not an hdf5 file")
    out = tmp_path / "out"
    assert main(["recon", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mrirobust: error:") and "broken.h5" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_findings_of_a_folder_without_a_study_is_one_line_exit_2(tmp_path, capsys):
    assert main(["findings", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and "plan" in err


def test_empty_folder_and_unknown_method(tmp_path, small_data, capsys):
    assert main(["data", "info", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert main(["recon", str(small_data), "--methods", "no-such-method", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no-such-method" in err and "zero-filled" in err


def test_tune_writes_a_config_that_recon_loads(small_data, tmp_path, capsys):
    config = tmp_path / "sense-tuned.yaml"
    assert main(["tune", "sense", str(small_data), "--grid", "l2=0.0,0.01", "--grid", "iters=5,20",
                 "--out", str(config), "--limit", "2"]) == 0
    captured = capsys.readouterr()
    assert "best mean SSIM" in captured.out and config.exists()
    # two values per setting: the best is on an edge of each grid, and tune says so
    assert captured.err.count("warning: the best") == 2 and "extend --grid iters=" in captured.err
    tuned = __import__("yaml").safe_load(config.read_text())
    assert tuned["name"] == "sense" and tuned["l2"] in (0.0, 0.01) and tuned["iters"] in (5, 20)
    assert main(["recon", str(small_data), "--methods", f"zero-filled,{config}", "--out", str(tmp_path / "r"),
                 "--limit", "2"]) == 0
    assert main(["tune", "sense", str(small_data), "--grid", "lam=1", "--out", str(tmp_path / "x.yaml")]) == 2
    assert "no setting lam" in capsys.readouterr().err


def test_tune_warns_only_when_the_best_value_is_on_the_grid_edge():
    from mrirobust.workflows.tune import edge_warnings

    grid = {"lam": [0.001, 0.01, 0.1], "iters": [50, 100], "basis": ["wavelet", "dct"]}
    assert edge_warnings(grid, {"lam": 0.01, "iters": 100, "basis": "dct"}) == [
        "the best iters=100 is the largest value tried (50, 100): the optimum may lie beyond the grid; "
        "extend --grid iters=..."]
    assert "smallest" in edge_warnings(grid, {"lam": 0.001, "iters": 75, "basis": "dct"})[0]
    assert edge_warnings({"lam": [0.01]}, {"lam": 0.01}) == []


def test_default_tuning_grids_follow_the_family():
    from mrirobust.errors import ConfigError
    from mrirobust.workflows.tune import default_grid

    assert set(default_grid("l1")) == {"lam", "iters"}  # the paper tunes lambda and iterations
    assert set(default_grid("l1-dct")) == {"lam", "iters"}
    assert set(default_grid("convdecoder-small")) == {"iters", "channels"}  # iterations and width
    with pytest.raises(ConfigError, match="no default grid"):
        default_grid("unet-small")


PLUGIN = '''
import torch

class HalfZeroFilled:
    """An outside method: half the zero-filled RSS (any object with traits and reconstruct)."""
    family = "custom"
    differentiable = True
    trainable = False
    optimisation_based = False

    def config(self):
        return {"name": "outside_recon:HalfZeroFilled"}

    def reconstruct(self, kspace, mask, **meta):
        coil_images = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=(-2, -1)), norm="ortho"),
                                         dim=(-2, -1))
        return 0.5 * coil_images.abs().pow(2).sum(1).sqrt()
'''


def test_outside_method_runs_through_recon_both_ways(small_data, tmp_path, monkeypatch):
    """A user's method, by `module:attr` and by an installed package's entry point."""
    (tmp_path / "outside_recon.py").write_text(PLUGIN)
    dist_info = tmp_path / "outside_recon-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-recon\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[mrirobust.methods]\nhalf-zf = outside_recon:HalfZeroFilled\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    assert main(["recon", str(small_data), "--methods", "zero-filled,outside_recon:HalfZeroFilled,half-zf",
                 "--out", str(out), "--limit", "2"]) == 0
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    mse = {r["method"]: float(r["mse"]) for r in rows if r["slice"] == rows[0]["slice"] and r["file"] == rows[0]["file"]}
    assert set(mse) == {"zero-filled", "outside_recon:HalfZeroFilled", "half-zf"}
    assert mse["half-zf"] == mse["outside_recon:HalfZeroFilled"] != mse["zero-filled"]
