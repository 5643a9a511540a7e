"""Report of the recon kind: example reconstructions and per-method means with bootstrap CIs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mrirobust import schema
from mrirobust.evaluate import summarise
from mrirobust.report.figures import example_grid
from mrirobust.report.registry import KindReport, Table, register
from mrirobust.results import format_summary

CAPTIONS = {
    "example": "Example reconstructions of the first slice: the target and each method's reconstruction (top, "
               "on the target's grey scale) and the absolute error (bottom, scale 0 to a quarter of the target's "
               "maximum).",
}


def figures(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any], folder: Path, prefix: str) -> list[Path]:
    example = artefacts.get("example")
    return [example_grid(example, folder / f"{prefix}example.png", title=rows[0][schema.MASK] if rows else "")] \
        if example else []


def summary_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Per method: slices and `mean [low, high]` (95% bootstrap CI over slices) of every metric."""
    summary = summarise(rows)
    metrics = [k for k in summary[0] if k not in (schema.METHOD, "slices")] if summary else []
    body = [[entry[schema.METHOD], entry["slices"], *(f"{entry[k][0]:.4f} [{entry[k][1]:.4f}, {entry[k][2]:.4f}]"
                                                     for k in metrics)] for entry in summary]
    return "Mean per method [95% bootstrap CI over slices; n = slices]", [schema.METHOD, "slices", *metrics], body


def tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    return [summary_table(rows)]


def text(rows: Sequence[Mapping[str, Any]], artefacts: Mapping[str, Any]) -> str:
    return format_summary(summarise(rows))


register(["recon"], KindReport(figures, tables, text, CAPTIONS))
