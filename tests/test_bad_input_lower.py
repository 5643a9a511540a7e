"""A catalogue of bad inputs below the experiment layer (files, outputs, devices, Ctrl-C), each run
through the command line: exit 2 (130 after Ctrl-C), exactly one line on stderr naming the file or
field, no traceback and no new file.

Most cases run `mrirobust.cli.main` in-process (fast); two run the console script in a child
process: a real file-size limit under HDF5 and a real SIGINT during data generation.
"""

from __future__ import annotations

import errno
import io
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirobust import cli
from mrirobust.atomic import TEMP_SUFFIX
from mrirobust.data import hdf5_output
from mrirobust.data.fastmri import write_volume
from tests.clean_error import files, the_line

MISSING_GPU = "cuda:99" if torch.cuda.is_available() else "cuda"
SCRIPT = Path(sys.executable).with_name("mrirobust")
CSV_HEADER = "file,slice,study_level,x,y,width,height,label\n"


def _kspace(seed: int = 0, shape=(2, 2, 16, 16)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _edit(path: Path, edit: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "r+") as hf:
        edit(hf)
    return path


def _replace(hf: h5py.File, key: str, value) -> None:
    del hf[key]
    hf[key] = value


def _make_inputs(root: Path) -> None:
    """Every input file the cases name, all under `root/in`."""
    src = root / "in"
    src.mkdir()
    target = np.random.default_rng(1).random((2, 8, 8), dtype=np.float32)
    train = write_volume(src / "train.h5", _kspace(), target=target)
    write_volume(src / "test.h5", _kspace(), mask=np.ones(16, bool))
    _edit(write_volume(src / "group.h5", _kspace(), target=target),
          lambda hf: (hf.__delitem__("kspace"), hf.create_group("kspace")))
    header = train.read_bytes()
    (src / "header.h5").write_bytes(header)
    _edit(src / "header.h5", lambda hf: _replace(
        hf, "ismrmrd_header", hf["ismrmrd_header"][()].replace(b"<center>8</center>", b"<center>8.5</center>")))
    (src / "float.h5").write_bytes(header)
    _edit(src / "float.h5", lambda hf: _replace(hf, "kspace", np.zeros((2, 2, 16, 16), np.float32)))
    (src / "truncated.h5").write_bytes(header[: len(header) // 3])
    (src / "notes.h5").write_text("not HDF5\n")
    (src / "empty.h5").write_bytes(b"")
    np.save(src / "img.npy", np.random.default_rng(2).random((16, 16)).astype(np.float32))
    for name in ("scan.dcm", "brain.nii", "photo.png"):
        (src / name).write_text("not an image\n" * 4)
    (src / "short.csv").write_text(CSV_HEADER + "train,0,No,1,1,2,2,lesion\ntrain,1,No,1\n")
    (src / "long.csv").write_text(CSV_HEADER + "train,0,No,1,1,2,2,lesion,extra\n")
    (src / "latin1.csv").write_bytes(CSV_HEADER.encode() + "train,0,No,1,1,2,2,l\xe9sion\n".encode("latin-1"))
    (src / "blocker").write_text("a file where a folder is needed\n")
    (root / "taken" / "img.h5").mkdir(parents=True)  # an output path that is a folder


class FullDisk(io.FileIO):
    """An output file on a disk with `room` bytes left."""

    def __init__(self, path, mode, buffering: int = -1, room: int = 300) -> None:
        super().__init__(path, mode.replace("b", ""))
        self.room = room

    def write(self, data) -> int:
        if self.tell() + memoryview(data).nbytes > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


class Interrupted(FullDisk):
    """The user presses Ctrl-C while the output is being written."""

    def write(self, data) -> int:
        if self.room and self.tell() + memoryview(data).nbytes > self.room:
            self.room = 0
            signal.raise_signal(signal.SIGINT)
        return io.FileIO.write(self, data)


def _no_permission(path, mode, buffering=-1):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


@dataclass(frozen=True)
class Case:
    name: str
    argv: str  # "{in}" is the input folder, "{out}" a fresh output folder
    named: str  # what the line must name
    patch: Callable | None = None  # replaces the HDF5 writer's `open`
    code: int = 2


FROM_IMAGES = "data from-images {in}/img.npy {out} --coils 2"
RECON = "recon {in}/train.h5 --methods zero-filled --out {out}"
ANNOTATED = "features annotated {in}/train.h5 {in}/%s --methods zero-filled --out {out}"
CASES = [
    # readers: files that are not what they claim
    Case("kspace-group", "data info {in}/group.h5", "group.h5: 'kspace' is an HDF5 group"),
    Case("header-not-integer", "data info {in}/header.h5", "header.h5: ismrmrd_header encoding/encodingLimits/"
                                                           "kspace_encoding_step_1/center is '8.5', not an integer"),
    Case("kspace-float", "data info {in}/float.h5", "float.h5: kspace is float32"),
    Case("truncated", "data info {in}/truncated.h5", "truncated.h5: not a readable HDF5 file"),
    Case("text-as-h5", "data info {in}/notes.h5", "notes.h5: not a readable HDF5 file"),
    Case("empty-h5", "data info {in}/empty.h5", "empty.h5: not a readable HDF5 file"),
    Case("missing", "data info {in}/missing.h5", "missing.h5: no such file"),
    Case("recon-kspace-group", RECON.replace("train.h5", "group.h5"), "group.h5: 'kspace' is an HDF5 group"),
    Case("recon-no-target", RECON.replace("train.h5", "test.h5"), "test.h5: slice 0 has no reconstruction_rss"),
    Case("annotations-short-row", ANNOTATED % "short.csv", "short.csv: line 3: 4 fields, but the header has 8"),
    Case("annotations-long-row", ANNOTATED % "long.csv", "long.csv: line 2: 9 fields, but the header has 8"),
    Case("annotations-not-utf8", ANNOTATED % "latin1.csv", "latin1.csv: not a readable CSV text file"),
    Case("corrupt-dicom", "data from-images {in}/scan.dcm {out}", "scan.dcm"),
    Case("corrupt-nifti", "data from-images {in}/brain.nii {out}", "brain.nii"),
    Case("corrupt-png", "data from-images {in}/photo.png {out}", "photo.png"),
    # devices
    Case("device-typo", RECON + " --device gpu7", "device"),
    Case("device-missing-gpu", RECON + f" --device {MISSING_GPU}", "device"),
    # outputs
    Case("out-below-a-file", "data from-images {in}/img.npy {in}/blocker/out --coils 2",
         "blocker: is a file, not a folder"),
    Case("out-is-a-folder", "data from-images {in}/img.npy {in}/../taken --coils 2", "img.h5: is a folder"),
    Case("disk-full", FROM_IMAGES, "img.h5: no space left on the device", patch=FullDisk),
    Case("no-permission", FROM_IMAGES, "img.h5: permission denied", patch=_no_permission),
    Case("ctrl-c-while-writing", FROM_IMAGES, "interrupted", patch=Interrupted, code=130),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    _make_inputs(root)
    return root


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clean_line(case: Case, inputs: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(inputs / "cache"))
    monkeypatch.chdir(inputs)
    out = inputs / "out" / case.name
    if case.patch is not None:
        monkeypatch.setattr(hdf5_output, "open", case.patch, raising=False)
    before = files(inputs)
    argv = case.argv.replace("{in}", str(inputs / "in")).replace("{out}", str(out)).split()
    code = cli.main(argv)
    line = the_line(capsys.readouterr().err)
    assert code == case.code, line
    assert line.startswith("mrirobust: error: " if code == 2 else "mrirobust: interrupted"), line
    assert case.named in line, line
    assert files(inputs) == before


def _script(args: list[str], preexec: Callable[[], None]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=preexec)


def test_a_real_file_size_limit_under_hdf5(inputs: Path) -> None:
    """EFBIG from the kernel inside HDF5's writes: one line, exit 2, no file, no segfault."""
    out = inputs / "out" / "fsize"
    child = _script(["data", "from-images", str(inputs / "in" / "img.npy"), str(out), "--coils", "2"],
                    lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000)))
    _, err = child.communicate(timeout=300)
    assert child.returncode == 2, err
    assert f"{out / 'img.h5'}: file too large" in the_line(err)
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_a_real_ctrl_c_during_data_generation(tmp_path: Path) -> None:
    """SIGINT once the first volume is being written: 'interrupted', exit 130, no temporary left."""
    out = tmp_path / "synth"
    child = _script(["data", "synth", str(out)], lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list(out.rglob(f"*{TEMP_SUFFIX}")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert the_line(err) == "mrirobust: interrupted"
    assert not list(out.rglob(f"*{TEMP_SUFFIX}"))
