"""mridata.org ISMRMRD reader: a small 3-D phantom written line by line with the `ismrmrd` package."""

from __future__ import annotations

import h5py
import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest
import torch

from mrirobust.data import mridata
from mrirobust.data.mridata import MridataSliceDataset, read_mridata_hybrid, read_mridata_volume
from mrirobust.errors import DataError

COILS, NX, NY, NZ = 4, 32, 24, 20


def phantom_coil_images() -> np.ndarray:
    """(coils, x, y, z) complex: an off-centre ellipsoid with a ramp, times smooth coil phases/gains."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (NX, NY, NZ)), indexing="ij")
    obj = ((x / 0.7) ** 2 + ((y - 0.1) / 0.6) ** 2 + (z / 0.8) ** 2 < 1) * (1.0 + 0.5 * x + 0.3 * y)
    coils = [np.exp(1j * (c + 1) * (x + 0.5 * y)) * (1.2 + np.cos(c + z)) for c in range(COILS)]
    return (np.stack(coils) * obj).astype(np.complex64)


def fft3c(images: np.ndarray) -> np.ndarray:
    axes = (-3, -2, -1)
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(images, axes=axes), axes=axes, norm="ortho"), axes=axes)


def write_ismrmrd(path, kspace: np.ndarray, noise_line: bool = True) -> None:
    """Write (coils, kx, ky, kz) k-space as mridata files are: one acquisition per (ky, kz) line."""
    space = lambda: ismrmrd.xsd.encodingSpaceType(  # noqa: E731
        matrixSize=ismrmrd.xsd.matrixSizeType(x=NX, y=NY, z=NZ),
        fieldOfView_mm=ismrmrd.xsd.fieldOfViewMm(x=160.0, y=160.0, z=120.0))
    limit = lambda n: ismrmrd.xsd.limitType(minimum=0, maximum=n - 1, center=n // 2)  # noqa: E731
    header = ismrmrd.xsd.ismrmrdHeader(
        experimentalConditions=ismrmrd.xsd.experimentalConditionsType(H1resonanceFrequency_Hz=127_000_000),
        encoding=[ismrmrd.xsd.encodingType(
            encodedSpace=space(), reconSpace=space(), trajectory=ismrmrd.xsd.trajectoryType.CARTESIAN,
            encodingLimits=ismrmrd.xsd.encodingLimitsType(kspace_encoding_step_1=limit(NY),
                                                          kspace_encoding_step_2=limit(NZ)))])
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    dset.write_xml_header(ismrmrd.xsd.ToXML(header))
    if noise_line:  # a noise scan first, as scanners write: must be skipped
        noise = ismrmrd.Acquisition.from_array(np.full((COILS, NX), 1e3, np.complex64))
        noise.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        dset.append_acquisition(noise)
    for kz in range(NZ):
        for ky in range(NY):
            acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(kspace[:, :, ky, kz]))
            acq.idx.kspace_encode_step_1, acq.idx.kspace_encode_step_2 = ky, kz
            dset.append_acquisition(acq)
    dset.close()


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    images = phantom_coil_images()
    path = tmp_path_factory.mktemp("mridata") / "knee.h5"
    write_ismrmrd(path, fft3c(images))
    return path, images


def test_volume_matches_written_kspace_and_ismrmrd_reader(phantom_file, monkeypatch):
    path, images = phantom_file
    monkeypatch.setattr(mridata, "CHUNK_LINES", 100)  # several chunks
    volume = read_mridata_volume(path)
    assert volume.shape == (COILS, NX, NY, NZ) and volume.dtype == torch.complex64
    np.testing.assert_allclose(volume.numpy(), fft3c(images), atol=1e-5)
    # the bulk read agrees with the package's own one-line-at-a-time reader
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    acq = dset.read_acquisition(1 + 7 * NY + 5)  # after the noise line: kz=7, ky=5
    dset.close()
    np.testing.assert_array_equal(volume[:, :, 5, 7].numpy(), acq.data)


def test_hybrid_slices_reconstruct_phantom(phantom_file):
    path, images = phantom_file
    hybrid, xs, (encoded, _) = read_mridata_hybrid(path, slices="middle:4")
    assert xs == [14, 15, 16, 17] and encoded == (NX, NY, NZ)
    coil_images = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(hybrid, dim=(-2, -1)), norm="ortho"),
                                     dim=(-2, -1))
    np.testing.assert_allclose(coil_images.numpy(), images[:, xs], atol=1e-5)


def test_dataset_samples(phantom_file):
    path, images = phantom_file
    ds = MridataSliceDataset(path.parent, slices=(10, 13), crop=(16, 16))
    assert len(ds) == 3
    sample = ds[1]
    assert sample.kspace.shape == (COILS, NY, NZ) and sample.meta.slice == 11
    assert sample.meta.anatomy == "knee" and sample.meta.acquisition == "stanford-3d-fse"
    rss = np.sqrt((np.abs(images[:, 11]) ** 2).sum(0))[4:20, 2:18]  # centre crop 16 x 16
    np.testing.assert_allclose(sample.target.numpy(), rss, atol=1e-5)
    targets_max = max(float(ds[i].target.max()) for i in range(3))
    assert sample.meta.max_value == pytest.approx(targets_max)


def test_bad_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match="notes.h5.*not a readable HDF5"):
        read_mridata_volume(text)
    with h5py.File(tmp_path / "fastmri.h5", "w") as hf:
        hf["kspace"] = np.zeros((1, 2, 4, 4), np.complex64)
    with pytest.raises(DataError, match="fastmri.h5.*no 'dataset/data'"):
        read_mridata_volume(tmp_path / "fastmri.h5")


def _rewrite_data(path, dtype) -> None:
    """Replace dataset/data by a dataset of `dtype` holding the same number of rows."""
    with h5py.File(path, "r+") as hf:
        rows = hf["dataset/data"].shape[0]
        del hf["dataset/data"]
        hf.create_dataset("dataset/data", shape=(rows,), dtype=dtype)


@pytest.mark.parametrize("dtype, message", [
    (np.float32, "dataset/data is float32, expected ISMRMRD acquisitions"),
    (np.dtype([("head", [("flags", "<u8")]), ("data", h5py.vlen_dtype(np.float32))]),
     "dataset/data head lacks active_channels, idx, number_of_samples"),
    ("float64-samples", "dataset/data samples are float64, expected variable-length float32"),
])
def test_acquisitions_of_the_wrong_dtype(phantom_file, tmp_path, dtype, message):
    path = tmp_path / "bad.h5"
    path.write_bytes(phantom_file[0].read_bytes())
    if dtype == "float64-samples":
        with h5py.File(path) as hf:
            original = hf["dataset/data"].dtype
        dtype = np.dtype([(name, h5py.vlen_dtype(np.float64) if name == "data" else original[name])
                          for name in original.names])
    _rewrite_data(path, dtype)
    for read in (read_mridata_volume, MridataSliceDataset):
        with pytest.raises(DataError, match=f"bad.h5: {message}"):
            read(path)


def test_a_non_integer_matrix_size_is_named(phantom_file, tmp_path):
    path = tmp_path / "bad.h5"
    path.write_bytes(phantom_file[0].read_bytes())
    with h5py.File(path, "r+") as hf:
        xml = hf["dataset/xml"][0]
        hf["dataset/xml"][0] = xml.replace(f"<y>{NY}</y>".encode(), b"<y>24.5</y>", 1)
    with pytest.raises(DataError, match=r"bad.h5: the ISMRMRD XML header's encodedSpace/matrixSize is "
                                        r"\('32', '24.5', '20'\), not integers"):
        read_mridata_volume(path)
