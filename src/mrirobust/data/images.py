"""Magnitude images on disk -> simulated multi-coil fastMRI-layout files.

Readers: .npy (2-D image or 3-D stack of slices), .png/.jpg/.jpeg/.tif/.tiff (Pillow, converted
to grey), NIfTI .nii/.nii.gz (nibabel; every axial slice is a sample) and DICOM .dcm (pydicom,
with the rescale slope/intercept applied). nibabel and pydicom are the optional extra
`mrirobust[images]` and are imported only when such a file is read.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch

from mrirobust.data.fastmri import write_volume
from mrirobust.data.simulate import simulate_kspace
from mrirobust.errors import DataError

_PILLOW = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SUFFIXES = (".npy", ".nii", ".nii.gz", ".dcm", *_PILLOW)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(_suffix(path))]


def _optional(module: str, path: Path):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(path, f"reading this file needs {module}: pip install mrirobust[images]") from None


def _read(path: Path) -> np.ndarray:
    """One file as (slices, H, W) magnitudes."""
    suffix = _suffix(path)
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif suffix in _PILLOW:
        from PIL import Image

        with Image.open(path) as image:
            array = np.asarray(image.convert("F"))
    elif suffix in (".nii", ".nii.gz"):
        volume = np.asarray(_optional("nibabel", path).load(path).get_fdata())
        if volume.ndim == 3:  # (x, y, z) voxel axes: axial slice k shown with anterior (+y) up
            array = np.flip(np.moveaxis(volume, 2, 0).transpose(0, 2, 1), axis=1)
        else:
            array = volume.T[::-1] if volume.ndim == 2 else volume
    elif suffix == ".dcm":
        dataset = _optional("pydicom", path).dcmread(path)
        slope = float(getattr(dataset, "RescaleSlope", 1.0))
        array = dataset.pixel_array * slope + float(getattr(dataset, "RescaleIntercept", 0.0))
    else:
        raise DataError(path, f"unsupported image type; use one of {', '.join(SUFFIXES)}")
    array = np.abs(np.asarray(array))
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape[1:]) < 2:
        raise DataError(path, f"expected a 2-D image or a 3-D stack of slices, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(path, "contains NaN or infinite values")
    return array.astype(np.float32)


def load_images(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """(name, magnitudes (slices, H, W) float32) for a file, or for every image file in a folder.

    In a folder, files with other suffixes are ignored; a folder without images is an error.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _suffix(p) in SUFFIXES)
        if not files:
            raise DataError(path, f"no image files ({', '.join(SUFFIXES)}) in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(path, "no such file or folder")
    images = []
    for file in files:
        try:
            images.append((_stem(file), _read(file)))
        except (OSError, ValueError, EOFError, AttributeError) as error:
            raise DataError(file, f"cannot read: {error}") from None
    names = [name for name, _ in images]
    if len(set(names)) != len(names):
        raise DataError(path, "two image files share a name (e.g. a.png and a.npy); rename one")
    return images


def images_to_fastmri(src: str | Path, out: str | Path, *, num_coils: int = 8, snr_db: float | None = 30.0,
                      oversample: bool = False, seed: int = 0) -> list[Path]:
    """Simulate multi-coil k-space for every image file of `src`; one fastMRI file per image file.

    File i is simulated with seed `seed + i`; its target is the (cropped) RSS of the noisy coil
    images, as in fastMRI. Returns the written paths `out/<name>.h5`.
    """
    paths = []
    for i, (name, slices) in enumerate(load_images(src)):
        kspace, target, _ = simulate_kspace(torch.from_numpy(slices), num_coils=num_coils, seed=seed + i,
                                            snr_db=snr_db, oversample=oversample)
        paths.append(write_volume(Path(out) / f"{name}.h5", kspace.numpy(), target=target.numpy(),
                                  patient_id=name, attrs={"source": str(Path(src).name), "seed": seed + i}))
    return paths
