"""The HTML report of a study folder: numbers, escaping, unfinished jobs, figures, and rendering in Chromium.

Each test builds a study folder as the runner writes it (store/plan.json, store/jobs/*.json, store/rows/*.parquet,
PNG+PDF figures under runs/) with rows that carry the experiments' real columns.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mrirobust.errors import DataError  # noqa: E402
from mrirobust.report.html import CAPTIONS, write_report  # noqa: E402
from mrirobust.results import write_parquet  # noqa: E402

SSIM = "ssim[fastmri,volume-max]"
PSNR = "psnr[volume-max]"
VERSIONS = {"mrirobust": "0.1.0", "torch": "2.13.0+cpu", "python": "3.11.7"}


def _recon_rows() -> list[dict]:
    values = {"unet": [(0.80, 30.0, 0.02), (0.90, 32.0, 0.01)], "l1": [(0.70, 28.0, 0.04), (0.74, 29.0, 0.03)]}
    return [{"method": m, "config_hash": "abc", "file": "knee1.h5", "slice": s, "acquisition": "CORPD_FBK",
             "anatomy": "knee", "mask": "4x random", "mask_seed": "knee1.h5", "mrirobust_version": "0.1.0",
             SSIM: v[0], PSNR: v[1], "nmse": v[2], "mse": v[2] / 10}
            for m, triples in values.items() for s, v in enumerate(triples)]


def _attack_rows() -> list[dict]:
    rows = []
    losses = {("unet", 0.04, "unet"): [0.10, 0.30], ("unet", 0.04, "l1"): [0.02, 0.04],
              ("random", 0.04, "unet"): [0.01, 0.03], ("random", 0.04, "l1"): [0.00, 0.02]}
    for (attacked, eps, evaluated), values in losses.items():
        for image, loss in enumerate(values):
            rows.append({"attacked": attacked, "attacked_hash": "h", "attack": "pgd", "eps": eps, "attack_seed": 0,
                         "norm": "measured", "attack_settings": "{}", "mask": "4x random", "ssim_variant": "volume-max",
                         "evaluated": evaluated, "evaluated_hash": "h", "file": "knee1.h5", "slice": image,
                         "image": image, "status": "ok", "reason": "", SSIM: 0.8 - loss, f"{SSIM}_clean": 0.8,
                         f"{SSIM}_loss": loss})
    rows.append({**rows[0], "image": 2, "status": "failed", "reason": "NaN", SSIM: None, f"{SSIM}_clean": None,
                 f"{SSIM}_loss": None})  # a failed measurement must not enter the mean
    return rows


def _shift_rows() -> list[dict]:
    ssim = {("unet-small", "U-net", "in"): [0.8, 0.9], ("unet-small", "U-net", "out"): [0.6, 0.7],
            ("l1", "l1", "in"): [0.7, 0.7], ("l1", "l1", "out"): [0.5, 0.6]}
    return [{"shift": "dataset", "role": role, "model": model, "group": group, "trained_on": "fastmri",
             "evaluated_on": "fastmri" if role == "in" else "stanford", "resolution_fix": None, "method": model,
             "file": f"v{s}.h5", "slice": s, SSIM: value}
            for (model, group, role), values in ssim.items() for s, value in enumerate(values)]


def _heatmap_rows() -> list[dict]:
    return [{"file": "knee1.h5", "slice": 0, "image": 0, "method": m, "method_hash": "h", "window": 3, "top": t,
             "left": 0, "value": 1.0, "mse": loss, "loss": loss, "mask_seed": "knee1.h5"}
            for m, losses in {"unet": [0.2, 0.4], "l1": [0.5, 0.7]}.items() for t, loss in enumerate(losses)]


def _annotated_rows() -> list[dict]:
    boxes = {"varnet": [(1e-3, 0.9), (3e-3, 0.8)], "l1": [(5e-3, 0.7), (7e-3, 0.6)]}
    return [{"file": "knee1.h5", "slice": 10, "box": b, "label": "Meniscus Tear", "top": 40, "left": 50, "height": 8,
             "width": 12, "method": m, "method_hash": "h", "box_mse": mse, "ssim_variant": "volume-max", SSIM: ssim,
             "ssim": ssim, "mse": mse / 2} for m, values in boxes.items() for b, (mse, ssim) in enumerate(values)]


def _figure(path: Path) -> str:
    """A small PNG and its PDF twin; the PNG's path relative to the study folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    for suffix in (".png", ".pdf"):
        fig.savefig(path.with_suffix(suffix), dpi=30)
    plt.close(fig)
    return str(path.relative_to(path.parents[2]))


