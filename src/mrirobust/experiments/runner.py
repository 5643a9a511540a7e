"""Run one experiment: its units through one cache, with one progress bar.

The cache is the only resume mechanism: a unit's result is stored atomically under the digest of
its identity as soon as it is computed, so a killed run loses at most the unit in progress and a
re-run (of the same or of a changed experiment) reuses every unit whose identity is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from mrirobust.atomic import atomic_path
from mrirobust.experiments.base import Experiment, Unit, UnitResult
from mrirobust.hashing import digest


class UnitCache:
    """Unit results stored one file per unit under `root`, named by a digest of their identity."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.computed = 0

    def path(self, unit: Unit) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", unit.name)[:80]
        return self.root / f"{safe}-{digest(unit.identity)}.pt"

    def get(self, unit: Unit, compute: Callable[[], UnitResult]) -> UnitResult:
        """The stored result of `unit`, or compute it and store it atomically."""
        path = self.path(unit)
        if path.is_file():
            stored = torch.load(path, weights_only=True)
            return UnitResult(stored["rows"], stored["artefacts"])
        result = compute()
        with atomic_path(path) as tmp:
            torch.save({"rows": result.rows, "artefacts": result.artefacts}, tmp)
        self.computed += 1
        return result


def run_experiment(experiment: Experiment, cache: UnitCache, *, progress: bool = True,
                   label: str = "") -> UnitResult:
    """Check, plan and run every unit of `experiment` (resuming from `cache`); the finished result."""
    experiment.check()
    units = experiment.units()
    done: dict[str, UnitResult] = {}
    with tqdm(total=len(units), desc=label or experiment.kind, unit="unit", disable=not progress) as bar:
        for unit in units:
            bar.set_postfix_str(unit.name[-40:])
            done[unit.name] = cache.get(unit, lambda: experiment.run(unit, done))
            bar.update()
    return experiment.finish([done[unit.name] for unit in units])
