"""fastMRI multi-coil HDF5 files (knee and brain): read one slice lazily, write the same layout.

Layout of a file (what fastMRI's own `SliceDataset` relies on):
- `kspace`: (slices, coils, H, W) complex64, H the readout, W the phase encode;
- `reconstruction_rss`: (slices, h, w) float32 target in train/val files (usually 320 x 320);
- `mask`: (W,) sampled columns, only in test/challenge files (which then carry no target);
  files written by `mrirobust data import` may carry a 2-D (H, W) mask instead;
- `ismrmrd_header`: ISMRMRD XML; fastMRI derives the zero-padded k-space columns from it:
  padding_left = enc_y // 2 - center, padding_right = padding_left + maximum + 1
  (encodingLimits/kspace_encoding_step_1);
- attrs `acquisition` (CORPD_FBK, CORPDFS_FBK, AXT2, ...), `max`, `norm`, `patient_id`.

Every problem a user can cause with a file raises `DataError(path, problem)`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from mrirobust.data.hdf5_output import hdf5_writer
from mrirobust.data.sample import NO_TARGET, Sample, SampleMeta
from mrirobust.atomic import atomic_path
from mrirobust.errors import DataError

ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"
TARGET_KEY = "reconstruction_rss"

KNEE_ACQUISITIONS = frozenset({"CORPD_FBK", "CORPDFS_FBK"})
BRAIN_ACQUISITIONS = frozenset({"AXT1", "AXT1PRE", "AXT1POST", "AXT2", "AXFLAIR"})


@dataclass(frozen=True)
class VolumeInfo:
    """Metadata of one fastMRI volume, read without touching the k-space samples."""

    path: str
    num_slices: int
    num_coils: int
    shape: tuple[int, int]  # (H, W) of the k-space
    target_shape: tuple[int, int] | None
    has_mask: bool
    acquisition: str
    patient_id: str
    anatomy: str
    max_value: float | None
    encoded_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    padding_left: int
    padding_right: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VolumeInfo":
        """Inverse of `dataclasses.asdict` after a JSON round trip (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def require_target(self) -> "VolumeInfo":
        """self, or DataError if the file has no `reconstruction_rss` (before scoring anything)."""
        if self.target_shape is None:
            raise DataError(self.path, NO_TARGET)
        return self


def guess_anatomy(acquisition: str, filename: str) -> str:
    """'knee' or 'brain' from fastMRI's acquisition names or file names ('file_brain_...'), else ''."""
    if acquisition in KNEE_ACQUISITIONS:
        return "knee"
    if acquisition in BRAIN_ACQUISITIONS or acquisition.startswith("AX"):
        return "brain"
    name = filename.lower()
    for anatomy in ("knee", "brain"):
        if anatomy in name:
            return anatomy
    return ""


# --- writing -------------------------------------------------------------------------------------

def _header_xml(encoded: tuple[int, int, int], recon: tuple[int, int, int], width: int) -> str:
    """A minimal schema-valid ISMRMRD header; FOV is unknown, so 1 mm voxels are stated."""

    def space(tag: str, size: tuple[int, int, int]) -> str:
        x, y, z = size
        return (f"<{tag}><matrixSize><x>{x}</x><y>{y}</y><z>{z}</z></matrixSize>"
                f"<fieldOfView_mm><x>{x}</x><y>{y}</y><z>{z}</z></fieldOfView_mm></{tag}>")

    # The full width was acquired: centre at W//2 and last line W-1 give padding (0, W).
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="{ISMRMRD_NS}">'
        "<experimentalConditions><H1resonanceFrequency_Hz>0</H1resonanceFrequency_Hz></experimentalConditions>"
        f"<encoding>{space('encodedSpace', encoded)}{space('reconSpace', recon)}"
        "<encodingLimits><kspace_encoding_step_1>"
        f"<minimum>0</minimum><maximum>{width - 1}</maximum><center>{width // 2}</center>"
        "</kspace_encoding_step_1></encodingLimits>"
        "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
    )


