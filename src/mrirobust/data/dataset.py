"""A torch `Dataset` over the slices of a folder of fastMRI files, with a cached index.

Opening a folder of thousands of volumes means reading every file's metadata; the index of
(file, VolumeInfo) is cached in a small JSON file keyed by path, size and mtime, so a second open
reads no HDF5 file that did not change. Slices themselves are read lazily in `__getitem__`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mrirobust.atomic import atomic_path
from mrirobust.data import fastmri
from mrirobust.data.fastmri import VolumeInfo
from mrirobust.data.sample import Sample
from mrirobust.errors import ConfigError, DataError, ShapeError
from mrirobust.physics.masks import stack_masks

INDEX_NAME = ".mrirobust_index.json"
INDEX_VERSION = 1

Root = str | Path | Sequence[str | Path]
SliceSpec = str | tuple[int, int] | Callable[[VolumeInfo], Iterable[int]] | None


# --- finding files and the index cache -----------------------------------------------------------

def find_files(root: Root) -> list[Path]:
    """The .h5 files under a folder (recursively), a single file, or a list of files; sorted."""
    if isinstance(root, (str, Path)):
        root = Path(root)
        if root.is_dir():
            return sorted(p for p in root.rglob("*.h5") if p.is_file())
        if root.is_file():
            return [root]
        raise DataError(root, "no such file or folder")
    return sorted(Path(p) for p in root)


def _user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mrirobust"


def default_cache_path(root: Root) -> Path:
    """`<folder>/.mrirobust_index.json` if the folder is writable, else one file per root in the user cache."""
    if isinstance(root, (str, Path)) and Path(root).is_dir() and os.access(root, os.W_OK):
        return Path(root) / INDEX_NAME
    key = str(Path(root).resolve()) if isinstance(root, (str, Path)) else "\n".join(
        sorted(str(Path(p).resolve()) for p in root))
    return _user_cache_dir() / f"index-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def _load_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # an unreadable cache is rebuilt, never an error
    return cache.get("files", {}) if cache.get("version") == INDEX_VERSION else {}


def _save_cache(path: Path | None, entries: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"version": INDEX_VERSION, "files": entries}))
    except OSError as err:
        warnings.warn(f"could not write the index cache {path}: {err}", stacklevel=3)


def index_files(files: Sequence[Path], cache_path: Path | None, skip_bad: bool = False) -> list[VolumeInfo]:
    """Each file's VolumeInfo, from the cache when path, size and mtime still match."""
    cached = _load_cache(cache_path)
    entries: dict[str, Any] = {}
    infos = []
    for path in files:
        key = str(path.resolve())
        stat = path.stat()
        entry = cached.get(key)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            info = VolumeInfo.from_dict(entry["info"])
        else:
            try:
                info = fastmri.read_header(path)
            except DataError as err:
                if not skip_bad:
                    raise
                warnings.warn(f"skipping {err}", stacklevel=2)
                continue
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "info": asdict(info)}
        entries[key] = entry
        infos.append(info)
    if entries != cached:
        _save_cache(cache_path, entries)
    return infos


# --- slice selection -----------------------------------------------------------------------------

def slice_range(spec: str | tuple[int, int] | None, n: int) -> list[int]:
    """Indices among `n` slices chosen by None (all), 'middle:k', 'a:b' or (start, stop)."""
    if spec is None:
        return list(range(n))
    if isinstance(spec, str):
        kind, _, count = spec.partition(":")
        if kind == "middle":
            try:
                k = int(count)
            except ValueError:
                raise ConfigError("slices", f"{spec!r}: expected 'middle:<count>'") from None
            start = max(n // 2 - k // 2, 0)
            return list(range(start, min(start + k, n)))
        try:
            spec = (int(kind), int(count))
        except ValueError:
            raise ConfigError("slices", f"{spec!r}: expected 'middle:<count>' or '<start>:<stop>'") from None
    start, stop = spec
    return list(range(*slice(start, stop).indices(n)))


def select_slices(spec: SliceSpec, info: VolumeInfo) -> list[int]:
    """Slice indices of a volume: `slice_range`'s specs or a callable(info) -> indices."""
    if callable(spec):
        return [i for i in spec(info) if 0 <= i < info.num_slices]
    return slice_range(spec, info.num_slices)


def _matches(value: Any, wanted: Any) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, (str, int)):
        return value == wanted
    return value in wanted


# --- the dataset ---------------------------------------------------------------------------------

