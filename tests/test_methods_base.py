"""The method registry, config round trips, plug-ins (module:attr and entry points), output checks."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mrirobust.errors import ConfigError, DataError, MriRobustError
from mrirobust.methods import base
from mrirobust.methods.base import Reconstructor, available, build, checked_reconstruct, register, register_preset
from mrirobust.physics.combine import zero_filled_rss
from tests.helper import random_tensor


@dataclass
class Scaled(Reconstructor):
    """A tiny plug-in method defined in this test module: |zero-filled coil 0| times a factor."""

    factor: float = 1.0
    label: str = "x"

    differentiable = True

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        return self.factor * torch.fft.ifft2(kspace * mask)[:, 0].abs()


class WrongShape(Reconstructor):
    name = "wrong-shape"

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        return kspace.abs()  # forgot to combine coils


class Broken(Reconstructor):
    name = "broken"

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        raise RuntimeError("model weights missing")


class ReturnsNaN(Reconstructor):
    name = "nan"

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        return torch.full(kspace.shape[:1] + kspace.shape[2:], float("nan"))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A private copy of the registry so tests can register without leaking names."""
    copy = dict(base._registry())
    monkeypatch.setattr(base, "_REGISTRY", copy)
    return copy


KSPACE = random_tensor((2, 3, 8, 6), seed=1)
MASK = torch.tensor([True, False, True, True, False, True])


def test_builtins_are_available() -> None:
    assert {"zero-filled", "sense"} <= set(available())


def test_register_and_build_round_trip(registry: dict) -> None:
    registered = register("scaled")(type("RegisteredScaled", (Scaled,), {}))  # register names the class
    method = build("scaled", factor=2.0)
    assert isinstance(method, registered) and method.factor == 2.0
    assert "scaled" in available()
    assert method.config() == {"name": "scaled", "factor": 2.0, "label": "x"}


def test_register_factory_function(registry: dict) -> None:
    @register("scaled-by-three")
    def make(label: str = "three") -> Scaled:
        return Scaled(factor=3.0, label=label)

    method = build({"name": "scaled-by-three", "label": "y"})
    assert method.factor == 3.0 and method.label == "y"


def test_registering_a_name_twice_is_an_error(registry: dict) -> None:
    with pytest.raises(ConfigError, match="registered twice"):
        register("zero-filled")(Scaled)


@pytest.mark.parametrize("spec", ["zero-filled", {"name": "sense", "iters": 7, "l2": 0.01},
                                  {"name": "l1-dct", "espirit": {"crop": 0.5}}, {"name": "convdecoder-small", "input_size": [3, 2]}])
def test_config_round_trips_through_yaml(spec: Any) -> None:
    config = build(spec).config()
    text = yaml.safe_dump(config)
    assert build(yaml.safe_load(text)).config() == config


def test_module_attr_plugin() -> None:
    method = build({"name": "tests.test_methods_base:Scaled", "factor": 0.5})
    assert isinstance(method, Scaled) and method.factor == 0.5
    assert build(yaml.safe_load(yaml.safe_dump(method.config()))).config() == method.config()
    image = checked_reconstruct(method, KSPACE, MASK)
    assert image.shape == (2, 8, 6)


def test_entry_point_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake installed distribution on sys.path, found through importlib.metadata's real lookup."""
    (tmp_path / "fake_mrirobust_plugin.py").write_text(textwrap.dedent("""
        from tests.test_methods_base import Scaled

        def make(factor=4.0):
            return Scaled(factor=factor, label="plugin")
    """))
    dist_info = tmp_path / "fake_mrirobust_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-mrirobust-plugin\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[mrirobust.methods]\nfake-plugin = fake_mrirobust_plugin:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_mrirobust_plugin", raising=False)

    assert "fake-plugin" in available()
    method = build({"name": "fake-plugin", "factor": 5.0})
    assert method.factor == 5.0 and method.label == "plugin"
    assert method.name == "fake-plugin"


