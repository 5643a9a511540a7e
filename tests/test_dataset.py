"""SliceDataset: filters, slice selection, the index cache, DataLoader batching, describe()."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mrirobust.data import fastmri
from mrirobust.data.dataset import INDEX_NAME, SliceDataset, collate_samples, describe, select_slices
from mrirobust.data.fastmri import write_volume
from mrirobust.errors import ConfigError, DataError, ShapeError

H, W = 8, 6


def write(path, slices: int, coils: int, acquisition: str, width: int = W, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (slices, coils, H, width)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    # slice s carries the value s in its first sample, so a test can tell which slice was read
    kspace[:, 0, 0, 0] = np.arange(slices)
    return write_volume(path, kspace, target=rng.random((slices, 4, 4), dtype=np.float32), acquisition=acquisition)


@pytest.fixture
def folder(tmp_path):
    write(tmp_path / "knee_pd.h5", 10, 4, "CORPD_FBK")
    write(tmp_path / "sub" / "knee_pdfs.h5", 7, 2, "CORPDFS_FBK", seed=1)
    write(tmp_path / "file_brain_AXT2_1.h5", 5, 4, "AXT2", width=10, seed=2)
    return tmp_path


def test_recursive_files_and_filters(folder):
    assert len(SliceDataset(folder)) == 22
    assert len(SliceDataset(folder, acquisitions={"CORPD_FBK", "CORPDFS_FBK"})) == 17
    assert len(SliceDataset(folder, num_coils=4)) == 15
    assert len(SliceDataset(folder, num_coils=range(1, 3))) == 7
    assert len(SliceDataset(folder, anatomy="brain")) == 5
    assert len(SliceDataset([folder / "knee_pd.h5"])) == 10


def test_middle_and_range_slices(folder):
    ds = SliceDataset(folder / "knee_pd.h5", slices="middle:3")
    assert [s for _, s in ds.index] == [4, 5, 6]
    assert [int(ds[i].kspace[0, 0, 0].real) for i in range(3)] == [4, 5, 6]  # the right slices were read
    assert [s for _, s in SliceDataset(folder / "knee_pd.h5", slices=(8, 20)).index] == [8, 9]
    assert [s for _, s in SliceDataset(folder / "knee_pd.h5", slices="2:4").index] == [2, 3]
    evens = SliceDataset(folder / "knee_pd.h5", slices=lambda info: range(0, info.num_slices, 4))
    assert [s for _, s in evens.index] == [0, 4, 8]
    info = fastmri.read_header(folder / "file_brain_AXT2_1.h5")
    assert select_slices("middle:10", info) == list(range(5))  # more than there are: all of them
    with pytest.raises(ConfigError, match="slices"):
        select_slices("center:3", info)


def test_empty_and_filtered_out(folder, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match="no .h5 files found"):
        SliceDataset(empty)
    with pytest.raises(DataError, match=r"filter acquisitions=\{'AXFLAIR'\} left no files \(3 seen; "
                                        r"present: AXT2, CORPDFS_FBK, CORPD_FBK\)"):
        SliceDataset(folder, acquisitions={"AXFLAIR"})
    with pytest.raises(DataError, match=r"filter num_coils=16 left no files \(3 seen, 2 passed the earlier filters; present: 2, 4\)"):
        SliceDataset(folder, anatomy="knee", num_coils=16)


def count_header_reads(monkeypatch) -> list:
    calls = []
    read = fastmri.read_header
    monkeypatch.setattr(fastmri, "read_header", lambda path: calls.append(path) or read(path))
    return calls


def test_index_cache_reused_and_invalidated(folder, monkeypatch):
    calls = count_header_reads(monkeypatch)
    first = SliceDataset(folder)
    assert len(calls) == 3 and (folder / INDEX_NAME).is_file()
    second = SliceDataset(folder, acquisitions={"AXT2"})
    assert len(calls) == 3  # every VolumeInfo came from the cache
    assert [v for v in first.volumes if v.acquisition == "AXT2"] == second.volumes
    changed = write(folder / "knee_pd.h5", 12, 4, "CORPD_FBK")
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    assert len(SliceDataset(folder)) == 24 and len(calls) == 4  # only the changed file re-read
    (folder / "sub" / "knee_pdfs.h5").unlink()
    assert len(SliceDataset(folder)) == 17 and len(calls) == 4
    assert len(json.loads((folder / INDEX_NAME).read_text())["files"]) == 2  # removed files pruned


def test_cache_location_options(folder, tmp_path_factory, monkeypatch):
    user_cache = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))
    SliceDataset(folder, cache=False)
    assert not (folder / INDEX_NAME).exists()
    SliceDataset([folder / "knee_pd.h5"])  # a list of files: cached in the user cache folder
    assert len(list((user_cache / "mrirobust").glob("index-*.json"))) == 1
    custom = user_cache / "mine.json"
    SliceDataset(folder, cache=custom)
    assert custom.is_file() and not (folder / INDEX_NAME).exists()


def test_dataloader_batches(folder):
    ds = SliceDataset(folder, num_coils=4, anatomy="knee")
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_samples)))
    assert batch["kspace"].shape == (3, 4, H, W) and batch["kspace"].dtype == torch.complex64
    assert batch["target"].shape == (3, 4, 4) and batch["mask"] is None and batch["maps"] is None
    assert [m.slice for m in batch["meta"]] == [0, 1, 2]
    torch.testing.assert_close(batch["kspace"][1], ds[1].kspace)


def test_collate_masks_and_mismatch(folder):
    ds = SliceDataset(folder)
    samples = [ds[0], ds[1]]
    masked = [s.__class__(kspace=s.kspace, meta=s.meta, mask=torch.arange(s.shape[1]) % 2 == 0) for s in samples]
    assert collate_samples(masked)["mask"].shape == (2, 1, 1, 10)
    with pytest.raises(ShapeError, match="kspace differ.*knee_pd.h5\\[0\\]: \\(4, 8, 6\\)"):
        collate_samples([ds[0], ds[5]])  # brain 8x10 vs knee 8x6


def test_describe(folder):
    info = describe(folder)
    assert info["files"] == 3 and info["slices"] == 22
    assert info["coils"] == {2: 1, 4: 2}
    assert info["kspace_shapes"] == {"8x10": 1, "8x6": 2}
    assert info["acquisitions"] == {"AXT2": 1, "CORPDFS_FBK": 1, "CORPD_FBK": 1}
    assert info["anatomies"] == {"brain": 1, "knee": 2} and info["with_mask"] == 0


def test_bad_file_in_folder(folder):
    (folder / "broken.h5").write_text("oops")
    with pytest.raises(DataError, match="broken.h5: not a readable HDF5"):
        SliceDataset(folder)
    with pytest.warns(UserWarning, match="broken.h5"):
        assert len(SliceDataset(folder, skip_bad=True)) == 22
