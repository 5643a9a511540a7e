"""The static HTML report of a study folder (`mrirobust report OUT`).

Input: a `ReportSource` (the study's plan, its finished jobs' records, rows and artefacts; the study
layer reads them from its store). Output: OUT/index.html with, per finished experiment job, the
figures its kind's report module draws from the rows (PNG shown, PDF linked, in OUT/figures/),
captions, the numbers behind the figures as tables, the settings as YAML and the provenance. Plain
HTML with inline CSS and no external resources, so the folder can be mailed, archived or opened
offline. Figures are drawn first and index.html is written last (atomically), so a half-written
report never looks complete.
"""

from __future__ import annotations

import datetime
import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mrirobust.atomic import atomic_path
from mrirobust.errors import DataError
from mrirobust.report.registry import kind_report

PREPARE_KINDS = ("train", "tune")


_CSS = """body{font-family:sans-serif;max-width:70em;margin:auto;padding:1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}
td.n{text-align:right;font-family:monospace}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto}section{border-top:2px solid #888;margin-top:2em}
.missing{color:#a00}#findings li{margin:.3em 0}#findings summary{font-weight:bold}"""
_SCRIPT = """window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = loaded + "/" + images.length;
});"""

esc = html.escape


@dataclass(frozen=True)
class ReportSource:
    """What a report is drawn from: the plan (study name, jobs with key/name/kind, whether a plan
    exists), the finished jobs' records by key, and loaders of a job's rows and artefacts."""

    folder: Path
    study: str
    jobs: list[dict[str, Any]]
    records: dict[str, dict[str, Any]]
    rows: Callable[[str], list[dict[str, Any]]]
    artefacts: Callable[[str], dict[str, Any]]
    config: str | None = None  # the study config as written
    planned: bool = True
    findings: Sequence[Mapping[str, Any]] = ()  # verdicts on the paper's claims (findings.Verdict.as_dict())


def write_report(source: ReportSource, out: str | Path) -> Path:
    """Write the report of `source` into the folder `out`; returns the path of its index.html."""
    out = Path(out)
    drawn: set[str] = set()
    parts = [_header(source)] + ([_findings(source.findings)] if source.findings else [])
    prepare = [source.records[j["key"]] for j in source.jobs
               if j["key"] in source.records and j["kind"] in PREPARE_KINDS]
    if prepare:
        parts.append("<section><h2>Prepared models</h2>" + _table(
            ["job", "method", "kind", "seconds", "finished"],
            [[j["name"], ", ".join(j.get("methods", {})), j["kind"], j.get("seconds"), j.get("finished", "")]
             for j in prepare]) + "</section>")
    for entry in source.jobs:
        job = source.records.get(entry["key"])
        if job is not None and job["kind"] not in PREPARE_KINDS:
            parts.append(_job_section(source, out, job, drawn))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(source.study)}: mrirobust report</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + f"\n<script>{_SCRIPT}</script>\n</body></html>\n")
    index = out / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text(page, encoding="utf-8")
    for stale in (out / "figures").glob("*") if (out / "figures").is_dir() else ():
        if stale.name not in drawn:
            stale.unlink()
    return index


def write_summary(path: str | Path, title: str, intro: str,
                  tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[Any]]]],
                  findings: Sequence[Mapping[str, Any]]) -> Path:
    """A one-page summary (the robustness card): the verdicts first, then titled tables; written atomically."""
    parts = [f"<h1>{esc(title)}</h1><p>{esc(intro)}</p>"] + ([_findings(findings)] if findings else [])
    parts += [f"<section><h3>{esc(t)}</h3>{_table(header, body)}</section>" for t, header, body in tables]
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _header(source: ReportSource) -> str:
    jobs, planned = source.records, [j for j in source.jobs]
    unfinished = [j for j in planned if j["key"] not in jobs]
    last = max((j.get("finished", "") for j in jobs.values()), default="")
    versions: dict[str, set[str]] = {}
    for job in jobs.values():
        for package, version in job.get("versions", {}).items():
            versions.setdefault(package, set()).add(str(version))
    now = datetime.datetime.now().isoformat(timespec="seconds")
    parts = [f"<h1>{esc(source.study)}</h1>",
             f"<p>Study folder <code>{esc(str(source.folder.resolve()))}</code>; {len(jobs)} of {len(planned)} jobs "
             f"finished{f', the last at {esc(last)}' if last else ''}; "
             f"report written {esc(now)}.</p>"]
    if versions:
        parts.append("<h3>Versions</h3>" + _table(["package", "version"],
                                                  [[p, ", ".join(sorted(v))] for p, v in sorted(versions.items())]))
    if not source.planned:
        parts.append('<p class="missing">No plan yet (store/plan.json is missing): no job has started.</p>')
    if unfinished:
        parts.append('<h3 class="missing">Not finished yet</h3>' + _table(
            ["job", "kind", "key"], [[j["name"], j["kind"], j["key"]] for j in unfinished]))
    if source.config is not None:
        parts.append(f"<details><summary>study.yaml</summary><pre>{esc(source.config)}</pre></details>")
    return "<header>" + "\n".join(parts) + "</header>"


