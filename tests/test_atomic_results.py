"""Atomic output: a failure while writing leaves neither a partial file nor a temporary."""

from __future__ import annotations

import csv

import pytest

from mrirobust.atomic import atomic_path
from mrirobust.results import format_summary, write_csv


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_write_csv_round_trip(tmp_path):
    rows = [{"method": "a", "ssim": 0.5}, {"method": "b", "ssim": 0.25, "extra": 1}]
    path = write_csv(rows, tmp_path / "sub" / "rows.csv")
    with open(path) as handle:
        read = list(csv.DictReader(handle))
    assert [r["method"] for r in read] == ["a", "b"]
    assert read[1]["extra"] == "1" and read[0]["extra"] == ""


def test_format_summary_lists_every_method_and_interval():
    text = format_summary([{"method": "sense", "slices": 3, "ssim": (0.9, 0.85, 0.95)}])
    assert "sense" in text and "0.9000 [0.8500, 0.9500]" in text
