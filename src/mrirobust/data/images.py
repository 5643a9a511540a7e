"""Magnitude images on disk -> simulated multi-coil fastMRI-layout files.

Readers: .npy (2-D image or 3-D stack of slices), .png/.jpg/.jpeg/.tif/.tiff (Pillow, converted
to grey), NIfTI .nii/.nii.gz (nibabel; every axial slice is a sample) and DICOM .dcm (pydicom,
with the rescale slope/intercept applied). nibabel and pydicom are the optional extra
`mrirobust[images]` and are imported only when such a file is read.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mrirobust.data.fastmri import write_volume
from mrirobust.data.simulate import simulate_kspace
from mrirobust.errors import ConfigError, DataError

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
        except DataError:
            raise
        except Exception as error:  # noqa: BLE001 - nibabel/pydicom/Pillow raise their own types for corrupt files
            raise DataError(file, f"cannot read (corrupt or not an image?): {' '.join(str(error).split())}") from None
    names = [name for name, _ in images]
    if len(set(names)) != len(names):
        raise DataError(path, "two image files share a name (e.g. a.png and a.npy); rename one")
    return images


@dataclass(frozen=True)
class ImageSimulation:
    """How images become k-space: `num_coils` birdcage coils (with their shading unless
    `shading=False`), k-space noise at `snr_db` (None or inf: none; see `simulate_kspace`),
    2x readout `oversample`, file i simulated with seed `seed + i`; `acquisition` and `anatomy`
    are written as the files' attributes (so dataset and anatomy filters apply)."""

    num_coils: int = 8
    snr_db: float | None = 30.0
    oversample: bool = False
    seed: int = 0
    shading: bool = True
    acquisition: str = ""
    anatomy: str = ""

    def __post_init__(self) -> None:
        if self.num_coils < 1:
            raise ConfigError("--coils", f"must be at least 1, got {self.num_coils}")
        if self.snr_db is not None and math.isnan(self.snr_db):
            raise ConfigError("--snr-db", "is NaN; give a number of dB, or inf for no noise")


def images_to_fastmri(src: str | Path, out: str | Path, simulation: ImageSimulation = ImageSimulation()
                      ) -> list[Path]:
    """Simulate multi-coil k-space for every image file of `src`; one fastMRI file per image file.

    Its target is the (cropped) RSS of the noisy coil images, as in fastMRI. Every image file is
    read (and checked) before any is simulated. Returns the written paths `out/<name>.h5`.
    """
    s = simulation
    snr_db = None if s.snr_db is None or math.isinf(s.snr_db) else s.snr_db
    attrs = {"source": str(Path(src).name), **({"anatomy": s.anatomy} if s.anatomy else {})}
    paths = []
    for i, (name, slices) in enumerate(load_images(src)):
        kspace, target, _ = simulate_kspace(torch.from_numpy(slices), num_coils=s.num_coils, seed=s.seed + i,
                                            snr_db=snr_db, oversample=s.oversample, shading=s.shading)
        paths.append(write_volume(Path(out) / f"{name}.h5", kspace.numpy(), target=target.numpy(),
                                  acquisition=s.acquisition, patient_id=name, attrs={**attrs, "seed": s.seed + i}))
    return paths
