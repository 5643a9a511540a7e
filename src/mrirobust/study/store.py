"""The results store of a study: one committed record, rows and artefacts file per finished job.

A job's rows (`rows/KEY.parquet`) and artefacts (`artefacts/KEY.pt`: the tensors its figures are
drawn from) are written first, then its record (`jobs/KEY.json`), each atomically; the record is
the commit. `units/` holds the experiments' resumable units. A run killed at any point leaves only whole files, and a
job without a record simply runs again. The plan (`plan.json`) names the jobs of the current
config, so the export holds exactly their rows, once each. One run at a time holds the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mrirobust.atomic import atomic_path
from mrirobust.errors import DataError, MriRobustError
from mrirobust.results import write_csv, write_parquet

LAYOUT = 2  # the store layout this version writes (1: before typed experiments; no `layout` key)
_HELD: set[Path] = set()  # stores this process has locked


class Store:
    """`OUT/store`: plan, job records and rows; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store for this process; a second run on the same store is refused, not queued.

        `flock` is released by the kernel when the process dies, even by SIGKILL. Re-entrant within
        a process, so a command can hold the store across steps (demo: data, study, report).
        """
        held = self.root.resolve()
        if held in _HELD:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise MriRobustError(f"{self.root}: the store is in use by {holder}; wait for that run to end "
                                     "or give another --out") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            _HELD.add(held)
            try:
                yield
            finally:
                _HELD.discard(held)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write_plan(self, study: str, jobs: Sequence[Mapping[str, str]]) -> None:
        self._write_json(self.root / "plan.json", {"study": study, "layout": LAYOUT, "jobs": list(jobs)})

    def plan(self) -> dict[str, Any] | None:
        """The current plan, or None before any run has planned; a store of another layout is refused."""
        path = self.root / "plan.json"
        if not path.is_file():
            return None
        plan = _read_json(path)
        if plan.get("layout") != LAYOUT:
            raise DataError(self.root, "written by an older mrirobust: use a new folder")
        return plan

    def record(self, key: str) -> dict[str, Any] | None:
        """The committed record of job `key`, or None when that job has not finished."""
        path = self.root / "jobs" / f"{key}.json"
        return _read_json(path) if path.is_file() else None

    def commit(self, record: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
               artefacts: Mapping[str, Any] | None = None) -> None:
        """Store a finished job: rows and artefacts first, then the record that makes them count."""
        key = record["key"]
        if rows:
            self._guard(lambda: write_parquet(rows, self.root / "rows" / f"{key}.parquet"), "rows")
        if artefacts:
            self._guard(lambda: self._save(artefacts, self.root / "artefacts" / f"{key}.pt"), "artefacts")
        self._write_json(self.root / "jobs" / f"{key}.json", {**record, "rows": len(rows)})

    def rows(self, key: str) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        path = self.root / "rows" / f"{key}.parquet"
        try:
            return pq.read_table(path).to_pylist() if path.is_file() else []
        except (OSError, ValueError) as error:
            raise DataError(path, f"cannot read the job's rows: {error}") from None

    def artefacts(self, key: str) -> dict[str, Any]:
        """The tensors a job's figures are drawn from ({} when it has none)."""
        path = self.root / "artefacts" / f"{key}.pt"
        try:
            return torch.load(path, weights_only=True) if path.is_file() else {}
        except (OSError, RuntimeError) as error:
            raise DataError(path, f"cannot read the job's artefacts: {error}") from None

    @staticmethod
    def _save(value: Any, path: Path) -> Path:
        with atomic_path(path) as tmp:
            torch.save(value, tmp)
        return path

    def export(self, keys: Sequence[str], folder: str | Path) -> list[Path]:
        """All rows of the given (committed) jobs, in order, as results.csv and results.parquet."""
        rows = [row for key in keys for row in self.rows(key)]
        if not rows:
            return []
        folder = Path(folder)
        return [self._guard(lambda: write_csv(rows, folder / "results.csv"), "results.csv"),
                self._guard(lambda: write_parquet(rows, folder / "results.parquet"), "results.parquet")]

    def _write_json(self, path: Path, value: Any) -> None:
        def write() -> Path:
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(value, indent=1, default=str) + "\n")
            return path
        self._guard(write, path.name)

    def _guard(self, write: Any, what: str) -> Path:
        """Run a write; a full disk becomes one clear error (the atomic write left nothing behind)."""
        try:
            return write()
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise MriRobustError(f"{self.root}: the disk is full while writing {what}; the store keeps every "
                                     "job committed before this one — free space and run the study again") from None
            raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(path, f"cannot read it as JSON: {error}") from None