def make_study(root: Path, name: str = "demo-study", *, unfinished: bool = False) -> Path:
    """A study folder with a train, recon, attack, heatmap, shift and annotated job (plus an unfinished one)."""
    jobs = [("k-train", "train-unet", "train", []), ("k-recon", "recon", "recon", ["example"]),
            ("k-attack", "attack", "attack", ["figure3", "figure9"]), ("k-heat", "heatmap", "heatmap",
                                                                        ["figure7-image0"]),
            ("k-shift", "dataset-shift", "shift", ["figure2", "examples"]),
            ("k-boxes", "annotated", "annotated", ["figure8"])]
    rows = {"recon": _recon_rows(), "attack": _attack_rows(), "heatmap": _heatmap_rows(), "shift": _shift_rows(),
            "annotated": _annotated_rows()}
    store = root / "store"
    (store / "jobs").mkdir(parents=True)
    (store / "rows").mkdir()
    (root / "study.yaml").write_text(f"name: {name}\n")
    plan = [{"key": k, "name": n, "kind": kind} for k, n, kind, _ in jobs]
    if unfinished:
        plan.append({"key": "k-late", "name": "annotated-late", "kind": "annotated"})
    (store / "plan.json").write_text(json.dumps({"study": name, "jobs": plan}))
    for key, job_name, kind, stems in jobs:
        figures = [_figure(root / "runs" / f"{job_name}-{key}" / f"{stem}.png") for stem in stems]
        job = {"key": key, "name": job_name, "kind": kind, "settings": {"eps": [0.04], "images": 2},
               "data": {"knee": "/data/knee"}, "methods": {"unet": {"name": "unet"}}, "mask": "4x random (centre 0.08)",
               "versions": VERSIONS, "device": "cpu", "seconds": 12.5, "finished": "2026-11-24T15:00:00",
               "outputs": f"runs/{job_name}-{key}", "figures": figures, "rows": len(rows.get(kind, []))}
        (store / "jobs" / f"{key}.json").write_text(json.dumps(job))
        if kind in rows:
            write_parquet([{**r, "study": name, "experiment": job_name, "kind": kind, "job": key} for r in rows[kind]],
                          store / "rows" / f"{key}.parquet")
    return root


class _Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.in_cell = False

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag) -> None:
        self.in_cell = self.in_cell and tag not in ("td", "th")

    def handle_data(self, data) -> None:
        if self.in_cell:
            self.tables[-1][-1][-1] += data


def tables(page: str) -> dict[str, list[list[str]]]:
    """Tables keyed by their header line joined with '|'."""
    parser = _Tables()
    parser.feed(page)
    return {"|".join(t[0]): t[1:] for t in parser.tables}


def test_tables_hold_the_hand_computed_means(tmp_path):
    index = write_report(make_study(tmp_path / "study"))
    assert index == tmp_path / "study" / "report" / "index.html"
    found = tables(index.read_text())
    recon = found[f"method|n|mean {SSIM}|mean {PSNR}|mean nmse"]
    assert recon == [["unet", "2", "0.85", "31", "0.015"], ["l1", "2", "0.72", "28.5", "0.035"]]
    # transfer matrix: the failed row (image 2 of unet->unet) is left out: (0.1 + 0.3) / 2
    transfer = found["attacked|eps|unet|l1"]
    assert transfer == [["unet", "0.04", "0.2", "0.03"], ["random", "0.04", "0.02", "0.01"]]
    heat = found["method|window|n|mean loss|mean mse"]
    assert heat == [["unet", "3", "2", "0.3", "0.3"], ["l1", "3", "2", "0.6", "0.6"]]
    shift = found["group|model|fastmri -> fastmri (in)|fastmri -> stanford (out)"]
    assert shift == [["U-net", "unet-small", "0.85", "0.65"], ["l1", "l1", "0.7", "0.55"]]
    boxes = found["method|n|mean box_mse|mean ssim"]
    assert boxes == [["varnet", "2", "0.002", "0.85"], ["l1", "2", "0.006", "0.65"]]
    prepared = found["job|method|kind|seconds|finished"]
    assert prepared == [["train-unet", "unet", "train", "12.5", "2026-11-24T15:00:00"]]


