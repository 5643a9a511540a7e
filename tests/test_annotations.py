"""Annotation readers (fastMRI+, Caliva et al.), synthetic lesions, and the annotated-box experiment."""

import csv

import numpy as np
import pytest

import mrirobust.methods.baselines  # noqa: F401  (registers zero-filled, sense)
from mrirobust.data.annotations import Box, read_annotations, select, write_fastmri_plus
from mrirobust.data.domains import Domain
from mrirobust.data.synthetic import SynthConfig, generate_volume, synthesize
from mrirobust.errors import ConfigError, DataError
from mrirobust.experiments.base import DataSource, Inputs, MethodInput
from mrirobust.experiments.features import Annotated, AnnotatedSpec
from mrirobust.experiments.runner import UnitCache, run_experiment
from mrirobust.physics.masks import MaskSpec
from mrirobust.report.registry import kind_report

SMALL = dict(shape=(64, 64), slices_per_volume=3, num_coils=4, num_volumes=1, oversample=True)


def _lesion_image(height=80, width=64, rows=(50, 56), cols=(10, 14)):
    """An image with one bright block at known rows [r0, r1) and columns [c0, c1)."""
    image = np.zeros((height, width))
    image[rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    return image


def _bbox(image):
    rows, cols = np.nonzero(image)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def test_fastmri_plus_box_drawn_on_flipped_image_sits_on_the_lesion(tmp_path):
    image = _lesion_image()
    r0, r1, c0, c1 = _bbox(np.flipud(image))  # annotators saw the flipped image
    path = tmp_path / "plus.csv"
    path.write_text("file,slice,study_level,x,y,width,height,label\n"
                    f"file1000001,4,No,{c0},{r0},{c1 - c0},{r1 - r0},Meniscus Tear\n"
                    "file1000001,0,Yes,,,,,artifact\n")
    annotations = read_annotations(path)
    assert annotations.source == "fastmri-plus" and annotations.study_level == 1
    (box,) = annotations.boxes
    assert (box.file, box.slice, box.label) == ("file1000001", 4, "Meniscus Tear")  # slice indexes directly
    top, left, height, width = box.pixels(image.shape[0])
    assert (top, top + height, left, left + width) == (50, 56, 10, 14)
    assert box.pixels(320) == (320 - r0 - (r1 - r0), c0, r1 - r0, c1 - c0)  # PROVENANCE: 320 - y - height


def test_caliva_box_is_one_based_and_flipped(tmp_path):
    image = _lesion_image()
    r0, r1, c0, c1 = _bbox(np.flipud(image))
    path = tmp_path / "caliva.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "slice", "numBBs", "labels", "coords"])
        writer.writerow(["file1000196", 27, 2, "['Med_Men' 'Cyst']",
                         f"[[{c0 - 0.3:.5f} {c1 - 0.6:.5f} {r0 + 0.2:.5f} {r1:.5f}]\n [1. 2. 3. 4.]]"])
    boxes = read_annotations(path).boxes
    assert [(b.file, b.slice, b.label) for b in boxes] == [("file1000196", 26, "Med_Men"), ("file1000196", 26, "Cyst")]
    top, left, height, width = boxes[0].pixels(image.shape[0])
    assert (top, top + height, left, left + width) == (50, 56, 9, 14)  # widened to whole pixels
    assert image[top:top + height, left:left + width].sum() == image.sum()


def test_unknown_or_broken_csv_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="unknown annotation format"):
        read_annotations(bad)
    bad.write_text("file,slice,study_level,x,y,width,height,label\nf,1,No,abc,1,1,1,x\n")
    with pytest.raises(DataError, match="line 2: x='abc'"):
        read_annotations(bad)


@pytest.mark.parametrize("rows, message", [
    ("f,1,No,1,1,1,1,x\nf,2,No,1,1\n", "line 3: 5 fields, but the header has 8"),  # short
    ("f,1,No,1,1,1,1,x,extra,more\n", "line 2: 10 fields, but the header has 8"),  # long
])
def test_a_row_of_the_wrong_length_is_named(tmp_path, rows, message):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,slice,study_level,x,y,width,height,label\n" + rows)
    with pytest.raises(DataError, match=f"bad.csv: {message}"):
        read_annotations(bad)
    bad.write_bytes(b"file,slice\xff\n")
    with pytest.raises(DataError, match="bad.csv: not a readable CSV text file"):
        read_annotations(bad)


def test_select_by_label_and_size():
    boxes = [Box("f", 0, "Meniscus Tear", 0, 0, 5, 5), Box("f", 0, "Bone- Subchondral edema", 0, 0, 5, 5),
             Box("f", 0, "Meniscus Tear", 0, 0, 40, 5)]
    assert select(boxes, labels=["meniscus"], max_size=20) == boxes[:1]
    assert select(boxes, min_size=6) == []


