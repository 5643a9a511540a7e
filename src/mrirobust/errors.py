"""The project's exception types: errors a user can cause, each with one clear message.

The CLI prints these without a traceback and exits with status 2; anything else is a bug.
"""

from __future__ import annotations

from pathlib import Path


class MriRobustError(Exception):
    """Base class for every error a user can cause (bad file, bad config, bad shape)."""


class DataError(MriRobustError):
    """A data file or folder cannot be used: names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ConfigError(MriRobustError):
    """A setting is unknown, missing or impossible: names the field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ShapeError(MriRobustError):
    """Arrays that must fit together do not (k-space vs mask, maps vs coils, ...)."""
