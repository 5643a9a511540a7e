"""Atomic output: a failure while writing leaves neither a partial file nor a temporary."""

from __future__ import annotations

import csv
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mrirobust.atomic import _HOST, TEMP_SUFFIX, atomic_path, check_output, temp_owner
from mrirobust.errors import DataError
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


# --- modes, stale temporaries, output errors named --------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / f"out{umask}.txt") as tmp:
            tmp.write_text("x")
        plain = tmp_path / f"plain{umask}.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / f"out{umask}.txt").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE(plain.stat().st_mode)


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "volume.h5"
    code = ("import os, sys; from mrirobust.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'x' * 100000); os.kill(os.getpid(), 9)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    assert subprocess.run([sys.executable, "-c", code, str(target)], env=env, timeout=120, check=False).returncode == -9
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".volume.h5.") and temp_owner(left.name) is not None
    alive = tmp_path / f".other.{_HOST}.{os.getppid()}.abcd{TEMP_SUFFIX}"  # a live process's write
    foreign = tmp_path / f".other.elsewhere.1.abcd{TEMP_SUFFIX}"  # another machine's
    unrelated = tmp_path / ".notes.tmp"
    for path in (alive, foreign, unrelated):
        path.write_text("keep")
    with atomic_path(tmp_path / "next.csv") as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive.name, foreign.name, unrelated.name, "next.csv"])


def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path):
    target = tmp_path / "rows.csv"
    with pytest.raises(OSError) as caught:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_is_a_folder_or_below_a_file_is_named(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        with atomic_path(tmp_path / "folder") as tmp:
            tmp.write_text("x")
    assert caught.value.filename == str(tmp_path / "folder")
    (tmp_path / "file").write_text("x")
    for below in (tmp_path / "file" / "a.csv", tmp_path / "file" / "sub" / "a.csv"):
        with pytest.raises(NotADirectoryError) as caught:
            with atomic_path(below) as tmp:
                tmp.write_text("x")
        assert caught.value.filename == str(tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]


def test_check_output_before_any_compute(tmp_path, monkeypatch):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    check_output(tmp_path / "new" / "deeper" / "rows.csv")
    check_output(tmp_path / "file")  # an existing file is replaced
    check_output(tmp_path / "folder", folder=True)
    check_output(tmp_path / "new-folder", folder=True)
    bad = {
        (tmp_path / "folder", False): f"{tmp_path / 'folder'}: is a folder, expected a file",
        (tmp_path / "file", True): f"{tmp_path / 'file'}: is a file, not a folder",
        (tmp_path / "file" / "rows.csv", False): f"{tmp_path / 'file'}: is a file, not a folder",
        (tmp_path / "file" / "sub" / "x", True): f"{tmp_path / 'file'}: is a file, not a folder",
    }
    for (path, folder), message in bad.items():
        with pytest.raises(DataError) as caught:
            check_output(path, folder=folder)
        assert str(caught.value) == message
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user without write permission
    with pytest.raises(DataError, match=f"{tmp_path / 'folder'}: permission denied"):
        check_output(tmp_path / "folder" / "rows.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