def test_lesions_zero_leaves_volumes_unchanged_and_lesions_sit_in_their_boxes(tmp_path):
    plain = generate_volume(SynthConfig("knee", **SMALL), 0)
    assert np.array_equal(generate_volume(SynthConfig("knee", lesions=0, **SMALL), 0)[0], plain[0])
    kspace, target, meta = generate_volume(SynthConfig("knee", lesions=3, **SMALL), 0)
    assert meta["lesions"] and not np.array_equal(target, plain[1])
    difference = np.abs(target - plain[1])
    inside = np.zeros(target.shape, bool)
    for s, label, top, left, height, width in meta["lesions"]:
        assert label.startswith("Synthetic lesion") and 0 <= top and top + height <= 64
        inside[s, top:top + height, left:left + width] = True
    # the noise is the same draw in both: the change lies in the boxes (up to the soft edges)
    assert difference[inside].sum() > 0.8 * difference.sum()
    assert difference[inside].mean() > 50 * difference[~inside].mean()
    # the CSV that synthesize writes reads back onto the same pixels
    synthesize(tmp_path, SynthConfig("knee", lesions=3, **SMALL))
    boxes = read_annotations(tmp_path / "knee" / "train" / "annotations.csv").boxes
    assert [(b.slice, b.label, *b.pixels(64)) for b in boxes] == [tuple(x) for x in meta["lesions"]]
    with pytest.raises(ConfigError, match="lesions"):
        SynthConfig("knee", lesions=-1)


def test_annotated_experiment_scores_boxes_and_reports_what_it_skips(tmp_path):
    data = tmp_path / "data"
    synthesize(data, SynthConfig("knee", lesions=2, **SMALL))
    csv_path = data / "knee" / "train" / "annotations.csv"
    boxes = read_annotations(csv_path).boxes
    extra = [("file_knee_000", 0, "Synthetic lesion - off", 60, 60, 10, 10),  # clipped to the image
             ("file_knee_000", 0, "Synthetic lesion - outside", 70, 0, 4, 4),  # nothing left: rejected
             ("file_knee_000", 9, "Synthetic lesion - no slice", 5, 5, 4, 4),
             ("file_missing", 0, "Synthetic lesion - no file", 5, 5, 4, 4)]
    rows = [(b.file, b.slice, b.label, *b.pixels(64)) for b in boxes] + extra
    write_fastmri_plus(rows, tmp_path / "a.csv", 64)
    inputs = Inputs({"d": DataSource(Domain(data / "knee", name="d"), MaskSpec("random", (0.16,), (4,)))},
                    {m: MethodInput({"name": m}) for m in ("zero-filled", "sense")}, cache=tmp_path / "cache")

    def run(labels, methods=("zero-filled", "sense"), cache=None, max_size=None):
        spec = AnnotatedSpec(data="d", annotations=str(tmp_path / "a.csv"), methods=methods, labels=labels,
                             max_size=max_size, split="train")
        return run_experiment(Annotated(spec, inputs), cache or UnitCache(tmp_path / "units"), progress=False)

    found = run(("synthetic",))
    skipped = found.artefacts["skipped"]
    assert len(skipped) == 3
    assert "file_missing: file not in the data" in skipped and "file_knee_000 slice 9: slice not in the data" in skipped
    assert any("outside the 64x64 image" in s for s in skipped)
    printed = kind_report("annotated").text(found.rows, found.artefacts)
    assert "3 annotated box(es) skipped" in printed and all(s in printed for s in skipped)
    result = found.rows
    assert len(result) == 2 * (len(boxes) + 1)
    clipped = next(r for r in result if r["label"].endswith("off"))
    assert (clipped["top"], clipped["height"]) == (60, 4)
    for method in ("zero-filled", "sense"):
        assert all(r["box_mse"] >= 0 for r in result if r["method"] == method)
    drawn = kind_report("annotated").figures(result, found.artefacts, tmp_path / "figures", "")
    assert sorted(p.name for p in drawn) == ["figure18.png", "figure8.png"] and all(p.stat().st_size for p in drawn)
    cache = UnitCache(tmp_path / "units")
    again = run(("synthetic",), cache=cache)  # resumed: nothing recomputed, the same rows and skipped boxes
    assert cache.computed == 0 and repr(again.rows) == repr(result) and again.artefacts["skipped"] == skipped
    cache = UnitCache(tmp_path / "units")
    small = run(("synthetic",), cache=cache, max_size=6)  # fewer boxes on the same slices: recomputed
    assert cache.computed == 2 and small.artefacts["skipped"][:2] == skipped[:2]
    assert "slice 0 box 1 (Synthetic lesion - outside): outside" in small.artefacts["skipped"][2]  # renumbered
    assert sorted(r["label"] for r in small.rows) == sorted(
        [b.label for b in boxes if b.width <= 6 and b.height <= 6] * 2)
    with pytest.raises(DataError, match="no box left"):
        run(("tear",), ("zero-filled",))
