"""Result rows on disk (CSV, written atomically) and as a printed summary table."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from mrirobust.atomic import atomic_path


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows (dicts with the same keys) to CSV; the file appears only once complete."""
    path = Path(path)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows to Parquet (for pandas/arrow users); the file appears only once complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    table = pa.Table.from_pylist([{k: row.get(k) for k in fields} for row in rows])
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def format_summary(summary: Sequence[dict], *, confidence: float = 0.95) -> str:
    """A plain-text table: one line per method, `mean [low, high]` for every metric."""
    if not summary:
        return "(no results)"
    metric_keys = [k for k in summary[0] if k not in ("method", "slices")]
    header = ["method", "slices", *metric_keys]
    lines = [[entry["method"], str(entry["slices"])] + [
        f"{entry[k][0]:.4f} [{entry[k][1]:.4f}, {entry[k][2]:.4f}]" for k in metric_keys
    ] for entry in summary]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    out.append(f"(mean [{confidence:.0%} bootstrap CI] over slices)")
    return "\n".join(out)
