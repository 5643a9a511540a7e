"""The static HTML report of a study folder (`mrirobust report OUT`).

Input: the folder the study runner writes (store/plan.json, store/jobs/<K>.json, store/rows/<K>.parquet,
figures under runs/). Output: OUT/report/index.html with, per finished experiment job, its figures
(PNG shown, PDF linked, both copied to report/figures/), captions, the numbers behind the figures as
tables, the settings as YAML and the provenance. Plain HTML with inline CSS and no external resources,
so the folder can be mailed, archived or opened offline. Figures are copied first and index.html is
written last (atomically), so a half-written report never looks complete.
"""

from __future__ import annotations

import datetime
import html
import math
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from mrirobust.atomic import atomic_path
from mrirobust.errors import DataError
from mrirobust.study.store import Store

PREPARE_KINDS = ("train", "tune")

# Captions keyed by figure stem; a stem such as "figure7-image2" falls back to its prefix "figure7".
CAPTIONS = {
    "example": "Example reconstructions of the first slice: the target and each method's reconstruction (top, "
               "on the target's grey scale) and the absolute error (bottom, scale 0 to a quarter of the target's "
               "maximum).",
    "figure3": "Figure 3: loss in SSIM (clean - perturbed) vs relative perturbation size eps, one panel per attacked "
               "method, every method evaluated on the perturbations; dashed: a random perturbation of the same "
               "norm; bands: 95% bootstrap CI over images.",
    "figure9": "Figure 9: each method under its own attack at the largest eps. First column: the ground truth; per "
               "attacked method: its clean reconstruction, the ground truth seen through the perturbation "
               "(perturbed ground truth) and its reconstruction from the perturbed measurement.",
    "figure10": "Figure 10: l1 with wavelet, Fourier and DCT sparsifying bases, each under its own attack: loss in "
                "SSIM vs eps; dashed: a random perturbation of the same norm; bands: 95% bootstrap CI over images.",
    "figure7": "Figure 7: the ground truth and, per method, a heat map of the MSE inside a k x k feature (filled with "
               "the image's maximum) placed at each grid position, normalised to [0, 1] per method; each cell is "
               "centred on its window's centre. (Figure 16 when the methods are ConvDecoder optimiser variants.)",
    "figure17": "Figure 17: mean information loss of an inserted feature per method and feature size (k x k window "
                "at random placements); error bars: standard error of the mean over placements and images.",
    "figure8": "Figure 8: MSE inside each annotated pathology box vs the SSIM of its slice; faint points: every box, "
               "large points: each method's mean; dashed: linear fit over the method means with its 95% band "
               "(three methods or more).",
    "figure18": "Figure 18: crops around annotated boxes (outlined in yellow): the ground truth and every method's "
                "reconstruction on the ground truth's grey scale, one row per box.",
    "figure2": "Figure 2: dataset shift: mean SSIM per model on the target dataset (y) vs on the source dataset it "
               "was trained/tuned on (x); bars: 95% CIs over slices; dotted: y = x; red: linear fit across models "
               "with its 95% band.",
    "figure4": "Figure 4: anatomy shift, one panel per test anatomy: mean SSIM per model trained on the other "
               "anatomy (y) vs trained on the test anatomy itself (x); bars: 95% CIs; dotted: y = x; red: linear "
               "fit across models with its 95% band.",
    "figure13": "Figure 13: anatomy shift, one panel per training anatomy: each model's mean SSIM on the other "
                "anatomy (y) vs on its training anatomy (x); bars: 95% CIs; dotted: y = x; red: linear fit across "
                "models with its 95% band.",
    "figure6": "Figure 6: adversarially-filtered shift: mean SSIM per model on the hard set (the slices with the "
               "lowest SSIM under a filter method that is not evaluated) vs on the normal set; bars: 95% CIs; "
               "dotted: y = x; red: linear fit across models with its 95% band.",
    "figure14": "Figure 14: frequency content of the hard set. Left: low-frequency proportion (energy in the "
                "sampled centre / total energy) vs the filter method's SSIM, hard vs normal slices. Right: mean "
                "energy density along the phase-encode direction per set (log scale), the sampled centre shaded.",
    "examples": "Example reconstructions of the first slice, one row per direction (trained on -> evaluated on): "
                "the target and every model's reconstruction on the target's grey scale.",
}

_CSS = """body{font-family:sans-serif;max-width:70em;margin:auto;padding:1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}
td.n{text-align:right;font-family:monospace}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto}section{border-top:2px solid #888;margin-top:2em}
.missing{color:#a00}"""
_SCRIPT = """window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = loaded + "/" + images.length;
});"""