def write_volume(
    path: str | Path,
    kspace: np.ndarray,
    *,
    target: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    acquisition: str = "",
    patient_id: str = "",
    recon_size: tuple[int, int] | None = None,
    attrs: dict | None = None,
) -> Path:
    """Write a fastMRI-layout multi-coil file atomically (temp file + rename: never a partial file).

    `kspace` is (slices, coils, H, W); `target` (slices, h, w) for train/val files, `mask` (W,)
    (a column mask, as in fastMRI test files) or (H, W) (any 2-D sampling pattern). The recon
    size defaults to the target's (h, w), else (H, W).
    """
    path = Path(path)
    kspace = np.asarray(kspace)
    if kspace.ndim != 4 or not np.iscomplexobj(kspace):
        raise DataError(path, f"write_volume needs complex k-space (slices, coils, H, W), got "
                              f"{kspace.dtype} of shape {kspace.shape}")
    slices, _, height, width = kspace.shape
    if target is not None:
        target = np.asarray(target, dtype=np.float32)
        if target.ndim != 3 or target.shape[0] != slices:
            raise DataError(path, f"target must be ({slices}, h, w), got shape {target.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape not in ((width,), (height, width)):
            raise DataError(path, f"mask must have shape ({width},) or ({height}, {width}), got {mask.shape}")
    if recon_size is None:
        recon_size = target.shape[1:] if target is not None else (height, width)
    header = _header_xml((height, width, 1), (*recon_size, 1), width)

    with atomic_path(path) as tmp:
        with hdf5_writer(tmp) as hf:
            # One chunk per slice: reading a slice touches exactly its own bytes.
            hf.create_dataset("kspace", data=kspace.astype(np.complex64, copy=False),
                              chunks=(1, *kspace.shape[1:]))
            if target is not None:
                hf.create_dataset(TARGET_KEY, data=target, chunks=(1, *target.shape[1:]))
                hf.attrs["max"] = float(target.max())
                hf.attrs["norm"] = float(np.linalg.norm(target))
            if mask is not None:
                hf.create_dataset("mask", data=mask)
            hf.create_dataset("ismrmrd_header", data=header.encode())
            hf.attrs["acquisition"] = acquisition
            hf.attrs["patient_id"] = patient_id
            for key, value in (attrs or {}).items():
                hf.attrs[key] = value
    return path


# --- reading -------------------------------------------------------------------------------------

def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataError(path, "no such file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(path, f"not a readable HDF5 file (truncated or corrupt?): {err}") from None


def _attr_str(hf: h5py.File, key: str) -> str:
    value = hf.attrs.get(key, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _dataset(path: Path, hf: h5py.File, key: str) -> h5py.Dataset:
    """hf[key], or DataError if it is a group (or anything else) rather than a dataset."""
    node = hf[key]
    if not isinstance(node, h5py.Dataset):
        raise DataError(path, f"'{key}' is an HDF5 {type(node).__name__.lower()}, expected a dataset")
    return node


def _parse_header(path: Path, hf: h5py.File, height: int, width: int, target_shape):
    """(encoded_size, recon_size, padding_left, padding_right); a file without header is unpadded."""
    recon_default = (*(target_shape or (height, width)), 1)
    if "ismrmrd_header" not in hf:
        return (height, width, 1), recon_default, 0, width
    text = _dataset(path, hf, "ismrmrd_header")[()]
    if isinstance(text, np.ndarray) and text.dtype.kind in "OSU" and text.size == 1:
        text = text.reshape(()).item()  # a one-element string array
    if not isinstance(text, (bytes, str)):
        raise DataError(path, f"ismrmrd_header is {type(text).__name__}, expected XML text")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise DataError(path, f"ismrmrd_header is not valid XML: {err}") from None

    def find(*tags: str) -> int:
        node = root.find("." + "".join(f"//{{{ISMRMRD_NS}}}{t}" for t in tags))
        if node is None:
            raise DataError(path, f"ismrmrd_header has no {'/'.join(tags)}")
        try:
            return int(node.text or "")
        except ValueError:
            raise DataError(path, f"ismrmrd_header {'/'.join(tags)} is {node.text or ''!r}, not an integer") from None

    enc = tuple(find("encoding", "encodedSpace", "matrixSize", a) for a in "xyz")
    rec = tuple(find("encoding", "reconSpace", "matrixSize", a) for a in "xyz")
    limits = ("encoding", "encodingLimits", "kspace_encoding_step_1")
    padding_left = enc[1] // 2 - find(*limits, "center")
    return enc, rec, padding_left, padding_left + find(*limits, "maximum") + 1


def _info(path: Path, hf: h5py.File) -> VolumeInfo:
    if "kspace" not in hf:
        raise DataError(path, f"no 'kspace' dataset (found: {', '.join(hf.keys()) or 'nothing'})")
    kspace = _dataset(path, hf, "kspace")
    if kspace.ndim != 4:
        hint = " (a single-coil file? only multi-coil files are supported)" if kspace.ndim == 3 else ""
        raise DataError(path, f"kspace has {kspace.ndim} dimensions {kspace.shape}, expected 4: "
                              f"(slices, coils, H, W){hint}")
    if kspace.dtype.kind != "c":
        raise DataError(path, f"kspace is {kspace.dtype}, expected complex (complex64)")
    slices, coils, height, width = kspace.shape
    target_shape = None
    if TARGET_KEY in hf:
        target = _dataset(path, hf, TARGET_KEY)
        if target.ndim != 3 or target.shape[0] != slices:
            raise DataError(path, f"{TARGET_KEY} has shape {target.shape}, expected ({slices}, h, w)")
        target_shape = tuple(target.shape[1:])
    has_mask = "mask" in hf
    if has_mask and hf["mask"].shape[-1] != width:
        raise DataError(path, f"mask has width {hf['mask'].shape[-1]} but kspace has width {width}")
    acquisition = _attr_str(hf, "acquisition")
    enc, rec, pad_left, pad_right = _parse_header(path, hf, height, width, target_shape)
    max_value = hf.attrs.get("max")
    return VolumeInfo(
        path=str(path), num_slices=slices, num_coils=coils, shape=(height, width),
        target_shape=target_shape, has_mask=has_mask, acquisition=acquisition,
        patient_id=_attr_str(hf, "patient_id"),
        anatomy=_attr_str(hf, "anatomy") or guess_anatomy(acquisition, path.name),
        max_value=None if max_value is None else float(max_value),
        encoded_size=enc, recon_size=rec, padding_left=pad_left, padding_right=pad_right,
    )


def read_header(path: str | Path) -> VolumeInfo:
    """Read a volume's metadata (shapes, attrs, ISMRMRD header) without reading k-space samples."""
    path = Path(path)
    with _open(path) as hf:
        try:
            return _info(path, hf)
        except (OSError, KeyError) as err:
            raise DataError(path, f"cannot read metadata (corrupt file?): {err}") from None


def read_slice(path: str | Path, index: int, info: VolumeInfo | None = None) -> Sample:
    """Read slice `index` of a volume (only that slice's bytes) into a `Sample`."""
    path = Path(path)
    with _open(path) as hf:
        try:
            info = info or _info(path, hf)
            if not 0 <= index < info.num_slices:
                raise DataError(path, f"slice index {index} out of range: the file has {info.num_slices} slices")
            kspace = hf["kspace"][index]
            target = hf[TARGET_KEY][index] if info.target_shape is not None else None
            mask = np.asarray(hf["mask"][()], dtype=bool) if info.has_mask else None
        except (OSError, KeyError) as err:
            raise DataError(path, f"cannot read slice {index} (corrupt file?): {err}") from None
    if not np.isfinite(kspace).all():
        raise DataError(path, f"slice {index}: kspace contains NaN or Inf")
    if target is not None and not np.isfinite(target).all():
        raise DataError(path, f"slice {index}: {TARGET_KEY} contains NaN or Inf")
    meta = SampleMeta(
        file=str(path), slice=index, acquisition=info.acquisition, anatomy=info.anatomy,
        patient_id=info.patient_id, max_value=info.max_value, encoded_size=info.encoded_size,
        recon_size=info.recon_size, padding_left=info.padding_left, padding_right=info.padding_right,
    )
    return Sample(
        kspace=torch.from_numpy(kspace.astype(np.complex64, copy=False)),
        meta=meta,
        target=None if target is None else torch.from_numpy(target.astype(np.float32, copy=False)),
        mask=None if mask is None else torch.from_numpy(mask),
    )
