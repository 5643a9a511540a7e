"""What the report shows for each experiment kind: figures, tables and a text summary.

Each kind's figure module registers one `KindReport`; the HTML report and the command line look
the kind up here, so a new experiment kind adds one figure module and nothing else in report/.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Rows = Sequence[Mapping[str, Any]]
Table = tuple[str, list[str], list[list[Any]]]  # title, header, body


@dataclass(frozen=True)
class KindReport:
    """`figures(rows, artefacts, folder, prefix)` draws into `folder` and returns the PNG paths;
    `tables(rows)` and `text(rows, artefacts)` give the numbers behind them; `captions` by figure stem."""

    figures: Callable[[Rows, Mapping[str, Any], Path, str], list[Path]]
    tables: Callable[[Rows], list[Table]]
    text: Callable[[Rows, Mapping[str, Any]], str]
    captions: Mapping[str, str] = field(default_factory=dict)


_REPORTS: dict[str, KindReport] = {}
_BUILTIN = ("recon_figures", "adversarial_figures", "feature_figures", "shift_figures", "perturb_figures",
            "remedy_figures")


def register(kinds: Sequence[str], report: KindReport) -> None:
    for kind in kinds:
        _REPORTS[kind] = report


def kind_report(kind: str) -> KindReport | None:
    """The registered report of `kind` (None: rows are shown as a count only)."""
    for name in _BUILTIN:
        importlib.import_module(f"mrirobust.report.{name}")
    return _REPORTS.get(kind)


def captions() -> dict[str, str]:
    """Every registered caption by figure stem."""
    kind_report("")
    return {stem: text for report in _REPORTS.values() for stem, text in report.captions.items()}
