"""Artificial small features: insertion through the coil maps, batching, heat maps, resuming, errors."""

import csv
from dataclasses import dataclass, replace

import pytest
import torch

import mrirobust.methods.baselines  # noqa: F401  (registers zero-filled, sense)
from mrirobust.cli import main
from mrirobust.data.dataset import SliceDataset
from mrirobust.data.domains import Domain
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError
from mrirobust.experiments.base import DataSource, Inputs, MethodInput
from mrirobust.experiments.features import Heatmap, HeatmapSpec
from mrirobust.experiments.runner import UnitCache, run_experiment
from mrirobust.experiments.spec import parse, yaml_where
from mrirobust.methods.base import Reconstructor, build
from mrirobust.physics.combine import sense_combine, zero_filled_rss
from mrirobust.physics.fft import center_crop, ifft2c
from mrirobust.metrics import region_mse
from mrirobust.physics.masks import MaskSpec
from mrirobust.report.feature_figures import heatmap
from mrirobust.report.registry import kind_report
from mrirobust.robustness.features import (FeatureImage, heatmap_boxes, insert_features, random_boxes,
                                           reference_images, window_images)

SPEC = MaskSpec("random", (0.16,), (4,))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    synthesize(root, SynthConfig("knee", shape=(48, 48), slices_per_volume=2, num_coils=4, num_volumes=1,
                                 oversample=True))
    return root / "knee" / "train"


@pytest.fixture(scope="module")
def image(data):
    return FeatureImage(SliceDataset(data, cache=False)[0], SPEC, "cpu", maps_crop=0.0, value=None)


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
    full = FeatureImage(image.sample, SPEC, "cpu", 0.0, None)
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
    method = build("l1", iters=5, espirit={"calib_size": 12, "kernel_size": 4})
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


@dataclass
class CountingZeroFilled(Reconstructor):
    """Zero-filled, counting the feature placements it reconstructs."""

    name = "counting-zero-filled"

    def __post_init__(self) -> None:
        self.placements = 0

    def reconstruct(self, kspace, mask, **meta):
        self.placements += kspace.shape[0]
        return zero_filled_rss(kspace, mask)


METHODS = {"counted": {"name": f"{__name__}:CountingZeroFilled"}, "sense": {"name": "sense"}}


def inputs(data, tmp_path) -> Inputs:
    return Inputs({"d": DataSource(Domain(data, name="d"), SPEC)},
                  {label: MethodInput(config) for label, config in METHODS.items()}, cache=tmp_path / "cache")


def test_heatmap_experiment_gives_normalised_maps_and_resumes(data, tmp_path):
    spec = HeatmapSpec(data="d", methods=tuple(METHODS), stride=12, window=3, batch_size=8)
    first, cache = Heatmap(spec, inputs(data, tmp_path)), UnitCache(tmp_path / "units")
    result = run_experiment(first, cache, progress=False)
    # 16 positions x 2 methods, in chunks of 8 placements: 4 units, each placement reconstructed once
    assert len(result.rows) == 32 and cache.computed == 4 and first.methods["counted"].placements == 16
    grid, tops, lefts = heatmap(result.rows, 0, "sense")
    assert grid.shape == (4, 4) and tops == [0, 12, 24, 36] and grid.min() == 0 and grid.max() == 1
    assert all(r["loss"] == r["mse"] > 0 for r in result.rows)  # normalize "none": the MSE itself
    drawn = kind_report("heatmap").figures(result.rows, result.artefacts, tmp_path, "")
    assert [p.name for p in drawn] == ["figure7-image0.png"] and drawn[0].stat().st_size > 0
    again, cache = Heatmap(spec, inputs(data, tmp_path)), UnitCache(tmp_path / "units")
    resumed = run_experiment(again, cache, progress=False)
    assert cache.computed == 0 and again.methods["counted"].placements == 0
    assert repr(resumed.rows) == repr(result.rows)
    # a changed setting that the rows depend on is recomputed, not resumed
    cache = UnitCache(tmp_path / "units")
    normalised = run_experiment(Heatmap(replace(spec, normalize="value"), inputs(data, tmp_path)), cache,
                                progress=False)
    assert cache.computed == 4
    assert [r["loss"] for r in normalised.rows] == [r["mse"] / r["value"] ** 2 for r in normalised.rows]


def test_bad_settings_are_config_errors(data, tmp_path):
    def run(**settings):
        spec = HeatmapSpec(**{"data": "d", "methods": ("sense",), **settings})
        run_experiment(Heatmap(spec, inputs(data, tmp_path)), UnitCache(tmp_path / "units"), progress=False)

    with pytest.raises(ConfigError, match="window: 49 is larger than the 48x48 image"):
        run(window=49)
    with pytest.raises(ConfigError, match="twice"):
        run(methods=("sense", "sense"))
    with pytest.raises(ConfigError, match=r"experiments\.heatmap\.reference"):
        parse(HeatmapSpec, {"data": "d", "reference": "target"}, yaml_where("experiments.heatmap"))
    assert not (tmp_path / "units").exists()  # nothing computed


def test_features_commands_end_to_end_and_bad_window(tmp_path, capsys):
    """`mrirobust features heatmap|annotated` on generated data with planted lesions."""
    root = tmp_path / "data"
    synthesize(root, SynthConfig("knee", split="test", shape=(48, 48), slices_per_volume=3, num_coils=4,
                                 num_volumes=1, oversample=True, lesions=2))
    folder = root / "knee" / "test"
    heat = tmp_path / "heat"
    assert main(["features", "heatmap", str(folder), "--methods", "zero-filled", "--stride", "16",
                 "--center-fraction", "0.16", "--out", str(heat)]) == 0
    with open(heat / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(heatmap_boxes((48, 48), 3, 16))
    assert (heat / "report" / "index.html").stat().st_size > 0
    assert [p.name.endswith("figure7-image0.png") for p in (heat / "report" / "figures").glob("*.png")] == [True]
    ann = tmp_path / "ann"
    assert main(["features", "annotated", str(folder), str(folder / "annotations.csv"), "--methods", "zero-filled",
                 "--center-fraction", "0.16", "--out", str(ann)]) == 0
    with open(ann / "results.csv") as handle:
        assert {r["method"] for r in csv.DictReader(handle)} == {"zero-filled"}
    assert {p.name.rsplit("-", 1)[-1] for p in (ann / "report" / "figures").glob("*.png")} == {"figure8.png",
                                                                                             "figure18.png"}
    capsys.readouterr()
    assert main(["features", "heatmap", str(folder), "--methods", "zero-filled", "--window", "60",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "window" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "results.csv").exists()