class SliceDataset(Dataset):
    """The 2-D slices of fastMRI multi-coil volumes, as `Sample`s read lazily one at a time.

    Filters: `acquisitions` (e.g. {"CORPD_FBK"}), `num_coils` (an int or a collection such as
    range(15, 17)), `anatomy` ("knee"/"brain" or a set), `slices` (see `select_slices`).
    `cache` is the index file: None for the default location, False for no cache.
    """

    def __init__(
        self,
        root: Root,
        *,
        acquisitions: Collection[str] | str | None = None,
        num_coils: int | Collection[int] | None = None,
        anatomy: str | Collection[str] | None = None,
        slices: SliceSpec = None,
        cache: str | Path | bool | None = None,
        skip_bad: bool = False,
        transform: Callable[[Sample], Any] | None = None,
    ) -> None:
        files = find_files(root)
        if not files:
            raise DataError(root if isinstance(root, (str, Path)) else None,
                            "no .h5 files found" if isinstance(root, (str, Path)) else "empty list of files")
        cache_path = None if cache is False else default_cache_path(root) if cache in (None, True) else Path(cache)
        infos = index_files(files, cache_path, skip_bad)

        where = root if isinstance(root, (str, Path)) else None
        seen = len(infos)
        for name, attr, wanted in (("anatomy", "anatomy", anatomy), ("acquisitions", "acquisition", acquisitions),
                                   ("num_coils", "num_coils", num_coils)):
            kept = [i for i in infos if _matches(getattr(i, attr), wanted)]
            if not kept:
                present = ", ".join(sorted({str(getattr(i, attr)) for i in infos})) or "none"
                earlier = f", {len(infos)} passed the earlier filters" if len(infos) < seen else ""
                raise DataError(where, f"filter {name}={wanted!r} left no files ({seen} seen{earlier}; "
                                       f"present: {present})")
            infos = kept

        self.volumes = infos
        self.index = [(v, s) for v in infos for s in select_slices(slices, v)]
        if not self.index:
            raise DataError(where, f"slices={slices!r} left no slices in the {len(infos)} files seen")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def slice_shape(self, i: int) -> tuple[int, int]:
        """The (H, W) k-space shape of slice `i`, from the index (nothing read)."""
        return self.index[i][0].shape

    def __getitem__(self, i: int) -> Any:
        info, s = self.index[i]
        sample = fastmri.read_slice(info.path, s, info)
        return self.transform(sample) if self.transform else sample


def describe(root: Root, cache: str | Path | bool | None = None) -> dict[str, Any]:
    """A summary of a folder for `mrirobust data info`: files, slices, shapes, coils, acquisitions."""
    infos = SliceDataset(root, cache=cache).volumes
    count = lambda values: dict(sorted(Counter(values).items()))  # noqa: E731
    return {
        "files": len(infos),
        "slices": sum(i.num_slices for i in infos),
        "kspace_shapes": count(f"{i.shape[0]}x{i.shape[1]}" for i in infos),
        "target_shapes": count("none" if i.target_shape is None else f"{i.target_shape[0]}x{i.target_shape[1]}"
                               for i in infos),
        "coils": count(i.num_coils for i in infos),
        "acquisitions": count(i.acquisition or "unknown" for i in infos),
        "anatomies": count(i.anatomy or "unknown" for i in infos),
        "with_mask": sum(i.has_mask for i in infos),
    }


# --- batching ------------------------------------------------------------------------------------

def slice_shapes(samples: Any, indices: Sequence[int]) -> list[tuple[int, int]]:
    """The (H, W) k-space shape of each of `samples[i]`: from a SliceDataset's index, else read."""
    if isinstance(samples, SliceDataset):
        return [tuple(samples.slice_shape(i)) for i in indices]
    return [tuple(samples[i].kspace.shape[-2:]) for i in indices]


def same_shape_batches(shapes: Sequence[tuple[int, int]], batch_size: int, generator: torch.Generator
                       ) -> list[list[int]]:
    """Positions 0..len(shapes)-1 in shuffled batches of at most `batch_size` whose slices share a
    shape (a dataset of several matrix sizes, e.g. fastMRI's, cannot be stacked otherwise); the
    batches' order is shuffled too, so every shape is seen throughout an epoch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for position, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(position)
    batches = []
    for members in groups.values():
        order = [members[int(k)] for k in torch.randperm(len(members), generator=generator)]
        batches += [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    return [batches[int(k)] for k in torch.randperm(len(batches), generator=generator)]


def collate_samples(samples: Sequence[Sample]) -> dict[str, Any]:
    """Stack same-shaped Samples into a batch dict for a DataLoader (`collate_fn=collate_samples`).

    kspace (B, C, H, W); target (B, h, w) or None; mask (B, 1, 1, W) / (B, 1, H, W) or None;
    maps (B, C, H, W) or None; meta: the list of SampleMeta.
    """

    def stack(name: str, stacker=torch.stack) -> torch.Tensor | None:
        values = [getattr(s, name) for s in samples]
        if all(v is None for v in values):
            return None
        shapes = {None if v is None else tuple(v.shape) for v in values}
        if len(shapes) > 1:
            where = ", ".join(f"{s.meta.file}[{s.meta.slice}]: "
                              f"{None if v is None else tuple(v.shape)}" for s, v in zip(samples, values))
            raise ShapeError(f"cannot batch samples whose {name} differ ({where}); use batch_size=1 "
                             "or filter the dataset to one shape")
        return stacker(values)

    return {"kspace": stack("kspace"), "target": stack("target"), "mask": stack("mask", stack_masks),
            "maps": stack("maps"), "meta": [s.meta for s in samples]}
