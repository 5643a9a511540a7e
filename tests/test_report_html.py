"""The HTML report: numbers, sections, captions, escaping, unfinished jobs, figures, and rendering in Chromium.

Each test builds a `ReportSource` as the study layer hands it over (plan, finished jobs' records, rows
and artefacts) with rows and artefacts that carry the experiments' real columns and keys; no study runs.
"""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from mrirobust.errors import DataError
from mrirobust.report import registry
from mrirobust.report.html import ReportSource, write_report

SSIM = "ssim[fastmri,volume-max]"
PSNR = "psnr[volume-max]"
VERSIONS = {"mrirobust": "0.1.0", "torch": "2.13.0+cpu", "python": "3.11.7"}
JOBS = [("k-train", "train-unet", "train"), ("k-recon", "recon", "recon"), ("k-attack", "attack", "attack"),
        ("k-heat", "heatmap", "heatmap"), ("k-shift", "dataset-shift", "dataset_shift"),
        ("k-boxes", "annotated", "annotated")]
FIGURES = 7  # example; figure3, figure9; figure7-image0; figure2, examples; figure8


def _image(seed: int) -> torch.Tensor:
    return torch.rand(16, 16, generator=torch.Generator().manual_seed(seed))


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
            rows.append({"attacked": attacked, "attacked_config_hash": "h", "attack": "pgd", "eps": eps,
                         "attack_seed": 0, "norm": "measured", "budget": 1.0, "z_norm": 1.0, "mask": "4x random",
                         "ssim_variant": "volume-max", "evaluated": evaluated, "config_hash": "h",
                         "file": "knee1.h5", "slice": image, "image": image, "status": "ok", "reason": "",
                         SSIM: 0.8 - loss, f"{SSIM}_clean": 0.8, f"{SSIM}_loss": loss})
    rows.append({**rows[0], "image": 2, "status": "failed", "reason": "NaN", SSIM: None, f"{SSIM}_clean": None,
                 f"{SSIM}_loss": None})  # a failed measurement must not enter the mean
    return rows


def _shift_rows() -> list[dict]:
    ssim = {("unet-small", "U-net", "in"): [0.8, 0.9], ("unet-small", "U-net", "out"): [0.6, 0.7],
            ("l1", "l1", "in"): [0.7, 0.7], ("l1", "l1", "out"): [0.5, 0.6]}
    return [{"shift": "dataset_shift", "role": role, "model": model, "group": group, "trained_on": "fastmri",
             "evaluated_on": "fastmri" if role == "in" else "stanford", "resolution_fix": None, "method": model,
             "config_hash": "h", "file": f"v{s}.h5", "slice": s, SSIM: value}
            for (model, group, role), values in ssim.items() for s, value in enumerate(values)]


def _heatmap_rows() -> list[dict]:
    return [{"file": "knee1.h5", "slice": 0, "image": 0, "method": m, "config_hash": "h", "window": 3, "top": t,
             "left": 0, "value": 1.0, "mse": loss, "loss": loss, "mask_seed": "knee1.h5"}
            for m, losses in {"unet": [0.2, 0.4], "l1": [0.5, 0.7]}.items() for t, loss in enumerate(losses)]


def _annotated_rows() -> list[dict]:
    boxes = {"varnet": [(1e-3, 0.9), (3e-3, 0.8)], "l1": [(5e-3, 0.7), (7e-3, 0.6)]}
    return [{"file": "knee1.h5", "slice": 10, "box": b, "label": "Meniscus Tear", "top": 40, "left": 50, "height": 8,
             "width": 12, "method": m, "config_hash": "h", "box_mse": mse, "ssim_variant": "volume-max", SSIM: ssim,
             "ssim": ssim, "mse": mse / 2} for m, values in boxes.items() for b, (mse, ssim) in enumerate(values)]


ROWS = {"k-recon": _recon_rows(), "k-attack": _attack_rows(), "k-heat": _heatmap_rows(), "k-shift": _shift_rows(),
        "k-boxes": _annotated_rows()}
