"""Data domains: a folder (or file) of slices with filters, its splits, and its identity.

A domain is what every experiment, training and tuning reads from: a fastMRI-layout folder with
`train/ val/ test/` (or fastMRI's own `multicoil_<split>/`) sub-folders where present, an
acquisition/anatomy filter, and a format (fastMRI HDF5 or Stanford ISMRMRD). Its identity (file
names, sizes, mtimes) keys every cached artefact, so changed data is never mistaken for old data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrirobust.data.dataset import SliceDataset
from mrirobust.errors import ConfigError

FORMATS = ("fastmri", "mridata")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Domain:
    """A data folder and filters. `train`/`val`/`test` sub-folders are its splits where present."""

    root: Path
    acquisitions: tuple[str, ...] | None = None
    anatomy: str | None = None
    format: str = "fastmri"  # "mridata": Stanford 3-D FSE ISMRMRD files (evaluation only)
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.format not in FORMATS:
            raise ConfigError("format", f"unknown {self.format!r}; choose from {', '.join(FORMATS)}")
        if isinstance(self.acquisitions, str):
            object.__setattr__(self, "acquisitions", (self.acquisitions,))
        elif self.acquisitions is not None:
            object.__setattr__(self, "acquisitions", tuple(self.acquisitions))

    @classmethod
    def parse(cls, text: str | Path) -> Domain:
        """`PATH`, `PATH@ACQ1,ACQ2` (acquisition filter) or `mridata:PATH` (Stanford knees)."""
        text = str(text)
        fmt = "fastmri"
        if text.startswith("mridata:"):
            fmt, text = "mridata", text[len("mridata:"):]
        path, _, acquisitions = text.partition("@")
        return cls(Path(path), tuple(acquisitions.split(",")) if acquisitions else None, format=fmt)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = self.root.name if self.root.name not in SPLITS else self.root.parent.name
        return base + (f"[{'+'.join(self.acquisitions)}]" if self.acquisitions else "")

    def split(self, split: str, *, required: bool = False) -> Path:
        """`root/split`, or fastMRI's own `root/multicoil_split`; the root itself if neither exists."""
        for path in (self.root / split, self.root / f"multicoil_{split}"):
            if path.is_dir():
                return path
        if required:
            raise ConfigError("source", f"{self.root} has no {split}/ folder; training and tuning need "
                                        "train/ and val/ splits of the source domain")
        return self.root

    def dataset(self, split: str, *, slices: str | None = None, required: bool = False) -> Any:
        """The split's slices (a DataError names the folder when a filter leaves none)."""
        root = self.split(split, required=required)
        if self.format == "mridata":
            from mrirobust.data.mridata import MridataSliceDataset  # needs the ismrmrd package

            return MridataSliceDataset(root, slices=slices)
        return SliceDataset(root, acquisitions=self.acquisitions, anatomy=self.anatomy, slices=slices)


def dataset_files(dataset: Any) -> list[Path]:
    """The files behind a SliceDataset or MridataSliceDataset."""
    return [Path(v.path) for v in dataset.volumes] if hasattr(dataset, "volumes") else list(dataset.files)


def data_identity(dataset: Any) -> list[tuple[str, int, int]]:
    """(file name, size, mtime) of the files behind a dataset: changes when the data change."""
    return [(p.name, (s := p.stat()).st_size, s.st_mtime_ns) for p in dataset_files(dataset)]


def folder_identity(root: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of every data file under `root` (or of `root` itself)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in (".h5", ".hdf5")
                                                 and p.is_file())
    return [(str(p.relative_to(root)) if p != root else p.name, (s := p.stat()).st_size, s.st_mtime_ns)
            for p in files]


def kspace_shapes(dataset: Any) -> set[tuple[int, int, int]]:
    """(coils, H, W) of the k-space in a dataset (from the index; mridata: its first slice)."""
    if hasattr(dataset, "volumes"):
        return {(v.num_coils, *v.shape) for v in dataset.volumes}
    return {tuple(dataset[0].kspace.shape)}


def slice_id(entry: tuple) -> list:
    """(file name, slice) of a dataset index entry: SliceDataset (info, s), mridata (path, pos, x)."""
    return [Path(getattr(entry[0], "path", entry[0])).name, int(entry[-1])]