def test_unknown_name_lists_known_methods() -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'nope'.*sense.*zero-filled"):
        build("nope")


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "sense", "iterations": 3}, "iterations: unknown setting of CGSense; settings: iters"),
        ({"iters": 3}, "method.name"),
        ("tests.test_methods_base:Missing", "cannot load"),
        ("no_such_module_xyz:Thing", "cannot load"),
        ("collections:OrderedDict", "no reconstruct"),
    ],
)
def test_bad_specs_raise_config_errors(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(spec)


@pytest.mark.parametrize(
    "method, message",
    [
        (WrongShape(), r"'wrong-shape' returned \(2, 3, 8, 6\) for k-space \(2, 3, 8, 6\); expected \(2, h, w\) "
                       r"with h <= 8 and w <= 6"),
        (Broken(), r"'broken' failed on k-space \(2, 3, 8, 6\): RuntimeError: model weights missing"),
        (ReturnsNaN(), "'nan' returned NaN"),
    ],
)
def test_checked_reconstruct_names_the_faulty_plugin(method: Reconstructor, message: str) -> None:
    with pytest.raises(MriRobustError, match=message):
        checked_reconstruct(method, KSPACE, MASK)


# --- describe(): traits and settings without building ------------------------------------------

@dataclass
class Exploding(Reconstructor):
    """Building it fails: describe() must not build."""

    width: int = 3
    size: tuple[int, int] = (4, 4)

    family = "trained"
    trainable = True

    def __post_init__(self) -> None:
        raise RuntimeError("built")

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        raise NotImplementedError


def test_describe_matches_the_built_method_for_every_builtin(tmp_path: Path) -> None:
    weights = tmp_path / "unet.ckpt"
    torch.save(build("unet-small").model.state_dict(), weights)
    for name in available():
        wraps = base.wrapped_setting(name)  # ttt: a wrapper needs the method it wraps
        spec = {"name": name, wraps: {"name": "unet-small", "checkpoint": str(weights)}} if wraps else name
        info, method = base.describe(spec), build(spec)
        assert info.config() == method.config(), name
        assert (info.name, info.family, info.differentiable, info.trainable, info.optimisation_based) == \
            (method.name, method.family, method.differentiable, method.trainable, method.optimisation_based)
        assert not info.built
        assert info.needs_checkpoint == (method.trainable and method.config().get("checkpoint") is None)


def test_describe_builds_nothing_and_reads_no_checkpoint(registry: dict, tmp_path: Path) -> None:
    register_preset("exploding-wide", Exploding, {"width": 9}, train_defaults={"lr": 0.5})
    info = base.describe({"name": "exploding-wide", "size": [2, 5]})
    assert info.settings == {"width": 9, "size": (2, 5)} and info.defaults == {"width": 9, "size": (4, 4)}
    assert info.train_defaults == {"lr": 0.5} and info.trainable and info.needs_checkpoint
    with pytest.raises(RuntimeError, match="built"):
        build("exploding-wide")
    junk = tmp_path / "weights.pt"
    junk.write_text("not read by describe")
    assert base.describe({"name": "unet-ref", "checkpoint": str(junk)}).settings["checkpoint"] == str(junk)
    assert not base.describe({"name": "unet-ref", "checkpoint": str(junk)}).needs_checkpoint


def test_presets_keep_their_names_settings_and_training_defaults() -> None:
    small = base.describe("varnet-small")
    assert small.defaults["chans"] == 8 and small.train_defaults["lr"] == 1e-3
    assert base.describe("varnet").train_defaults["lr"] == 3e-4
    method = build("l1-dct", lam=0.01)
    assert method.name == "l1-dct" and method.config()["transform"] == "dct"
    assert build(method.config()).config() == method.config()
    with pytest.raises(ConfigError, match="chanz: unknown setting"):
        register_preset("scaled-typo", Scaled, {"chanz": 3})


@pytest.mark.parametrize("spec, field", [
    ({"name": "l1", "iters": "abc"}, "iters"),
    ({"name": "l1", "lam": -1}, "lam"),
    ({"name": "l1", "cycle_spinning": 1}, "cycle_spinning"),
    ({"name": "sense", "espirit": {"kernel_size": 30}}, "espirit.kernel_size"),
    ({"name": "sense", "espirit": {"bogus": 1}}, "espirit.bogus"),
    ({"name": "sense", "espirit": 6}, "espirit"),
    ({"name": "sense", "l2": -0.1}, "l2"),
    ({"name": "convdecoder", "input_size": [4]}, "input_size"),
    ({"name": "convdecoder", "kernel": 2}, "kernel"),
    ({"name": "unet", "chans": 0}, "chans"),
    ({"name": "unet", "checkpoint": 3}, "checkpoint"),
    ({"name": "varnet", "resolution_fix": 0}, "resolution_fix"),
])
def test_settings_are_checked_by_name_type_and_range_before_building(spec: dict, field: str) -> None:
    for check in (base.describe, build):
        with pytest.raises(ConfigError) as error:
            check(spec)
        assert error.value.field == field and "\n" not in str(error.value)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_describe_names_a_checkpoint_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "ckpt"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(ConfigError, match=f"{path}: " + ("is a directory" if kind == "directory" else "no such file")):
        base.describe({"name": "unet", "checkpoint": str(path)})


def test_plugin_factory_falls_back_to_building(registry: dict) -> None:
    register("scaled-factory")(lambda factor=2.0: Scaled(factor=factor))
    info = base.describe({"name": "scaled-factory", "factor": 3.0})
    assert info.built and info.settings == {"factor": 3.0, "label": "x"} and info.differentiable


def test_plugin_module_that_raises_on_import_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_mrirobust_plugin.py").write_text("raise ValueError('bad plug-in\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for check in (base.describe, build):
        with pytest.raises(ConfigError) as error:
            check("broken_mrirobust_plugin:Method")
        assert "broken_mrirobust_plugin raised ValueError: bad plug-in" in str(error.value)
        assert "\n" not in str(error.value)


@dataclass(frozen=True)
class FrozenPlugin(Reconstructor):
    size: tuple[int, int] = (2, 2)
    weights: list[float] | None = None

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        return zero_filled_rss(kspace, mask)


def test_frozen_plugin_settings_are_coerced_and_container_types_checked() -> None:
    method = build({"name": "tests.test_methods_base:FrozenPlugin", "size": [3, 4], "weights": [0.5]})
    assert method.size == (3, 4) and method.weights == [0.5]
    with pytest.raises(ConfigError, match=r"^weights: 0\.5 is not a list or null"):
        build({"name": "tests.test_methods_base:FrozenPlugin", "weights": 0.5})
    with pytest.raises(ConfigError, match=r"^size\[1\]: 'a' is not an integer"):
        FrozenPlugin(size=(1, "a"))


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe not text", "not UTF-8 text"), (b"", "must be a mapping with a `name`"),
    (b"name: [unclosed", "not valid YAML at line 1, column 16: expected ',' or ']'"), (None, "cannot read the method config: Is a directory"),
])
def test_bad_method_config_files_name_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "method.yaml"
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        base.parse_spec(str(path))
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_entry_point_whose_module_raises_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "raising_mrirobust_plugin.py").write_text("raise RuntimeError('needs a licence\\nsee docs')\n")
    dist_info = tmp_path / "raising_mrirobust_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: raising-mrirobust-plugin\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[mrirobust.methods]\nraising-plugin = raising_mrirobust_plugin:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as error:
        base.describe("raising-plugin")
    assert str(error.value) == ("method: cannot load entry point 'raising-plugin' (raising_mrirobust_plugin:make): "
                                "RuntimeError: needs a licence")
