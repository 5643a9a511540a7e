"""fastMRI-layout writer and reader, checked against fastMRI's own SliceDataset and bad files."""

from __future__ import annotations

import errno
import io
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import ismrmrd.xsd
import numpy as np
import pytest
import torch
from fastmri.data.mri_data import SliceDataset as FastmriSliceDataset

from mrirobust.data import hdf5_output
from mrirobust.data.fastmri import read_header, read_slice, write_volume
from mrirobust.errors import DataError

S, C, H, W = 4, 3, 16, 12


def volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    kspace = (rng.standard_normal((S, C, H, W)) + 1j * rng.standard_normal((S, C, H, W))).astype(np.complex64)
    return kspace, rng.random((S, 8, 8), dtype=np.float32)


@pytest.fixture
def train_file(tmp_path):
    kspace, target = volume()
    return write_volume(tmp_path / "file1000001.h5", kspace, target=target, acquisition="CORPD_FBK",
                        patient_id="p1"), kspace, target


def test_roundtrip_matches_fastmri_reader(train_file):
    path, kspace, target = train_file
    ref = FastmriSliceDataset(path.parent, challenge="multicoil", use_dataset_cache=False)
    assert len(ref) == S
    ref_kspace, ref_mask, ref_target, ref_attrs, fname, ref_slice = ref[2]
    sample = read_slice(path, 2)
    np.testing.assert_array_equal(sample.kspace.numpy(), ref_kspace)
    np.testing.assert_array_equal(sample.kspace.numpy(), kspace[2])
    np.testing.assert_array_equal(sample.target.numpy(), ref_target)
    assert ref_mask is None and sample.mask is None
    meta = sample.meta
    assert (meta.slice, meta.acquisition, meta.anatomy, meta.patient_id) == (2, "CORPD_FBK", "knee", "p1")
    assert meta.max_value == pytest.approx(ref_attrs["max"]) == pytest.approx(target.max())
    assert (meta.padding_left, meta.padding_right) == (ref_attrs["padding_left"], ref_attrs["padding_right"])
    assert meta.encoded_size == ref_attrs["encoding_size"] and meta.recon_size == ref_attrs["recon_size"]
    with h5py.File(path) as hf:
        assert hf.attrs["norm"] == pytest.approx(np.linalg.norm(target))
        header = ismrmrd.xsd.CreateFromDocument(hf["ismrmrd_header"][()])  # schema-valid XML
    assert header.encoding[0].encodedSpace.matrixSize.y == W


def test_header_padding_matches_fastmri(train_file):
    """A real-scanner header (partially acquired, zero-padded columns) gives fastMRI's padding."""
    path, _, _ = train_file
    with h5py.File(path, "r+") as hf:
        xml = hf["ismrmrd_header"][()].decode()
        xml = xml.replace(f"<maximum>{W - 1}</maximum><center>{W // 2}</center>", "<maximum>8</maximum><center>5</center>")
        del hf["ismrmrd_header"]
        hf["ismrmrd_header"] = xml.encode()
    ref_attrs, _ = FastmriSliceDataset._retrieve_metadata(None, path)
    info = read_header(path)
    assert (info.padding_left, info.padding_right) == (ref_attrs["padding_left"], ref_attrs["padding_right"]) == (1, 10)


def test_test_file_mask_and_header(tmp_path):
    kspace, _ = volume(1)
    mask = np.zeros(W, bool)
    mask[::3] = True
    path = write_volume(tmp_path / "file_brain_AXT2_200_1.h5", kspace, mask=mask, acquisition="AXT2",
                        attrs={"acceleration": 4})
    info = read_header(path)
    assert info.has_mask and info.target_shape is None and info.max_value is None
    assert (info.num_slices, info.num_coils, info.shape, info.anatomy) == (S, C, (H, W), "brain")
    _, ref_mask, _, _, _, _ = FastmriSliceDataset(tmp_path, challenge="multicoil", use_dataset_cache=False)[0]
    sample = read_slice(path, 0, info)
    assert sample.mask.dtype == torch.bool and sample.target is None
    np.testing.assert_array_equal(sample.mask.numpy(), ref_mask)


