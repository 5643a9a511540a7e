"""Bounding boxes of real pathologies: fastMRI+ and Caliva et al. annotation CSVs.

Both sources drew their boxes on vertically flipped images (fastMRI+: PROVENANCE of the
annotations, y_unflipped = 320 - y - height; Caliva et al.: their viewer flips the volume with
`np.flip(volume, axis=1)`), so a `Box` keeps the coordinates as written, in the flipped frame, and
`Box.pixels(image_height)` turns them into rows and columns of the unflipped target image. For
fastMRI the frame is the 320 x 320 `reconstruction_rss`; the synthetic demo writes boxes in its
own target frame with the same convention.

- fastMRI+ (`file,slice,study_level,x,y,width,height,label`): `slice` indexes the volume directly
  (0-based); `study_level == "Yes"` rows describe the whole study and carry no box (skipped, counted).
- Caliva et al. (`filename,slice,numBBs,labels,coords`, coords `[[x0 x1 y0 y1] ...]` in floats):
  slices are 1-based (converted to 0-based here).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mrirobust.atomic import atomic_path
from mrirobust.errors import DataError

FASTMRI_PLUS_FIELDS = ("file", "slice", "study_level", "x", "y", "width", "height", "label")
CALIVA_FIELDS = ("filename", "slice", "numBBs", "labels", "coords")


@dataclass(frozen=True)
class Box:
    """One annotated box: volume `file` (stem, no .h5), 0-based `slice`, and x/y/width/height in
    pixels of the vertically flipped image (x = column, y = row from the flipped top)."""

    file: str
    slice: int
    label: str
    x: float
    y: float
    width: float
    height: float

    def pixels(self, image_height: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) in the unflipped image, widened to whole pixels."""
        top, bottom = math.floor(image_height - self.y - self.height), math.ceil(image_height - self.y)
        left, right = math.floor(self.x), math.ceil(self.x + self.width)
        return top, left, bottom - top, right - left


@dataclass
class Annotations:
    """The boxes of one CSV and how many rows carried no box (study-level findings)."""

    boxes: list[Box]
    study_level: int
    source: str  # "fastmri-plus" or "caliva"


def read_annotations(path: str | Path) -> Annotations:
    """Read a fastMRI+ or Caliva et al. CSV (told apart by the header)."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = tuple(reader.fieldnames or ())
    except OSError as error:
        raise DataError(path, f"cannot read the annotations: {error.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(path, f"not a readable CSV text file: {error}") from None
    if not rows:
        raise DataError(path, "no annotation rows")
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():  # csv's marks of a long and a short row
            fields = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or ())
            raise DataError(path, f"line {line}: {fields} fields, but the header has {len(header)}")
    if set(FASTMRI_PLUS_FIELDS) <= set(header):
        return _fastmri_plus(path, rows)
    if set(CALIVA_FIELDS) <= set(header):
        return _caliva(path, rows)
    raise DataError(path, f"unknown annotation format: header {','.join(header)}; expected fastMRI+ "
                          f"({','.join(FASTMRI_PLUS_FIELDS)}) or Caliva et al. ({','.join(CALIVA_FIELDS)})")


def _number(path: Path, line: int, name: str, text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise DataError(path, f"line {line}: {name}={text!r} is not a number") from None


def _fastmri_plus(path: Path, rows: list[dict]) -> Annotations:
    boxes, study_level = [], 0
    for line, row in enumerate(rows, start=2):
        if row["study_level"].strip().lower() == "yes":
            study_level += 1
            continue
        values = [_number(path, line, k, row[k]) for k in ("x", "y", "width", "height")]
        boxes.append(Box(row["file"].strip(), int(_number(path, line, "slice", row["slice"])),
                         row["label"].strip(), *values))
    return Annotations(boxes, study_level, "fastmri-plus")


def _caliva(path: Path, rows: list[dict]) -> Annotations:
    boxes = []
    for line, row in enumerate(rows, start=2):
        labels = re.findall(r"'([^']*)'", row["labels"])
        coords = [[_number(path, line, "coords", v) for v in group.split()]
                  for group in re.findall(r"\[([^\[\]]+)\]", row["coords"])]
        if len(labels) != len(coords) or any(len(c) != 4 for c in coords):
            raise DataError(path, f"line {line}: {len(labels)} labels but coords {row['coords']!r}")
        slice_ = int(_number(path, line, "slice", row["slice"])) - 1  # 1-based in the CSV
        for label, (x0, x1, y0, y1) in zip(labels, coords):
            boxes.append(Box(row["filename"].strip(), slice_, label, x0, y0, x1 - x0, y1 - y0))
    return Annotations(boxes, 0, "caliva")


def select(boxes: Sequence[Box], *, labels: Sequence[str] | None = None, min_size: int = 1,
           max_size: int | None = None) -> list[Box]:
    """Boxes whose label contains one of `labels` (case-insensitive) and whose sides lie in
    [min_size, max_size] pixels."""
    wanted = [w.lower() for w in labels or ()]
    return [b for b in boxes
            if (not wanted or any(w in b.label.lower() for w in wanted))
            and min(b.width, b.height) >= min_size and (max_size is None or max(b.width, b.height) <= max_size)]


def write_fastmri_plus(boxes: Sequence[tuple[str, int, str, int, int, int, int]], path: str | Path,
                       image_height: int) -> Path:
    """Write boxes (file, slice, label, top, left, height, width) of unflipped images as a fastMRI+
    CSV (y flipped: y = image_height - top - height)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FASTMRI_PLUS_FIELDS)
        for file, slice_, label, top, left, height, width in boxes:
            writer.writerow([file, slice_, "No", left, image_height - top - height, width, height, label])
    return path
