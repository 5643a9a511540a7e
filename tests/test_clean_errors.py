"""The top-level handler (`clean_errors`) and the device validator (`devices.resolve_device`)."""

from __future__ import annotations

import errno
import os
import sys

import numpy as np
import pytest
import torch
import yaml
from tqdm import tqdm

from mrirobust.clean_errors import EXIT_ERROR, EXIT_INTERRUPTED, MAX_LENGTH, describe, run_cleanly
from mrirobust.devices import resolve_device
from mrirobust.errors import ConfigError, DataError

CUDA = torch.cuda.is_available()
MISSING_GPU = "cuda:99" if CUDA else "cuda"  # a GPU this machine does not have


def _caught(call) -> BaseException:
    try:
        call()
    except BaseException as error:  # noqa: BLE001 - the error is the test's subject
        return error
    raise AssertionError("no error raised")


# --- OS errors name the file ---------------------------------------------------------------------
def test_real_os_errors_are_one_line_naming_the_file(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    cases = {
        tmp_path / "folder": "is a folder, expected a file",
        tmp_path / "missing.h5": "no such file or folder",
        tmp_path / "file" / "below.csv": "is a file, not a folder",
    }
    for path, problem in cases.items():
        mode = "r" if path.name == "missing.h5" else "w"
        assert describe(_caught(lambda path=path, mode=mode: path.open(mode))) == f"{path}: {problem}"


@pytest.mark.parametrize("code, problem", [
    (errno.ENOSPC, "no space left on the device"), (errno.EACCES, "permission denied"),
    (errno.EROFS, "read-only file system"), (errno.EDQUOT, "disk quota exceeded"),
])
def test_injected_os_errors_name_the_file(tmp_path, code, problem):
    error = OSError(code, os.strerror(code), str(tmp_path / "out.csv"))
    assert describe(error) == f"{tmp_path / 'out.csv'}: {problem}"


# --- torch device errors -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpu7", "CUDA", "cuda:x", "", MISSING_GPU])
def test_torch_device_errors_are_one_line(name):
    error = _caught(lambda: torch.zeros(1, device=torch.device(name)))
    line = describe(error)
    assert line is not None and line.startswith("device: ") and "\n" not in line


@pytest.mark.parametrize("name", ["gpu7", "CUDA", "cuda:x", "", "meta", "cuda:-1", MISSING_GPU, "mps", "ipu"])
def test_resolve_device_rejects_devices_that_do_not_exist(name):
    with pytest.raises(ConfigError, match="^device: ") as caught:
        resolve_device(name)
    assert repr(name) in str(caught.value)


def test_resolve_device_accepts_what_exists():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" auto ") == torch.device("cuda" if CUDA else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if CUDA:
        assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="^--device: "):
        resolve_device("gpu7", field="--device")


# --- parse errors of the format libraries name the file being read ------------------------------
def _read_with(library: str, path):
    """A reader of ours: like the readers, it holds the file in a local named `path`."""
    if library == "pydicom":
        import pydicom

        return pydicom.dcmread(path)
    if library == "nibabel":
        import nibabel

        return nibabel.load(path)
    if library == "PIL":
        from PIL import Image

        return Image.open(path)
    if library == "yaml":
        return yaml.safe_load(open(path).read())
    return np.load(path)


@pytest.mark.parametrize("library, name", [
    ("pydicom", "scan.dcm"), ("nibabel", "brain.nii"), ("PIL", "image.png"), ("yaml", "study.yaml"),
])
def test_parse_errors_name_the_file(tmp_path, library, name):
    path = tmp_path / name
    path.write_text("key: [unclosed\n  and more: {\n" if library == "yaml" else "not an image at all\n" * 3)
    line = describe(_caught(lambda: _read_with(library, path)))
    assert line is not None and line.startswith(f"{path}: cannot read the file ({library}")
    assert "\n" not in line and len(line) <= MAX_LENGTH


# --- bugs keep their traceback; Ctrl-C; the line itself -------------------------------------------
def test_bugs_are_not_hidden():
    for bug in (ValueError("x"), TypeError("y"), KeyError("z"), RuntimeError("shape mismatch"), ZeroDivisionError()):
        assert describe(bug) is None

    def broken() -> None:
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        run_cleanly(broken)


def test_interrupt_prints_interrupted_and_exits_130(capsys):
    def interrupted() -> None:
        raise KeyboardInterrupt

    assert run_cleanly(interrupted) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "mrirobust: interrupted\n"


def test_the_message_is_one_line_on_a_fresh_line_after_a_progress_bar(capsys):
    def fails_mid_progress() -> None:
        bar = tqdm(total=10, file=sys.stderr, desc="attack")
        bar.update(4)  # a bar's line has no newline yet
        raise DataError("data/f.h5", "first line\nsecond   line")

    assert run_cleanly(fails_mid_progress) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.endswith("\nmrirobust: error: data/f.h5: first line second line\n")
    assert run_cleanly(lambda: None) == 0


def test_long_messages_are_cut():
    line = describe(ConfigError("model", "x" * 2000))
    assert len(line) == MAX_LENGTH and line.endswith("...")
