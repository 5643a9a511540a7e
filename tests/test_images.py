"""Image folders -> simulated fastMRI files: every reader, errors, and the written layout."""

import sys

import nibabel
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mrirobust.data.fastmri import read_slice
from mrirobust.data.images import ImageSimulation, images_to_fastmri, load_images
from mrirobust.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def _write_dicom(path, pixels):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, 1
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_every_reader(tmp_path):
    stack = RNG.random((3, 12, 10)).astype(np.float32)
    np.save(tmp_path / "stack.npy", stack)
    grey = RNG.integers(0, 255, (14, 16), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "photo.png")
    volume = RNG.random((10, 12, 4))  # (x, y, z)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "head.nii.gz")
    pixels = RNG.integers(0, 1000, (8, 9))
    _write_dicom(tmp_path / "scan.dcm", pixels)
    (tmp_path / "README.txt").write_text("ignored")

    images = dict(load_images(tmp_path))
    assert sorted(images) == ["head", "photo", "scan", "stack"]
    np.testing.assert_array_equal(images["stack"], stack)
    np.testing.assert_array_equal(images["photo"], grey[None].astype(np.float32))
    # axial slice k, anterior (+y) up: row r is y = 11 - r, column c is x = c
    assert images["head"].shape == (4, 12, 10)
    np.testing.assert_allclose(images["head"][2], volume[:, ::-1, 2].T, rtol=1e-6)
    np.testing.assert_array_equal(images["scan"], (2 * pixels + 1)[None].astype(np.float32))
    assert all(a.dtype == np.float32 and a.ndim == 3 for a in images.values())


def test_unreadable_and_unsupported_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported image type"):
        load_images(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="no image files"):
        load_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: cannot read"):
        load_images(tmp_path)
    np.save(tmp_path / "line.npy", np.zeros(5))
    with pytest.raises(DataError, match="line.npy"):
        load_images(tmp_path / "line.npy")
    with pytest.raises(DataError, match="no such file"):
        load_images(tmp_path / "missing")


def test_missing_extra_names_it(tmp_path, monkeypatch):
    nibabel.save(nibabel.Nifti1Image(np.ones((4, 4, 2)), np.eye(4)), tmp_path / "v.nii")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # makes `import nibabel` fail
    with pytest.raises(DataError, match=r"pip install mrirobust\[images\]"):
        load_images(tmp_path / "v.nii")


def test_images_to_fastmri(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", RNG.random((2, 16, 12)).astype(np.float32))
    Image.fromarray(RNG.integers(0, 255, (10, 8), dtype=np.uint8)).save(src / "b.png")
    paths = images_to_fastmri(src, tmp_path / "out", ImageSimulation(num_coils=3, snr_db=20.0, oversample=True, seed=1))
    assert [p.name for p in paths] == ["a.h5", "b.h5"]
    first = read_slice(paths[0], 1)
    assert first.kspace.shape == (3, 32, 12) and first.target.shape == (16, 12)
    assert read_slice(paths[1], 0).kspace.shape == (3, 20, 8)
    again = images_to_fastmri(src, tmp_path / "again", ImageSimulation(num_coils=3, snr_db=20.0, oversample=True, seed=1))
    assert again[0].read_bytes() == paths[0].read_bytes()


def test_options_attributes_shading_and_target_max(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "flat.npy", np.ones((1, 24, 20), np.float32))  # fills the field of view, corners included
    out = images_to_fastmri(src, tmp_path / "plain", ImageSimulation(num_coils=8, snr_db=float("inf")))[0]
    target = read_slice(out, 0).target.numpy()
    assert target.max() < 2.0 * np.median(target)  # coil shading at the corners does not set the max
    unshaded = images_to_fastmri(src, tmp_path / "unshaded", ImageSimulation(
        num_coils=4, snr_db=None, shading=False, acquisition="AXT2", anatomy="brain"))[0]
    sample = read_slice(unshaded, 0)
    np.testing.assert_allclose(sample.target.numpy(), 1.0, rtol=1e-5)  # RSS of normalised maps x image
    assert (sample.meta.acquisition, sample.meta.anatomy) == ("AXT2", "brain")
    with pytest.raises(ConfigError, match="--coils"):
        ImageSimulation(num_coils=0)
    with pytest.raises(ConfigError, match="--snr-db"):
        ImageSimulation(snr_db=float("nan"))


@pytest.mark.parametrize("name, content", [("bad.dcm", b"garbage" * 50), ("cut.nii", b"\x5c\x01" + b"\0" * 300)])
def test_corrupt_dicom_and_nifti_are_one_line_errors(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=name) as error:
        load_images(tmp_path / name)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("option", [["--coils", "0"], ["--snr-db", "nan"]])
def test_cli_bad_options_fail_before_reading(tmp_path, capsys, option):
    from mrirobust.cli import main

    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))
    assert main(["data", "from-images", str(tmp_path / "a.npy"), str(tmp_path / "out"), *option]) == 2
    err = capsys.readouterr().err.strip()
    assert option[0] in err and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()
