"""Tables of the numbers behind the figures: group means and pivots over result rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def mean(values: Sequence[Any]) -> float:
    """Mean over the finite numbers (NaN/None mark failed measurements)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else math.nan


def means(rows: Sequence[Mapping[str, Any]], by: list[str], values: list[str]) -> tuple[list[str], list[list[Any]]]:
    """One line per distinct `by` (in order of appearance): the count and the mean of each value column."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    return ([*by, "n", *(f"mean {v}" for v in values)],
            [[*key, len(mine), *(mean([r[v] for r in mine]) for v in values)] for key, mine in groups.items()])


def pivot(rows: Sequence[Mapping[str, Any]], index: list[str], column: str, value: str
          ) -> tuple[list[str], list[list[Any]]]:
    """Mean of `value` with one line per distinct `index` and one column per distinct `column`."""
    cells: dict[tuple, dict[Any, list]] = {}
    for row in rows:
        cells.setdefault(tuple(row[k] for k in index), {}).setdefault(row[column], []).append(row[value])
    heads = list(dict.fromkeys(row[column] for row in rows))
    return ([*index, *map(str, heads)],
            [[*key, *(mean(line.get(h, [])) for h in heads)] for key, line in cells.items()])


def ok_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("status", "ok") == "ok"]


def format_table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (for the command line)."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in line] for line in body]
    widths = [max(len(str(h)), *(len(line[i]) for line in cells)) if cells else len(str(h))
              for i, h in enumerate(header)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)
