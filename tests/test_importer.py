"""`mrirobust data import`: .npy/.npz, BART .cfl/.hdr (cross-checked with Debian's bart), ISMRMRD,
fastMRI test files; 2-D masks in the written files; one-line errors that leave nothing written."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from mrirobust.cli import main
from mrirobust.data.bart import read_bart
from mrirobust.data.fastmri import read_header, read_slice, write_volume
from mrirobust.data.importer import import_kspace
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import ifft2c
from tests.bart import bart_available, read_cfl, write_cfl
from tests.test_mridata import (
    COILS,
    NX,
    NY,
    NZ,
    fft3c,
    phantom_coil_images,
    write_ismrmrd,
)

RNG = np.random.default_rng(3)


def _kspace(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(np.complex64)


def test_npy_with_column_and_2d_masks(tmp_path):
    kspace = _kspace(2, 3, 12, 10)
    columns = np.zeros(10, bool)
    columns[[0, 4, 5, 9]] = True
    np.save(tmp_path / "cols.npy", kspace * columns)  # mask from the nonzero samples: whole columns
    pattern = RNG.random((12, 10)) < 0.4  # a 2-D (e.g. Poisson-disc) pattern
    np.save(tmp_path / "mask.npy", pattern)
    np.save(tmp_path / "single.npy", kspace[0])  # (coils, H, W): one slice
    cols = import_kspace(tmp_path / "cols.npy", tmp_path / "out")[0]
    sample = read_slice(cols, 1)
    np.testing.assert_array_equal(sample.mask.numpy(), columns)
    np.testing.assert_array_equal(sample.kspace.numpy(), (kspace * columns)[1])
    assert sample.target is None and read_header(cols).num_slices == 2
    single = import_kspace(tmp_path / "single.npy", tmp_path / "out2", mask=tmp_path / "mask.npy", anatomy="knee",
                           acquisition="CORPD_FBK")[0]
    sample = read_slice(single, 0)
    np.testing.assert_array_equal(sample.mask.numpy(), pattern)
    assert (sample.meta.anatomy, sample.meta.acquisition) == ("knee", "CORPD_FBK")


def test_npz_and_fully_sampled_data_get_an_rss_target(tmp_path):
    kspace = _kspace(1, 4, 8, 8)
    np.savez(tmp_path / "scan.npz", kspace=kspace)
    path = import_kspace(tmp_path / "scan.npz", tmp_path / "out")[0]
    sample = read_slice(path, 0)
    assert sample.mask is None
    np.testing.assert_allclose(sample.target.numpy(), rss(ifft2c(torch.from_numpy(kspace[0]))).numpy(), rtol=1e-5)


def test_fastmri_test_file_keeps_its_mask(tmp_path):
    kspace = _kspace(2, 3, 8, 6)
    mask = np.array([1, 0, 1, 1, 0, 1], bool)
    write_volume(tmp_path / "src" / "file1.h5", kspace * mask, mask=mask, acquisition="AXT2")
    path = import_kspace(tmp_path / "src", tmp_path / "out")[0]
    sample = read_slice(path, 1)
    np.testing.assert_array_equal(sample.mask.numpy(), mask)
    assert sample.meta.acquisition == "AXT2"


@pytest.mark.skipif(not bart_available(), reason="Debian's bart is not installed")
def test_cfl_reader_matches_bart(tmp_path):
    # bart writes 8-coil k-space of its Shepp-Logan phantom: dims [32, 32, 1, 8]
    subprocess.run(["bart", "phantom", "-x", "32", "-k", "-s", "8", str(tmp_path / "ph")], check=True,
                   capture_output=True)
    ours = read_bart(tmp_path / "ph.cfl")
    theirs = read_cfl(tmp_path / "ph")  # (x, y, 1, coils) by the tests' independent reader
    assert ours.shape == (1, 8, 32, 32)
    np.testing.assert_array_equal(ours[0], np.moveaxis(theirs[:, :, 0, :], -1, 0))
    path = import_kspace(tmp_path / "ph", tmp_path / "out")[0]  # the pair named without a suffix
    assert read_header(path).num_coils == 8


def test_cfl_slices_in_dimension_13(tmp_path):
    kspace = _kspace(3, 2, 6, 5)  # (slices, coils, H, W)
    bart_layout = kspace.transpose(2, 3, 1, 0)[:, :, None, :, None, None, None, None, None, None, None, None, None, :]
    write_cfl(tmp_path / "multi", bart_layout)
    np.testing.assert_array_equal(read_bart(tmp_path / "multi.hdr"), kspace)


def test_ismrmrd_3d_is_sliced_along_the_readout(tmp_path):
    images = phantom_coil_images()
    kspace = fft3c(images)
    kspace[:, :, :, ::2] = 0  # every other kz line not acquired
    write_ismrmrd(tmp_path / "raw.h5", kspace)
    path = import_kspace(tmp_path / "raw.h5", tmp_path / "out")[0]
    info = read_header(path)
    assert (info.num_slices, info.num_coils, info.shape) == (NX, COILS, (NY, NZ))
    sample = read_slice(path, NX // 2)
    assert sample.mask.shape == (NZ,) and not sample.mask[0] and sample.mask[1]
    hybrid = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kspace, axes=1), axis=1, norm="ortho"), axes=1)
    np.testing.assert_allclose(sample.kspace.numpy(), hybrid[:, NX // 2], atol=1e-5)


def _bad_sources(tmp_path):
    good = _kspace(4, 8, 8)
    write_cfl(tmp_path / "cut", good.transpose(1, 2, 0)[:, :, None])
    (tmp_path / "cut.cfl").write_bytes((tmp_path / "cut.cfl").read_bytes()[:100])
    write_cfl(tmp_path / "dims", good.transpose(1, 2, 0)[:, :, None])
    (tmp_path / "dims.hdr").write_text("# Dimensions\n8 8 1 2\n")
    np.save(tmp_path / "real.npy", good.real)
    nan = good.copy()
    nan[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.savez(tmp_path / "empty.npz")
    np.save(tmp_path / "good.npy", good)
    np.save(tmp_path / "mask.npy", np.ones((8, 7), bool))
    return {"cut.cfl": "truncated", "dims.hdr": "too long", "real.npy": "real-valued", "nan.npy": "NaN",
            "empty.npz": "empty", "good.npy --mask mask.npy": "does not fit"}


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for case, message in _bad_sources(src).items():
        name, *rest = case.split()
        args = ["data", "import", str(src / name), str(tmp_path / "out")]
        if rest:
            args += [rest[0], str(src / rest[1])]
        assert main(args) == 2, case
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and (rest[-1] if rest else name.split(".")[0]) in err
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # a folder with one bad file among good ones writes none of them
    assert main(["data", "import", str(src), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
