"""Tuning: grid search of a method's settings on a tuning set for the best mean SSIM.

The result is a method config (YAML) that `build`, `mrirobust recon` and the study load like any
other method: `--methods path/to/l1-tuned.yaml`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mrirobust import schema
from mrirobust.atomic import atomic_path
from mrirobust.errors import ConfigError
from mrirobust.evaluate import evaluate
from mrirobust.methods.base import build, describe
from mrirobust.physics.masks import MaskSpec

# The settings worth tuning per family, as in the paper: l1's lambda and iterations, the
# un-trained networks' iterations and width. A starting grid; `--grid` replaces it.
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "l1": {"lam": [0.0005, 0.001, 0.002, 0.004, 0.008], "iters": [50, 100, 200]},
    "untrained": {"iters": [100, 300, 1000], "channels": [32, 64]},
    "baseline": {"l2": [0.0, 0.003, 0.01, 0.03], "iters": [10, 30]},
}


@dataclass
class TuneResult:
    """The best config, its score, and one row per tried setting."""

    best: dict[str, Any]
    best_ssim: float
    table: list[dict[str, Any]]
    on_edge: list[str] = field(default_factory=list)  # warnings: a best value on its grid's edge


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """`["lam=0.001,0.01", "iters=50"]` -> {"lam": [0.001, 0.01], "iters": [50]} (YAML scalars)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError("--grid", f"expected KEY=V1,V2,... got {item!r}")
        grid[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def default_grid(base: str | Mapping[str, Any]) -> dict[str, list[Any]]:
    """The family's default grid for `base` (a ConfigError if its family has none)."""
    method = describe(base)
    grid = DEFAULT_GRIDS.get(method.family)
    settings = set(method.settings)
    if grid is None or not set(grid) <= settings:
        raise ConfigError("--grid", f"no default grid for {method.name!r} (family {method.family!r}); "
                                    "give one with --grid KEY=V1,V2,...")
    return dict(grid)


def tune(base: str | Mapping[str, Any], grid: Mapping[str, Sequence[Any]], samples: Sequence[Any],
         spec: MaskSpec, *, device: str = "cpu", batch_size: int = 4, progress: bool = True) -> TuneResult:
    """Score every grid point of `base` on `samples` (mean SSIM) and return the best config."""

    base_config = describe(base).config()
    unknown = sorted(set(grid) - set(base_config))
    if unknown:
        raise ConfigError("--grid", f"{base_config['name']!r} has no setting {', '.join(unknown)}; "
                                    f"settings: {', '.join(k for k in base_config if k != 'name')}")
    table = []
    for values in itertools.product(*grid.values()):
        config = {**base_config, **dict(zip(grid, values))}
        method = build(config)
        result = evaluate(iter(samples), [method], spec, device=device, batch_size=batch_size,
                          total=len(samples), progress=progress)
        column = schema.ssim_column(result.rows)
        ssims = [row[column] for row in result.rows]
        table.append({**dict(zip(grid, values)), "ssim": sum(ssims) / len(ssims)})
        if progress:
            print("  ".join(f"{k}={v}" for k, v in table[-1].items()))
    best_row = max(table, key=lambda row: row["ssim"])
    best = {**base_config, **{k: best_row[k] for k in grid}}
    return TuneResult(best=best, best_ssim=best_row["ssim"], table=table, on_edge=edge_warnings(grid, best))


def edge_warnings(grid: Mapping[str, Sequence[Any]], best: Mapping[str, Any]) -> list[str]:
    """A warning per numeric setting whose best value is the smallest or largest on its grid (of at
    least two values): the optimum may lie outside the grid, so extend it that way."""
    found = []
    for key, values in grid.items():
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(set(numbers)) < 2 or len(numbers) != len(values):
            continue
        side = "smallest" if best[key] == min(numbers) else "largest" if best[key] == max(numbers) else ""
        if side:
            found.append(f"the best {key}={best[key]} is the {side} value tried ({', '.join(map(str, values))}): "
                         f"the optimum may lie beyond the grid; extend --grid {key}=...")
    return found


def save_config(config: Mapping[str, Any], path: str | Path, *, note: str = "") -> Path:
    """Write a method config as YAML (atomically), with an optional comment on how it was made."""
    path = Path(path)
    text = (f"# {note}\n" if note else "") + yaml.safe_dump(dict(config), sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
