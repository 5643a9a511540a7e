"""mridata.org Stanford 3-D FSE knees (ISMRMRD .h5, 8 coils) as 2-D multi-coil slices.

Each ISMRMRD acquisition is one fully sampled readout line (coils x kx) at phase-encode indices
(kspace_encode_step_1 = ky, kspace_encode_step_2 = kz). An inverse FFT along kx gives hybrid
(x, ky, kz) data; every x position is an axial slice whose (coils, ky, kz) k-space is a 2-D
multi-coil sample (H = ky, W = kz).

The `ismrmrd` package reads one acquisition per call (`Dataset.read_acquisition`), far too slow for
the ~80k lines of a real file, so the lines are read in bulk straight from the ISMRMRD HDF5 layout
(`dataset/data`: compound rows of `head`, `traj`, `data`; `data` is the (coils, samples) complex
line as interleaved float32) in chunks, which also bounds memory.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import numpy as np
import torch
from torch.utils.data import Dataset

from mrirobust.data.dataset import find_files, slice_range
from mrirobust.data.fastmri import ISMRMRD_NS
from mrirobust.data.sample import Sample, SampleMeta
from mrirobust.errors import DataError
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import center_crop, ifft2c

ACQUISITION = "stanford-3d-fse"
_HEAD_FIELDS = {"flags", "number_of_samples", "active_channels", "idx"}
CHUNK_LINES = 4096
Size3 = tuple[int, int, int]
# Lines that are not imaging data of the 3-D k-space.
_SKIP_FLAGS = sum(1 << (f - 1) for f in (
    ismrmrd.ACQ_IS_NOISE_MEASUREMENT, ismrmrd.ACQ_IS_NAVIGATION_DATA, ismrmrd.ACQ_IS_PHASECORR_DATA,
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION, ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
    ismrmrd.ACQ_IS_HPFEEDBACK_DATA, ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA,
    ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE, ismrmrd.ACQ_IS_PHASE_STABILIZATION))


def _ifftc_at(lines: torch.Tensor, xs: list[int]) -> torch.Tensor:
    """Centred orthonormal inverse FFT along the last axis, keeping only positions `xs`.

    Selecting through fftshift's index map avoids shifting the discarded positions.
    """
    n = lines.shape[-1]
    spectrum = torch.fft.ifft(torch.fft.ifftshift(lines, dim=-1), dim=-1, norm="ortho")
    return spectrum[..., torch.fft.fftshift(torch.arange(n))[xs]]


class _Lines:
    """The imaging lines of an ISMRMRD file: sizes from the first lines and the XML header,
    then (headers + data) read in one pass of chunks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise DataError(path, "no such file")
        try:
            self.file = h5py.File(path, "r")
        except OSError as err:
            raise DataError(path, f"not a readable HDF5 file (truncated or corrupt?): {err}") from None
        try:
            self._read_sizes()
        except BaseException:
            self.file.close()
            raise

    def _read_sizes(self) -> None:
        if "dataset/data" not in self.file:
            raise DataError(self.path, "not an ISMRMRD raw-data file: no 'dataset/data' acquisitions")
        self.data = self.file["dataset/data"]
        self._check_layout()
        first = self.data.fields("head")[:64]
        first = first[(first["flags"] & _SKIP_FLAGS) == 0]
        if first.size == 0:
            raise DataError(self.path, "no imaging acquisitions among the first 64 (all noise/calibration?)")
        self.num_x, self.num_coils = int(first["number_of_samples"][0]), int(first["active_channels"][0])
        self.encoded_size, self.recon_size = self._sizes()

    def _check_layout(self) -> None:
        """The acquisitions are ISMRMRD's compound rows: a header with the fields read here and
        the samples as variable-length float32 (interleaved complex64)."""
        dtype = self.data.dtype if isinstance(self.data, h5py.Dataset) else None
        expected = "ISMRMRD acquisitions (compound rows of head, traj, data)"
        if dtype is None or not {"head", "data"} <= set(dtype.names or ()):
            raise DataError(self.path, f"dataset/data is {dtype or 'a group'}, expected {expected}")
        missing = _HEAD_FIELDS - set(dtype["head"].names or ())
        if missing:
            raise DataError(self.path, f"dataset/data head lacks {', '.join(sorted(missing))}; expected {expected}")
        samples = h5py.check_vlen_dtype(dtype["data"])
        if samples != np.float32:
            raise DataError(self.path, f"dataset/data samples are {samples or dtype['data']}, expected "
                                       "variable-length float32 (interleaved complex64)")

    def _sizes(self) -> tuple[Size3, Size3]:
        """Encoded and recon (x, y, z) from the XML header, else (slowly) from every line's indices."""
        root = None
        if "dataset/xml" in self.file:
            try:
                root = ET.fromstring(self.file["dataset/xml"][0])
            except ET.ParseError as err:
                raise DataError(self.path, f"the ISMRMRD XML header is not valid XML: {err}") from None

        def size(space: str) -> Size3 | None:
            nodes = [None if root is None else
                     root.find(f".//{{{ISMRMRD_NS}}}{space}/{{{ISMRMRD_NS}}}matrixSize/{{{ISMRMRD_NS}}}{a}")
                     for a in "xyz"]
            if None in nodes:
                return None
            try:
                return tuple(int(n.text or "") for n in nodes)
            except ValueError:
                texts = ", ".join(repr(n.text or "") for n in nodes)
                raise DataError(self.path, f"the ISMRMRD XML header's {space}/matrixSize is ({texts}), "
                                           "not integers") from None

        encoded = size("encodedSpace")
        if encoded is None:
            idx = self.data.fields("head")[:]["idx"]
            encoded = (self.num_x, int(idx["kspace_encode_step_1"].max()) + 1,
                       int(idx["kspace_encode_step_2"].max()) + 1)
        # The readout length is what the lines hold (the header may describe it before oversampling).
        encoded = (self.num_x, *encoded[1:])
        return encoded, size("reconSpace") or encoded

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, torch.Tensor]]:
        """(ky, kz, lines (n, coils, kx) complex64) for consecutive chunks of imaging lines."""
        _, ny, nz = self.encoded_size
        for start in range(0, self.data.shape[0], CHUNK_LINES):
            try:
                rows = self.data[start : start + CHUNK_LINES]
            except OSError as err:
                raise DataError(self.path, f"cannot read acquisitions (corrupt file?): {err}") from None
            head = rows["head"]
            keep = (head["flags"] & _SKIP_FLAGS) == 0
            head = head[keep]
            if head.size == 0:
                continue
            odd = (head["number_of_samples"] != self.num_x) | (head["active_channels"] != self.num_coils)
            if odd.any():
                raise DataError(self.path, f"acquisition {start + int(np.flatnonzero(keep)[np.argmax(odd)])} has "
                                           f"{head['number_of_samples'][odd][0]} samples x "
                                           f"{head['active_channels'][odd][0]} coils, the first line "
                                           f"{self.num_x} x {self.num_coils}")
            ky = head["idx"]["kspace_encode_step_1"].astype(np.int64)
            kz = head["idx"]["kspace_encode_step_2"].astype(np.int64)
            if ky.max() >= ny or kz.max() >= nz:
                raise DataError(self.path, f"encode indices up to ({ky.max()}, {kz.max()}) exceed the "
                                           f"encoded matrix {ny} x {nz}")
            lines = np.stack(rows["data"][keep]).view(np.complex64)
            yield ky, kz, torch.from_numpy(lines.reshape(head.size, self.num_coils, self.num_x))

    def close(self) -> None:
        self.file.close()