ARTEFACTS = {
    "k-recon": {"example": {"target": _image(0), "unet": _image(1), "l1": _image(2)}},
    "k-attack": {"eps": 0.04, "examples": {"clean": {"target": _image(0), "unet": _image(1), "l1": _image(2)},
                                           "unet": {"perturbed_target": _image(3), "unet": _image(4),
                                                    "l1": _image(5)}}},
    "k-heat": {"targets": {0: _image(0)}, "settings": {"window": 3, "stride": 1}},
    "k-shift": {"examples": {"fastmri -> fastmri": {"target": _image(0), "unet-small": _image(1), "l1": _image(2)},
                             "fastmri -> stanford": {"target": _image(3), "unet-small": _image(4),
                                                     "l1": _image(5)}}, "mask": "4x random"},
}


def make_source(folder: Path, name: str = "demo-study", *, unfinished: bool = False,
                keys: tuple[str, ...] | None = None) -> ReportSource:
    """A train, recon, attack, heatmap, shift and annotated job (or those of `keys`), all finished
    (plus an unfinished one)."""
    chosen = [job for job in JOBS if keys is None or job[0] in keys]
    jobs = [{"key": k, "name": n, "kind": kind} for k, n, kind in chosen]
    if unfinished:
        jobs.append({"key": "k-late", "name": "annotated-late", "kind": "annotated"})
    records = {k: {"key": k, "name": n, "kind": kind, "settings": {"eps": [0.04], "images": 2},
                   "data": {"knee": "/data/knee"}, "methods": {"unet": {"name": "unet"}},
                   "mask": "4x random (centre 0.08)", "versions": VERSIONS, "device": "cpu", "seconds": 12.5,
                   "finished": "2026-11-24T15:00:00", "rows": len(ROWS.get(k, []))} for k, n, kind in chosen}
    rows = {k: [{**r, "study": name, "experiment": n, "kind": kind, "job": k} for r in ROWS[k]]
            for k, n, kind in chosen if k in ROWS}
    return ReportSource(folder, name, jobs, records, lambda key: rows.get(key, []),
                        lambda key: ARTEFACTS.get(key, {}), config=f"name: {name}\n")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report of the full source, written once (drawing its figures takes seconds): its index.html."""
    folder = tmp_path_factory.mktemp("report")
    return write_report(make_source(folder / "study"), folder / "report")


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


def _mean_ci(cell: str) -> tuple[float, float, float]:
    """`mean [low, high]` as numbers."""
    found = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", cell)
    assert found, cell
    return tuple(float(v) for v in found.groups())


def test_tables_hold_the_hand_computed_means(report):
    assert report.name == "index.html"
    found = tables(report.read_text())
    recon = found[f"method|slices|{SSIM}|{PSNR}|nmse|mse"]
    assert [line[:2] for line in recon] == [["unet", "2"], ["l1", "2"]]
    for line, values in zip(recon, ([(0.80, 0.90), (30, 32), (0.02, 0.01), (0.002, 0.001)],
                                    [(0.70, 0.74), (28, 29), (0.04, 0.03), (0.004, 0.003)])):
        for cell, (a, b) in zip(line[2:], values):
            mean, low, high = _mean_ci(cell)
            assert mean == pytest.approx((a + b) / 2, abs=5e-5)  # printed to 4 decimals
            assert min(a, b) - 5e-5 <= low <= mean <= high <= max(a, b) + 5e-5  # a bootstrap CI of the mean
    # transfer matrix: the failed row (image 2 of unet->unet) is left out: (0.1 + 0.3) / 2
    transfer = found["attacked|eps|unet|l1"]
    assert transfer == [["unet", "0.04", "0.2", "0.03"], ["random", "0.04", "0.02", "0.01"]]
    heat = found["method|window|n|mean loss|mean mse"]
    assert heat == [["unet", "3", "2", "0.3", "0.3"], ["l1", "3", "2", "0.6", "0.6"]]
    shift = found["group|model|fastmri -> fastmri (in)|fastmri -> stanford (out)"]
    assert shift == [["U-net", "unet-small", "0.85", "0.65"], ["l1", "l1", "0.7", "0.55"]]
    fit = found["|slope [95% CI]|intercept [95% CI]|R^2|n"]  # two models: no fit, each group's mean drop
    assert fit[0] == ["fit", "-", "-", "-", "inconclusive: only 2 models"]
    assert fit[1:] == [["drop U-net", "+0.2000", "", "", ""], ["drop l1", "+0.1500", "", "", ""]]
    boxes = found["method|n|mean box_mse|mean ssim"]
    assert boxes == [["varnet", "2", "0.002", "0.85"], ["l1", "2", "0.006", "0.65"]]
    prepared = found["job|method|kind|seconds|finished"]
    assert prepared == [["train-unet", "unet", "train", "12.5", "2026-11-24T15:00:00"]]


def test_sections_follow_the_plan_with_captions_config_and_versions(report):
    page = report.read_text()
    order = [page.index(f'<section id="{k}"') for k, _, kind in JOBS if kind != "train"]
    assert order == sorted(order)  # the plan's order, which is neither by kind nor by key
    assert 'id="k-train"' not in page  # prepare jobs only in the compact table
    assert "Figure 3: loss in SSIM" in page and "Figure 7:" in page and "Figure 2: dataset shift" in page
    assert "mask: 4x random (centre 0.08)" in page and "knee: /data/knee" in page
    assert "2.13.0+cpu" in page and "2026-11-24T15:00:00" in page
    assert "<summary>study.yaml</summary><pre>name: demo-study\n</pre>" in page
    assert "http://" not in page and "https://" not in page  # no external resources


@pytest.mark.parametrize("stem", ["example", "figure3", "figure9", "figure10", "figure7-image3", "figure17",
                                  "figure8", "figure18", "figure2", "figure4-test-knee", "figure13-train-knee",
                                  "figure6", "figure14", "examples"])
def test_every_stem_of_the_contract_has_a_caption(stem):
    captions = registry.captions()
    caption = captions.get(stem) or captions.get(stem.split("-")[0])
    assert caption and (not stem.startswith("figure") or caption.startswith(f"Figure {stem[6:].split('-')[0]}:"))


def test_text_is_escaped(tmp_path):
    evil = "<script>alert('x')</script>&"
    source = make_source(tmp_path / "study", name=evil, keys=("k-train",))
    # the study name, a job's name and kind (one without a report module), its settings and the config
    job = {"key": "k-evil", "name": evil, "kind": evil}
    source = dataclasses.replace(source, jobs=[*source.jobs, job],
                                 records={**source.records, "k-evil": {**job, "settings": {"note": evil}}},
                                 rows=lambda key: [{"x": 1}] if key == "k-evil" else [])
    page = write_report(source, tmp_path / "report").read_text()
    assert evil not in page
    assert page.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;") >= 6
    assert "no report module for kind &lt;script&gt;" in page
    assert page.count("<script>") == 1  # only the report's own image counter


def test_unfinished_jobs_are_listed(report, tmp_path):
    assert "6 of 6 jobs finished" in report.read_text() and "Not finished yet" not in report.read_text()
    source = make_source(tmp_path / "study", unfinished=True, keys=("k-train", "k-boxes"))
    page = write_report(source, tmp_path / "report").read_text()
    assert tables(page)["job|kind|key"] == [["annotated-late", "annotated", "k-late"]]
    assert "2 of 3 jobs finished" in page and 'id="k-boxes"' in page
    records = {k: r for k, r in source.records.items() if k != "k-boxes"}  # a job not committed yet
    page = write_report(dataclasses.replace(source, records=records), tmp_path / "report").read_text()
    assert tables(page)["job|kind|key"] == [["annotated", "annotated", "k-boxes"],
                                            ["annotated-late", "annotated", "k-late"]]
    assert "1 of 3 jobs finished" in page and 'id="k-boxes"' not in page


def test_a_study_without_a_plan_says_so(report, tmp_path):
    assert "No plan yet" not in report.read_text()
    source = ReportSource(tmp_path / "fresh", "fresh", [], {}, lambda key: [], lambda key: {},
                          config="name: fresh\n", planned=False)
    page = write_report(source, tmp_path / "report").read_text()
    assert "No plan yet" in page and "0 of 0 jobs finished" in page


def test_a_folder_that_is_not_a_study_raises(tmp_path):
    from mrirobust.study.runner import write_study_report

    (tmp_path / "other").mkdir()
    for folder in (tmp_path / "other", tmp_path / "absent"):
        with pytest.raises(DataError, match=re.escape(str(folder))):
            write_study_report(folder)
    (tmp_path / "study" / "store").mkdir(parents=True)
    (tmp_path / "study" / "store" / "plan.json").write_text("{broken")
    with pytest.raises(DataError, match="plan.json"):
        write_study_report(tmp_path / "study")


def test_rows_without_a_kinds_columns_name_the_job(tmp_path):
    source = make_source(tmp_path / "study", keys=("k-attack",))
    old = {"k-attack": [{c: v for c, v in r.items() if c != "evaluated"} for r in source.rows("k-attack")]}
    with pytest.raises(DataError, match="attack job k-attack lack the column 'evaluated'"):
        write_report(dataclasses.replace(source, rows=lambda key: old.get(key, [])), tmp_path / "report")


def _figures(page: str) -> list[tuple[str, str, str]]:
    """(image source, alt text, caption) of every figure of a page."""
    return re.findall(r'<figure><img src="([^"]+)" alt="([^"]+)"><figcaption>(.*?)</figcaption></figure>', page)


def test_figures_are_drawn_with_pdf_twins_and_captions(report):
    out, page = report.parent, report.read_text()
    drawn = sorted(p.name for p in (out / "figures").iterdir())
    stems = ["k-attack-figure3", "k-attack-figure9", "k-boxes-figure8", "k-heat-figure7-image0", "k-recon-example",
             "k-shift-examples", "k-shift-figure2"]
    assert drawn == sorted(f"{s}{suffix}" for s in stems for suffix in (".pdf", ".png"))  # names unique across jobs
    for stem in stems:
        assert (out / "figures" / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
        assert (out / "figures" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        assert f'<a href="figures/{stem}.pdf">PDF</a>' in page
    figures = _figures(page)
    assert len(figures) == FIGURES and all((out / src).is_file() for src, _, _ in figures)
    captions = registry.captions()
    for src, alt, caption in figures:  # the caption of the stem without its job key, in alt text and below
        stem = next(Path(src).stem.removeprefix(f"{k}-") for k in ROWS if Path(src).stem.startswith(f"{k}-"))
        expected = captions.get(stem) or captions[stem.split("-")[0]]
        assert html.unescape(alt) == f"{stem}: {expected}"
        assert html.unescape(caption).endswith(f". {expected}") and f"<b>{stem}</b>" in caption


def test_jobs_leaving_the_plan_take_their_figures_out_of_the_report(tmp_path):
    out = tmp_path / "report"
    write_report(make_source(tmp_path / "study", keys=("k-recon", "k-boxes")), out)
    names = ["k-boxes-figure8.pdf", "k-boxes-figure8.png", "k-recon-example.pdf", "k-recon-example.png"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == names
    write_report(make_source(tmp_path / "study", keys=("k-recon",)), out)
    assert sorted(p.name for p in (out / "figures").iterdir()) == names[2:]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium_with_all_images(report, tmp_path):
    index = report
    command = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", index.resolve().as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    found = re.search(r'<body[^>]*data-images="(\d+)/(\d+)"', dom)
    assert found, dom[:500]
    loaded, total = map(int, found.groups())
    assert loaded == total == FIGURES