_COLOURS = {"holds": "#060", "fails": "#a00", "inconclusive": "#875c00"}


def _findings(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """The first section: one coloured line per claim (its verdict, the deciding statistic with CI
    and n), the rule and every item behind it folded beneath."""
    lines = []
    for v in verdicts:
        items = _table(["item", "verdict", "estimate", "low", "high", "n", "unit", "note"],
                       [[i["what"], i["verdict"], i["estimate"], i["low"], i["high"], i["n"], i["unit"], i["note"]]
                        for i in v["items"]]) if v["items"] else ""
        lines.append(f'<li><details><summary style="color:{_COLOURS.get(v["verdict"], "#222")}">{esc(v["line"])}'
                     f'</summary><p>Rule: {esc(v["rule"] or "-")}</p>{items}</details></li>')
    return ('<section id="findings"><h2>Findings: the paper\'s claims</h2><p>holds / fails / inconclusive '
            "from the stored rows, 95% bootstrap CIs (findings.json holds the same)</p><ul>"
            + "".join(lines) + "</ul></section>")


def _job_section(source: ReportSource, out: Path, job: dict[str, Any], drawn: set[str]) -> str:
    key, kind = job["key"], job["kind"]
    title = f'{esc(job["name"])} <small>({esc(kind)}, job {esc(key)})</small>'
    parts = [f'<section id="{esc(key)}"><h2>{title}</h2>']
    rows = source.rows(key)
    report = kind_report(kind)
    if report is None or not rows:
        parts.append(f"<p>{len(rows)} rows{'' if report else f' (no report module for kind {esc(kind)})'}.</p>")
    else:
        captions = report.captions
        try:
            prefix = f"{_safe(key)}-"
            for png in report.figures(rows, source.artefacts(key), out / "figures", prefix):
                parts.append(_figure(png, prefix, captions, drawn))
            for table_title, header, body in report.tables(rows):
                parts.append(f"<h3>{esc(table_title)}</h3>{_table(header, body)}")
        except KeyError as error:
            raise DataError(source.folder, f"rows of the {kind} job {key} lack the column {error}: "
                                           "written by an older mrirobust? use a new folder") from None
    settings = {k: job[k] for k in ("settings", "methods", "data", "mask") if k in job}
    parts.append(f"<h3>Configuration</h3><pre>{esc(yaml.safe_dump(settings, sort_keys=False))}</pre>")
    provenance = [[k, job[k]] for k in ("device", "seconds", "finished", "rows") if k in job]
    provenance += [[f"version of {p}", v] for p, v in job.get("versions", {}).items()]
    parts.append("<h3>Provenance</h3>" + _table(["field", "value"], provenance) + "</section>")
    return "\n".join(parts)


def _figure(png: Path, prefix: str, captions: dict[str, str], drawn: set[str]) -> str:
    """A <figure> for a drawn `png` (and its PDF twin) with its caption."""
    stem = png.stem.removeprefix(prefix)  # the job key may hold dashes too
    caption = captions.get(stem) or captions.get(stem.split("-")[0], "")
    drawn.update(p.name for p in (png, png.with_suffix(".pdf")) if p.is_file())
    pdf = f' <a href="figures/{esc(png.with_suffix(".pdf").name)}">PDF</a>' if png.with_suffix(".pdf").is_file() else ""
    return (f'<figure><img src="figures/{esc(png.name)}" alt="{esc(stem)}: {esc(caption)}">'
            f"<figcaption><b>{esc(stem)}</b>{pdf}. {esc(caption)}</figcaption></figure>")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


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
