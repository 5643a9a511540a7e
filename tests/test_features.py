"""Artificial small features: insertion through the coil maps, batching, heat maps, resuming, errors."""

import csv

import pytest
import torch

import mrirobust.methods.baselines  # noqa: F401  (registers zero-filled, sense)
from mrirobust.data.dataset import SliceDataset
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError
from mrirobust.methods.base import build
from mrirobust.metrics import region_mse
from mrirobust.physics.combine import sense_combine
from mrirobust.physics.fft import center_crop, ifft2c
from mrirobust.physics.masks import MaskSpec
from mrirobust.report.feature_figures import heatmap
from mrirobust.robustness.features import (_Image, heatmap_boxes, insert_features, random_boxes, reference_images,
                                           run_heatmap, window_images)

SPEC = MaskSpec("random", (0.16,), (4,))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    synthesize(root, SynthConfig("knee", shape=(48, 48), slices_per_volume=2, num_coils=4, num_volumes=1,
                                 oversample=True))
    return root / "knee" / "train"


@pytest.fixture(scope="module")
def image(data):
    return _Image(SliceDataset(data, cache=False)[0], SPEC, "cpu", maps_crop=0.0, value=None)


def test_feature_enters_through_the_coil_maps_at_the_target_position(image):
    boxes = torch.tensor([[0, 0, 3, 3], [20, 30, 4, 2]])
    modified = insert_features(image.kspace, image.maps, boxes, 2.5, image.shape)
    added = ifft2c(modified - image.kspace)  # the feature's coil images S f
    # maps S are unit-norm everywhere (crop 0), so combining S f gives f back: value in the window
    feature = sense_combine(added, image.maps).real
    expected = 2.5 * window_images(boxes + torch.tensor([(96 - 48) // 2, 0, 0, 0]), (96, 48))
    torch.testing.assert_close(feature, expected, atol=1e-4, rtol=0)
    # the "rss" reference of a feature on empty anatomy is exactly the window in the target frame
    empty = insert_features(torch.zeros_like(image.kspace), image.maps, boxes, 2.5, image.shape)
    torch.testing.assert_close(reference_images(empty, image.target, boxes, 2.5, "rss"),
                               2.5 * window_images(boxes, image.shape), atol=1e-4, rtol=0)
    added_ref = reference_images(modified, image.target, boxes, 2.5, "added")
    torch.testing.assert_close(added_ref - image.target, 2.5 * window_images(boxes, image.shape))
    assert image.value == pytest.approx(float(image.target.max()))


def test_full_sampling_recovers_every_feature_exactly(image):
    full = _Image(image.sample, SPEC, "cpu", 0.0, None)
    full.mask = torch.ones_like(full.mask)
    mse = full.feature_mse(build("zero-filled"), heatmap_boxes(full.shape, 3, 15), "rss")
    assert mse.abs().max() < 1e-8 * full.value**2


def test_batched_placements_equal_one_at_a_time(image):
    method = build("sense")
    boxes = random_boxes(image.shape, 3, 4, seed=1)
    batched = image.feature_mse(method, boxes, "rss")
    single = torch.cat([image.feature_mse(method, b[None], "rss") for b in boxes])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-9)
    assert (batched > 0).all()  # under-sampling loses part of the feature


def test_l1_placements_use_the_maps_of_the_slice_without_a_feature(image):
    """l1's precompute (maps of the un-featured measurement) serves every placement of a call."""
    method = build("l1", iters=5, calib_size=12, kernel_size=4)
    boxes = random_boxes(image.shape, 3, 3, seed=2)
    maps = method.precompute(image.kspace[None] * image.mask, image.mask)["maps"]
    modified = insert_features(image.kspace, image.maps, boxes, image.value, image.shape)
    recon = method.reconstruct(modified * image.mask, image.mask, maps=maps.expand(len(boxes), -1, -1, -1))
    truth = reference_images(modified, image.target, boxes, image.value, "rss")
    expected = region_mse(truth, center_crop(recon, image.shape), boxes)
    torch.testing.assert_close(image.feature_mse(method, boxes, "rss"), expected, rtol=1e-5, atol=0)


def test_grid_and_random_placements():
    boxes = heatmap_boxes((10, 8), 3, 2)
    assert boxes[:, 0].unique().tolist() == [0, 2, 4, 6] and boxes[:, 1].unique().tolist() == [0, 2, 4]
    assert len(heatmap_boxes((10, 8), 3, 1)) == 8 * 6
    drawn = random_boxes((10, 8), 4, 50, seed=0)
    assert torch.equal(drawn, random_boxes((10, 8), 4, 50, seed=0))
    assert drawn[:, 0].max() <= 6 and drawn[:, 1].max() <= 4 and drawn[:, 0].min() >= 0
    with pytest.raises(ConfigError, match="--window"):
        heatmap_boxes((10, 8), 9, 1)
    with pytest.raises(ConfigError, match="--stride"):
        heatmap_boxes((10, 8), 3, 0)


def test_run_heatmap_writes_normalised_maps_and_resumes(data, tmp_path, capsys):
    args = dict(stride=12, window=3, out=tmp_path, center_fraction=0.16, progress=False, batch_size=8)
    path = run_heatmap(data, ["zero-filled", "sense"], **args)
    first = path.read_bytes()
    assert "32 feature reconstructions (4 units computed" in capsys.readouterr().out  # 16 positions x 2 methods
    with open(path) as handle:
        rows = [{**r, "image": int(r["image"]), "top": int(r["top"]), "left": int(r["left"]),
                 "loss": float(r["loss"])} for r in csv.DictReader(handle)]
    grid, tops, lefts = heatmap(rows, 0, "sense")
    assert grid.shape == (4, 4) and tops == [0, 12, 24, 36] and grid.min() == 0 and grid.max() == 1
    assert (tmp_path / "figure7-image0.png").exists() and (tmp_path / "heatmap.parquet").exists()
    run_heatmap(data, ["zero-filled", "sense"], **args)
    assert "(0 units computed" in capsys.readouterr().out
    assert path.read_bytes() == first


def test_bad_settings_are_config_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="--window"):
        run_heatmap(data, ["zero-filled"], window=49, out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="--reference"):
        run_heatmap(data, ["zero-filled"], reference="target", out=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="twice"):
        run_heatmap(data, ["sense", "sense"], out=tmp_path, progress=False)


def test_features_commands_end_to_end_and_bad_window(tmp_path, capsys):
    """`mrirobust features heatmap|annotated` on generated data with planted lesions."""
    from mrirobust.cli import main

    root = tmp_path / "data"
    synthesize(root, SynthConfig("knee", split="test", shape=(48, 48), slices_per_volume=3, num_coils=4,
                                 num_volumes=1, oversample=True, lesions=2))
    folder = root / "knee" / "test"
    assert main(["features", "heatmap", str(folder), "--methods", "zero-filled", "--stride", "16",
                 "--center-fraction", "0.16", "--out", str(tmp_path / "heat")]) == 0
    with open(tmp_path / "heat" / "heatmap.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(heatmap_boxes((48, 48), 3, 16))
    assert main(["features", "annotated", str(folder), str(folder / "annotations.csv"), "--methods", "zero-filled",
                 "--center-fraction", "0.16", "--out", str(tmp_path / "ann")]) == 0
    assert (tmp_path / "ann" / "annotated.csv").exists()
    capsys.readouterr()
    assert main(["features", "heatmap", str(folder), "--methods", "zero-filled", "--window", "60",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "window" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "heatmap.csv").exists()
