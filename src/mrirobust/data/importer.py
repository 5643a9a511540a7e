"""A lab's own multi-coil k-space into the fastMRI layout: `mrirobust data import SRC OUT`.

Sources (one file, or every such file of a folder):
- `.npy`: complex k-space (coils, H, W) or (slices, coils, H, W);
- `.npz`: the same under `kspace` (or its only array), with an optional `mask`;
- BART `.cfl`/`.hdr` pairs (`data.bart`): dims [H (readout), W (phase), 1, coils] with slices
  in BART's slice dimension 13;
- ISMRMRD raw `.h5` (`dataset/data`): 2-D data gives one slice; 3-D Cartesian data is sliced
  along the fully sampled readout into (ky, kz) planes, as `data.mridata` does;
- fastMRI `.h5` files (test/challenge files with `mask`, or any with `kspace`).

The mask is the one given (`mask=` a .npy of shape (W,) or (H, W), nonzero = sampled), else
the file's own, else the samples that are nonzero in any slice and coil; it is written as (W,)
when every row of its columns is sampled, else as (H, W). Fully sampled data are written
without a mask and with their RSS image as the target (like fastMRI train/val files), so every
command under-samples and scores them. Every source is read and checked
(complex, finite, shapes, mask fit) before anything is written; a problem is a `DataError`
naming the file.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from mrirobust.data.bart import CFL_SUFFIXES, read_bart
from mrirobust.data.fastmri import read_header, read_slice, write_volume
from mrirobust.data.mridata import read_mridata_volume
from mrirobust.errors import DataError
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import ifft2c

SUFFIXES = (".npy", ".npz", ".cfl", ".hdr", ".h5")


@dataclass(frozen=True)
class Imported:
    """One source's k-space (slices, coils, H, W) complex64, its mask and what else it carries."""

    kspace: np.ndarray
    mask: np.ndarray | None
    target: np.ndarray | None = None
    acquisition: str = ""


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if not names:
                raise DataError(path, "empty .npz: no arrays in it")
            key = "kspace" if "kspace" in names else names[0] if len(names) == 1 else None
            if key is None:
                raise DataError(path, f"no 'kspace' array among {', '.join(names)}")
            return archive[key], archive["mask"] if "mask" in names else None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise DataError(path, f"cannot read this .npz: {error}") from None


def _hdf5(path: Path) -> Imported:
    try:
        with h5py.File(path, "r") as hf:
            ismrmrd = "dataset/data" in hf
    except OSError as error:
        raise DataError(path, f"not a readable HDF5 file (truncated or corrupt?): {error}") from None
    if ismrmrd:
        volume = read_mridata_volume(path)  # (coils, kx, ky, kz)
        if volume.shape[-1] == 1:
            return Imported(volume[None, ..., 0].numpy(), None)
        hybrid = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(volume, dim=1), dim=1, norm="ortho"), dim=1)
        return Imported(hybrid.permute(1, 0, 2, 3).contiguous().numpy(), None)
    info = read_header(path)
    samples = [read_slice(path, i, info) for i in range(info.num_slices)]
    target = None if info.target_shape is None else np.stack([s.target.numpy() for s in samples])
    mask = None if samples[0].mask is None else samples[0].mask.numpy()
    return Imported(np.stack([s.kspace.numpy() for s in samples]), mask, target, info.acquisition)


def _read(path: Path) -> Imported:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return Imported(np.load(path, allow_pickle=False), None)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(path, f"cannot read this .npy: {error}") from None
    if suffix == ".npz":
        return Imported(*_npz(path))
    if suffix in CFL_SUFFIXES:
        return Imported(read_bart(path), None)
    if suffix == ".h5":
        return _hdf5(path)
    raise DataError(path, f"unsupported k-space file; use one of {', '.join(SUFFIXES)}")


def _mask(path: Path, mask: np.ndarray | None, kspace: np.ndarray) -> np.ndarray:
    """The sampling mask as (W,) where it is a column mask, else (H, W), checked against k-space."""
    height, width = kspace.shape[-2:]
    if mask is None:
        mask = (kspace != 0).any(axis=(0, 1))
    mask = np.asarray(mask)
    mask = mask.reshape(mask.shape[-1]) if mask.ndim >= 1 and mask.size == mask.shape[-1] else mask
    if mask.shape not in ((width,), (height, width)):
        raise DataError(path, f"mask of shape {mask.shape} does not fit k-space (H, W) = ({height}, {width}): "
                              f"expected ({width},) or ({height}, {width})")
    mask = mask != 0
    if not mask.any():
        raise DataError(path, "the mask samples nothing (or the k-space is all zero)")
    if mask.ndim == 2 and (mask == mask.any(axis=0, keepdims=True)).all():
        mask = mask.any(axis=0)  # whole columns: fastMRI's (W,) column mask
    return mask


def load_kspace(path: str | Path, mask: str | Path | None = None) -> Imported:
    """Read and check one source (see the module docstring); `mask` a .npy file or None."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    imported = _read(path)
    kspace = np.asarray(imported.kspace)
    if kspace.size == 0:
        raise DataError(path, f"empty k-space of shape {kspace.shape}")
    if not np.iscomplexobj(kspace):
        raise DataError(path, f"k-space must be complex, got real-valued {kspace.dtype}")
    if kspace.ndim == 3:
        kspace = kspace[None]
    if kspace.ndim != 4:
        raise DataError(path, f"expected k-space (coils, H, W) or (slices, coils, H, W), got shape {kspace.shape}")
    if not np.isfinite(kspace).all():
        raise DataError(path, "k-space contains NaN or infinite values")
    given = imported.mask
    if mask is not None:
        try:
            given = np.load(mask, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(mask, f"cannot read the mask: {error}") from None
    checked = _mask(Path(mask) if mask is not None else path, given, kspace)
    kspace = kspace.astype(np.complex64, copy=False)
    target = imported.target
    if checked.all():  # fully sampled: no mask (commands draw their own), the RSS image as target
        checked = None
        if target is None:
            target = rss(ifft2c(torch.from_numpy(kspace))).numpy()
    return Imported(kspace, checked, target, imported.acquisition)


def _sources(src: Path) -> list[Path]:
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                       and p.suffix.lower() != ".hdr")
        if not files:
            raise DataError(src, f"no k-space files ({', '.join(SUFFIXES)}) in this folder")
        return files
    if not src.exists() and src.with_suffix(".cfl").is_file():
        return [src.with_suffix(".cfl")]  # BART's habit: name the pair without a suffix
    return [src]


def import_kspace(src: str | Path, out: str | Path, *, mask: str | Path | None = None, acquisition: str = "",
                  anatomy: str = "") -> list[Path]:
    """Write every source of `src` as `out/<stem>.h5` (fastMRI layout, with its mask); their paths.

    All sources are read and checked first, so a bad one leaves nothing written. A file that
    carries a target (a fastMRI train/val file) keeps it; the others are reference-less.
    """
    sources = _sources(Path(src))
    stems = [p.stem for p in sources]
    if len(set(stems)) != len(stems):
        raise DataError(src, "two k-space files share a name (e.g. a.npy and a.cfl); rename one")
    for path in sources[1:]:  # check all before writing any (the first is read below anyway)
        load_kspace(path, mask)
    paths = []
    for path in sources:
        data = load_kspace(path, mask)
        attrs = {"source": path.name, **({"anatomy": anatomy} if anatomy else {})}
        paths.append(write_volume(Path(out) / f"{path.stem}.h5", data.kspace, target=data.target, mask=data.mask,
                                  acquisition=acquisition or data.acquisition, patient_id=path.stem, attrs=attrs))
    return paths