def read_mridata_volume(path: str | Path) -> torch.Tensor:
    """The 3-D k-space (coils, kx, ky, kz) complex64 of an ISMRMRD file; unsampled lines are zero."""
    lines = _Lines(Path(path))
    try:
        _, ny, nz = lines.encoded_size
        volume = torch.zeros(lines.num_coils, lines.num_x, ny, nz, dtype=torch.complex64)
        for ky, kz, data in lines.chunks():
            volume[:, :, ky, kz] = data.permute(1, 2, 0)
    finally:
        lines.close()
    return volume


def read_mridata_hybrid(path: str | Path, slices: str | tuple[int, int] | None = None
                        ) -> tuple[torch.Tensor, list[int], tuple[Size3, Size3]]:
    """Hybrid data (coils, len(xs), ky, kz) of the chosen x positions, the positions xs, and sizes.

    Only the chosen positions are kept while the lines stream through the kx inverse FFT.
    """
    lines = _Lines(Path(path))
    try:
        xs = slice_range(slices, lines.num_x)
        if not xs:
            raise DataError(path, f"slices={slices!r} selects none of the {lines.num_x} x positions")
        _, ny, nz = lines.encoded_size
        hybrid = torch.zeros(lines.num_coils, len(xs), ny, nz, dtype=torch.complex64)
        for ky, kz, data in lines.chunks():
            hybrid[:, :, ky, kz] = _ifftc_at(data, xs).permute(1, 2, 0)
    finally:
        lines.close()
    return hybrid, xs, (lines.encoded_size, lines.recon_size)


def rss_target(kspace: torch.Tensor, crop: tuple[int, int] | None = None) -> torch.Tensor:
    """Root-sum-of-squares of the coil images of fully sampled k-space (..., coils, H, W)."""
    target = rss(ifft2c(kspace))
    return target if crop is None else center_crop(target, crop)


class MridataSliceDataset(Dataset):
    """2-D multi-coil `Sample`s (one per x position) of mridata.org 3-D FSE knee files.

    A file's chosen slices are computed on first use and kept until another file is needed, so
    iterate in order (no shuffling across files) to read each file once. `max_value` is the
    largest target value over the chosen slices of the file.
    """

    def __init__(self, path_or_folder: str | Path, *, slices: str | tuple[int, int] | None = None,
                 crop: tuple[int, int] | None = None,
                 transform: Callable[[Sample], Any] | None = None) -> None:
        self.files = find_files(path_or_folder)
        if not self.files:
            raise DataError(path_or_folder, "no .h5 files found")
        self.slices, self.crop, self.transform = slices, crop, transform
        self.index = []
        for path in self.files:
            lines = _Lines(path)
            lines.close()
            self.index += [(path, pos, x) for pos, x in enumerate(slice_range(slices, lines.num_x))]
        self._loaded: tuple[Path, torch.Tensor, torch.Tensor, tuple[Size3, Size3]] | None = None

    def _load(self, path: Path):
        if self._loaded is None or self._loaded[0] != path:
            hybrid, _, sizes = read_mridata_hybrid(path, self.slices)
            kspace = hybrid.transpose(0, 1).contiguous()  # (slices, coils, ky, kz)
            self._loaded = (path, kspace, rss_target(kspace, self.crop), sizes)
        return self._loaded

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Any:
        path, pos, x = self.index[i]
        _, kspace, targets, (encoded, recon) = self._load(path)
        meta = SampleMeta(file=str(path), slice=x, acquisition=ACQUISITION, anatomy="knee",
                          max_value=float(targets.max()), encoded_size=encoded, recon_size=recon)
        sample = Sample(kspace=kspace[pos], meta=meta, target=targets[pos])
        return self.transform(sample) if self.transform else sample