esc = html.escape


def write_report(results: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the study folder `results` into the folder `out` (default results/report);
    returns the path of its index.html."""
    results = Path(results)
    out = Path(out) if out is not None else results / "report"
    plan, jobs = _load(results)
    copied: set[str] = set()
    parts = [_header(results, plan, jobs)]
    prepare = [j for j in jobs.values() if j["kind"] in PREPARE_KINDS]
    if prepare:
        parts.append("<section><h2>Prepared models</h2>" + _table(
            ["job", "method", "kind", "seconds", "finished"],
            [[j["name"], ", ".join(j.get("methods", {})), j["kind"], j.get("seconds"), j.get("finished", "")]
             for j in prepare]) + "</section>")
    for entry in plan["jobs"]:
        job = jobs.get(entry["key"])
        if job is not None and job["kind"] not in PREPARE_KINDS:
            parts.append(_job_section(results, out, job, copied))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(plan['study'])}: mrirobust report</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + f"\n<script>{_SCRIPT}</script>\n</body></html>\n")
    index = out / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text(page, encoding="utf-8")
    for stale in (out / "figures").glob("*") if (out / "figures").is_dir() else ():
        if stale.name not in copied:
            stale.unlink()
    return index


def _load(results: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The plan and the finished jobs by key; a plan with no jobs when the study has not planned yet."""
    store = Store(results / "store")
    plan = store.plan()
    if plan is None and not (results / "study.yaml").is_file():
        raise DataError(results, "not a study folder (no study.yaml, no store/plan.json)")
    planned = plan is not None
    plan = plan or {"study": results.name, "jobs": []}
    jobs = {entry["key"]: record for entry in plan["jobs"] if (record := store.record(entry["key"]))}
    plan["unfinished"] = [j for j in plan["jobs"] if j["key"] not in jobs]
    plan["planned"] = planned
    return plan, jobs


def _header(results: Path, plan: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> str:
    last = max((j.get("finished", "") for j in jobs.values()), default="")
    versions: dict[str, set[str]] = {}
    for job in jobs.values():
        for package, version in job.get("versions", {}).items():
            versions.setdefault(package, set()).add(str(version))
    now = datetime.datetime.now().isoformat(timespec="seconds")
    parts = [f"<h1>{esc(plan['study'])}</h1>",
             f"<p>Study folder <code>{esc(str(results.resolve()))}</code>; {len(jobs)} of {len(plan['jobs'])} jobs "
             f"finished{f', the last at {esc(last)}' if last else ''}; "
             f"report written {esc(now)}.</p>"]
    if versions:
        parts.append("<h3>Versions</h3>" + _table(["package", "version"],
                                                  [[p, ", ".join(sorted(v))] for p, v in sorted(versions.items())]))
    if not plan["planned"]:
        parts.append('<p class="missing">No plan yet (store/plan.json is missing): no job has started.</p>')
    if plan["unfinished"]:
        parts.append('<h3 class="missing">Not finished yet</h3>' + _table(
            ["job", "kind", "key"], [[j["name"], j["kind"], j["key"]] for j in plan["unfinished"]]))
    config = results / "study.yaml"
    if config.is_file():
        parts.append(f"<details><summary>study.yaml</summary><pre>{esc(config.read_text(encoding='utf-8'))}</pre>"
                     "</details>")
    return "<header>" + "\n".join(parts) + "</header>"


def _job_section(results: Path, out: Path, job: dict[str, Any], copied: set[str]) -> str:
    key = job["key"]
    title = f'{esc(job["name"])} <small>({esc(job["kind"])}, job {esc(key)})</small>'
    parts = [f'<section id="{esc(key)}"><h2>{title}</h2>']
    for figure in job.get("figures", []):
        parts.append(_figure(results / figure, out / "figures", f"{_safe(key)}-", copied))
    rows_path = results / "store" / "rows" / f"{key}.parquet"
    for title, table in _tables(job["kind"], Store(results / "store").rows(key), rows_path):
        parts.append(f"<h3>{esc(title)}</h3>{table}")
    settings = {k: job[k] for k in ("settings", "methods", "data", "mask") if k in job}
    parts.append(f"<h3>Configuration</h3><pre>{esc(yaml.safe_dump(settings, sort_keys=False))}</pre>")
    provenance = [[k, job[k]] for k in ("device", "seconds", "finished", "rows", "outputs") if k in job]
    provenance += [[f"version of {p}", v] for p, v in job.get("versions", {}).items()]
    parts.append("<h3>Provenance</h3>" + _table(["field", "value"], provenance) + "</section>")
    return "\n".join(parts)


def _figure(png: Path, folder: Path, prefix: str, copied: set[str]) -> str:
    """A <figure> for `png` (copied with its PDF twin into `folder`) and its caption."""
    stem = png.stem
    caption = CAPTIONS.get(stem) or CAPTIONS.get(stem.split("-")[0], "")
    if not png.is_file():
        return f'<p class="missing">{esc(stem)}: figure file {esc(str(png))} is missing.</p>'
    links = []
    for source in (png, png.with_suffix(".pdf")):
        if source.is_file():
            name = prefix + source.name
            with atomic_path(folder / name) as tmp:
                shutil.copyfile(source, tmp)
            copied.add(name)
            links.append(name)
    pdf = f' <a href="figures/{esc(links[1])}">PDF</a>' if len(links) > 1 else ""
    return (f'<figure><img src="figures/{esc(links[0])}" alt="{esc(stem)}: {esc(caption)}">'
            f"<figcaption><b>{esc(stem)}</b>{pdf}. {esc(caption)}</figcaption></figure>")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _tables(kind: str, rows: list[dict[str, Any]], path: Path) -> list[tuple[str, str]]:
    """(title, HTML table) of the numbers behind the job's figures, computed from its rows."""
    if not rows:
        return [("Numbers", "<p>No rows.</p>")]
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    columns = list(rows[0])

    def column(test: Callable[[str], bool], what: str) -> str:
        found = next((c for c in columns if test(c)), None)
        if found is None:
            raise DataError(path, f"no {what} column among {columns}")
        return found

    try:
        if kind == "recon":
            metrics = [c for c in columns if c.split("[")[0] in ("ssim", "psnr", "nmse")]
            return [("Mean per method", _means(ok, ["method"], metrics))]
        if kind == "attack":
            loss = column(lambda c: c.startswith("ssim") and c.endswith("_loss"), "SSIM loss")
            failed = len(rows) - len(ok)
            return [(f"Transfer matrix: mean {loss} (rows: attacked method and eps, columns: evaluated method)"
                     + (f"; {failed} failed rows left out" if failed else ""),
                     _pivot(ok, ["attacked", "eps"], "evaluated", loss))]
        if kind in ("heatmap", "feature_sizes"):
            return [("Mean feature loss per method and window", _means(ok, ["method", "window"], ["loss", "mse"]))]
        if kind == "annotated":
            return [("Mean per method over boxes", _means(ok, ["method"], ["box_mse", "ssim"]))]
        if kind == "shift":
            ssim = column(lambda c: c.startswith("ssim["), "SSIM")
            labelled = [{**r, "evaluation": f"{r['trained_on']} -> {r['evaluated_on']} ({r['role']})"} for r in ok]
            return [(f"Mean {ssim} per model (columns: trained on -> evaluated on (role))",
                     _pivot(labelled, ["group", "model"], "evaluation", ssim))]
    except KeyError as error:
        raise DataError(path, f"rows of a {kind} job lack the column {error}") from error
    return [("Numbers", f"<p>{len(rows)} rows (no table for kind {esc(kind)}).</p>")]


def _mean(values: Sequence[Any]) -> float:
    """Mean over the finite numbers (NaN/None mark failed measurements)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else math.nan


def _means(rows: Sequence[dict[str, Any]], by: list[str], values: list[str]) -> str:
    """One line per distinct `by` (in order of appearance): the count and the mean of each value column."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    return _table([*by, "n", *(f"mean {v}" for v in values)],
                  [[*key, len(mine), *(_mean([r[v] for r in mine]) for v in values)] for key, mine in groups.items()])


def _pivot(rows: Sequence[dict[str, Any]], index: list[str], column: str, value: str) -> str:
    """Mean of `value` with one line per distinct `index` and one column per distinct `column`."""
    cells: dict[tuple, dict[Any, list]] = {}
    for row in rows:
        cells.setdefault(tuple(row[k] for k in index), {}).setdefault(row[column], []).append(row[value])
    heads = list(dict.fromkeys(row[column] for row in rows))
    return _table([*index, *map(str, heads)],
                  [[*key, *(_mean(line.get(h, [])) for h in heads)] for key, line in cells.items()])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="n">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="n">{value}</td>'
    return f"<td>{esc(str(value))}</td>"


def _table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
    lines = "".join("<tr>" + "".join(_cell(v) for v in line) + "</tr>" for line in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"