def test_sections_follow_the_plan_with_captions_config_and_versions(tmp_path):
    page = write_report(make_study(tmp_path / "study")).read_text()
    order = [page.index(f'<section id="{k}"') for k in ("k-recon", "k-attack", "k-heat", "k-shift", "k-boxes")]
    assert order == sorted(order)
    assert 'id="k-train"' not in page  # prepare jobs only in the compact table
    assert "Figure 3: loss in SSIM" in page and "Figure 7:" in page and "Figure 2: dataset shift" in page
    assert "mask: 4x random (centre 0.08)" in page and "knee: /data/knee" in page
    assert "2.13.0+cpu" in page and "2026-11-24T15:00:00" in page
    assert "http://" not in page and "https://" not in page  # no external resources


@pytest.mark.parametrize("stem", ["example", "figure3", "figure9", "figure10", "figure7-image3", "figure17",
                                  "figure8", "figure18", "figure2", "figure4", "figure13-train-knee", "figure6",
                                  "figure14", "examples"])
def test_every_stem_of_the_contract_has_a_caption(stem):
    caption = CAPTIONS.get(stem) or CAPTIONS.get(stem.split("-")[0])
    assert caption and (not stem.startswith("figure") or caption.startswith(f"Figure {stem[6:].split('-')[0]}:"))


def test_text_is_escaped(tmp_path):
    evil = "<script>alert('x')</script>&"
    study = make_study(tmp_path / "study", name=evil)
    page = write_report(study).read_text()
    assert evil not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in page
    assert page.count("<script>") == 1  # only the report's own image counter


def test_unfinished_jobs_are_listed(tmp_path):
    study = make_study(tmp_path / "study", unfinished=True)
    page = write_report(study).read_text()
    assert tables(page)["job|kind|key"] == [["annotated-late", "annotated", "k-late"]]
    assert "6 of 7 jobs finished" in page
    (study / "store" / "jobs" / "k-attack.json").unlink()  # a job the runner has not committed yet
    page = write_report(study).read_text()
    assert tables(page)["job|kind|key"] == [["attack", "attack", "k-attack"], ["annotated-late", "annotated", "k-late"]]
    assert 'id="k-attack"' not in page


def test_a_study_without_a_plan_says_so(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.yaml").write_text("name: fresh\n")
    page = write_report(study).read_text()
    assert "No plan yet" in page and "0 of 0 jobs finished" in page


def test_a_folder_that_is_not_a_study_raises(tmp_path):
    (tmp_path / "other").mkdir()
    for folder in (tmp_path / "other", tmp_path / "absent"):
        with pytest.raises(DataError, match=re.escape(str(folder))):
            write_report(folder)
    study = make_study(tmp_path / "study")
    (study / "store" / "plan.json").write_text("{broken")
    with pytest.raises(DataError, match="plan.json"):
        write_report(study)


def test_figures_are_copied_with_their_pdf_twins(tmp_path):
    study = make_study(tmp_path / "study")
    out = tmp_path / "elsewhere"
    page = write_report(study, out).read_text()
    copied = sorted(p.name for p in (out / "figures").iterdir())
    assert "k-attack-figure3.png" in copied and "k-attack-figure3.pdf" in copied
    assert len(copied) == 2 * 7  # 7 figures, each PNG + PDF, names unique across jobs
    for name in copied:
        original = next(study.glob(f"runs/*/{name.split('-', 2)[2]}"))
        assert (out / "figures" / name).read_bytes() == original.read_bytes()
    assert '<a href="figures/k-attack-figure3.pdf">PDF</a>' in page
    images = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', page)
    assert len(images) == 7 and all((out / src).is_file() and alt for src, alt in images)
    # a job that disappears from the plan takes its figures out of the next report
    plan = json.loads((study / "store" / "plan.json").read_text())
    plan["jobs"] = [j for j in plan["jobs"] if j["key"] != "k-attack"]
    (study / "store" / "plan.json").write_text(json.dumps(plan))
    write_report(study, out)
    assert not any(p.name.startswith("k-attack") for p in (out / "figures").iterdir())


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium_with_all_images(tmp_path):
    index = write_report(make_study(tmp_path / "study"))
    command = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", index.resolve().as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    found = re.search(r'<body[^>]*data-images="(\d+)/(\d+)"', dom)
    assert found, dom[:500]
    loaded, total = map(int, found.groups())
    assert loaded == total == 7