def test_write_is_atomic(train_file):
    path, kspace, target = train_file
    before = path.read_bytes()
    with pytest.raises(TypeError):  # h5py cannot store an object attribute: fails mid-write
        write_volume(path, kspace[:1], target=target[:1], attrs={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def poison_slice(path, index: int) -> None:
    """Overwrite the stored bytes of one k-space slice with 0xFF (a NaN pattern)."""
    with h5py.File(path) as hf:
        chunk = hf["kspace"].id.get_chunk_info_by_coord((index, 0, 0, 0))
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)


def test_reads_only_the_requested_slice(train_file, monkeypatch):
    path, kspace, _ = train_file
    poison_slice(path, S - 1)
    selections = []
    getitem = h5py.Dataset.__getitem__

    def spy(self, args, *rest, **kw):
        selections.append((self.name, args))
        return getitem(self, args, *rest, **kw)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    np.testing.assert_array_equal(read_slice(path, 0).kspace.numpy(), kspace[0])
    assert [a for name, a in selections if name in ("/kspace", "/reconstruction_rss")] == [0, 0]
    monkeypatch.undo()
    with pytest.raises(DataError, match=rf"file1000001.h5: slice {S - 1}: kspace contains NaN"):
        read_slice(path, S - 1)


def rewrite(path, **datasets) -> None:
    with h5py.File(path, "r+") as hf:
        for key, value in datasets.items():
            del hf[key]
            if value is not None:
                hf[key] = value


@pytest.mark.parametrize("change, message", [
    (dict(kspace=None), "no 'kspace' dataset"),
    (dict(kspace=np.zeros((S, H, W), np.complex64)), r"kspace has 3 dimensions .* expected 4: \(slices, coils, H, W\)"),
    (dict(kspace=np.zeros((S, C, H, W), np.float32)), "kspace is float32, expected complex"),
    (dict(reconstruction_rss=np.zeros((S + 1, 8, 8), np.float32)), r"reconstruction_rss has shape \(5, 8, 8\)"),
])
def test_bad_layout(train_file, change, message):
    path, _, _ = train_file
    rewrite(path, **change)
    with pytest.raises(DataError, match="file1000001.h5: " + message):
        read_header(path)


def test_mask_width_mismatch(train_file):
    path, _, _ = train_file
    with h5py.File(path, "r+") as hf:
        hf["mask"] = np.ones(W + 2, bool)
    with pytest.raises(DataError, match=f"file1000001.h5: mask has width {W + 2} but kspace has width {W}"):
        read_slice(path, 0)


def test_not_hdf5_and_truncated(tmp_path, train_file):
    path, _, _ = train_file
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(DataError, match="notes.h5: not a readable HDF5 file"):
        read_header(text)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="file1000001.h5: .*(truncated|corrupt)"):
        read_slice(path, S - 1)
    with pytest.raises(DataError, match="missing.h5: no such file"):
        read_header(tmp_path / "missing.h5")


def test_slice_out_of_range(train_file):
    path, _, _ = train_file
    with pytest.raises(DataError, match=f"file1000001.h5: slice index {S} out of range: the file has {S} slices"):
        read_slice(path, S)


# --- a full disk: an OSError naming the file, never a crash or a partial file -----------------
class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left: a write beyond it fails with ENOSPC (or, with
    `interrupt`, the user presses Ctrl-C during that write, which then goes through)."""

    def __init__(self, path, mode, room: int, interrupt: bool = False) -> None:
        super().__init__(path, mode.replace("b", ""))
        self.room, self.interrupt = room, interrupt

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if self.tell() + size > self.room and self.interrupt:
            self.room = math.inf
            signal.raise_signal(signal.SIGINT)
        elif self.tell() + size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.mark.parametrize("room", [0, 200, 5000, 30000])
def test_a_full_disk_raises_enospc_naming_the_file_and_leaves_nothing(train_file, monkeypatch, room):
    path, kspace, target = train_file
    before = path.read_bytes()
    assert room < len(before)
    monkeypatch.setattr(hdf5_output, "open", lambda p, mode, **_: FullDisk(p, mode, room), raising=False)
    with pytest.raises(OSError) as caught:
        write_volume(path, kspace, target=target)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_ctrl_c_inside_an_hdf5_write_leaves_nothing(train_file, monkeypatch):
    path, kspace, target = train_file
    before = path.read_bytes()
    monkeypatch.setattr(hdf5_output, "open", lambda p, mode, **_: FullDisk(p, mode, 5000, interrupt=True),
                        raising=False)
    with pytest.raises(KeyboardInterrupt):
        write_volume(path, kspace, target=target)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_file_size_limit_is_an_error_not_a_segfault(tmp_path):
    """A real failing write below HDF5 (RLIMIT_FSIZE: EFBIG), in a child process."""
    code = ("import resource, signal, sys, numpy as np\n"
            "from mrirobust.data.fastmri import write_volume\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (30000, 30000))\n"
            "try:\n"
            "    write_volume(sys.argv[1], np.ones((4, 4, 64, 64), np.complex64))\n"
            "except OSError as error:\n"
            "    print(error.errno, error.filename)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.h5")], env=env, timeout=120,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(errno.EFBIG), str(tmp_path / "big.h5")]
    assert list(tmp_path.iterdir()) == []


# --- layouts that are not what they claim --------------------------------------------------------
def test_kspace_stored_as_a_group(train_file):
    path, _, _ = train_file
    with h5py.File(path, "r+") as hf:
        del hf["kspace"]
        hf.create_group("kspace")
    with pytest.raises(DataError, match="file1000001.h5: 'kspace' is an HDF5 group, expected a dataset"):
        read_header(path)


@pytest.mark.parametrize("field, text", [("center", "six"), ("maximum", "11.5"), ("center", "")])
def test_a_non_integer_header_field_is_named(train_file, field, text):
    path, _, _ = train_file
    with h5py.File(path, "r+") as hf:
        xml = hf["ismrmrd_header"][()].decode()
        old = f"<{field}>{W // 2 if field == 'center' else W - 1}</{field}>"
        xml = xml.replace(old, f"<{field}>{text}</{field}>")
        del hf["ismrmrd_header"]
        hf["ismrmrd_header"] = xml.encode()
    with pytest.raises(DataError, match=f"file1000001.h5: ismrmrd_header .*kspace_encoding_step_1/{field} "
                                        f"is '{text}', not an integer"):
        read_header(path)


def test_a_file_without_target_says_so_when_a_target_is_needed(tmp_path):
    kspace, _ = volume()
    path = write_volume(tmp_path / "file_test.h5", kspace, mask=np.ones(W, bool))
    with pytest.raises(DataError, match="file_test.h5: has no reconstruction_rss target"):
        read_header(path).require_target()
    with pytest.raises(DataError, match="file_test.h5: slice 1 has no reconstruction_rss target"):
        read_slice(path, 1).require_target()
