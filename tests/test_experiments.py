"""The experiment layer: typed specs (YAML and CLI from one declaration), a toy kind registered in
this module and run through the study runner and the report, one unit cache, old stores refused."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from mrirobust import schema
from mrirobust.data.synthetic import SynthConfig, synthesize
from mrirobust.errors import ConfigError, DataError
from mrirobust.experiments.attack import AttackSpec
from mrirobust.experiments.base import Unit, UnitResult, kinds, register
from mrirobust.experiments.recon import DATA_HELP, Sliced
from mrirobust.experiments.spec import add_arguments, from_arguments, parse, setting, yaml_where
from mrirobust.report.registry import KindReport, kind_report
from mrirobust.report.registry import register as register_report
from mrirobust.study.config import validate
from mrirobust.study.runner import run_study, write_study_report


@dataclass(frozen=True)
class EnergySpec:
    data: str = setting(help=DATA_HELP, positional=True)
    methods: tuple[str, ...] = setting(("zero-filled",), help="methods")
    images: int = setting(2, help="slices", minimum=1)
    scale: float = setting(1.0, help="a factor", minimum=0.0)
    split: str = setting("test", help="split folder")


@register
class Energy(Sliced):
    """A toy kind: the scaled energy of each method's image on the first slices."""

    kind = "toy_energy"
    spec_type = EnergySpec
    summary = "a toy kind for the tests"
    runs: list[str] = []  # names of the units computed (a test-local record, not module state of src)

    def units(self) -> list[Unit]:
        return [Unit(f"energy-{label}-{i}", {"label": label, "i": i, "scale": self.spec.scale}, (label, i))
                for label in self.spec.methods for i in range(self.spec.images)]

    def run(self, unit: Unit, done: Mapping[str, UnitResult]) -> UnitResult:
        from mrirobust.evaluate import Batch

        label, i = unit.work
        Energy.runs.append(unit.name)
        batch = Batch.load([self.dataset()[i]], self.mask(), "cpu")
        image = batch.reconstruct(self.methods[label])
        return UnitResult([{schema.METHOD: label, schema.IMAGE: i, "energy": self.spec.scale * float(image.sum())}])


def _figures(rows, artefacts, folder: Path, prefix: str) -> list[Path]:
    from mrirobust.report.figures import plt, save_figure

    fig, ax = plt.subplots()
    ax.plot([r["energy"] for r in rows])
    return [save_figure(fig, folder / f"{prefix}energy.png")]


register_report(["toy_energy"], KindReport(_figures, lambda rows: [("Energies", ["n"], [[len(rows)]])],
                                          lambda rows, artefacts: f"{len(rows)} rows", {"energy": "Toy energies."}))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    synthesize(root, [SynthConfig("knee", split="test", num_volumes=1, slices_per_volume=2, num_coils=4,
                                  shape=(48, 48))])
    return root / "knee"


def _study(data: Path, **settings) -> dict:
    return {"name": "toy", "data": {"knee": str(data)}, "methods": {"zero-filled": "zero-filled"},
            "experiments": {"energy": {"kind": "toy_energy", "data": "knee", **settings}}}


def test_a_toy_kind_runs_through_the_study_runner_and_the_report(data, tmp_path):
    assert "toy_energy" in kinds() and kind_report("toy_energy") is not None
    Energy.runs.clear()
    out = run_study(_study(data, scale=2.0), tmp_path / "out", progress=False, report=True)
    assert len(Energy.runs) == 2
    rows = [json.loads(line) for line in _csv_json(out / "results.csv")]
    assert [r["energy"] > 0 for r in rows] == [True, True] and {r["kind"] for r in rows} == {"toy_energy"}
    page = (out / "report" / "index.html").read_text()
    assert "Toy energies." in page and "Energies" in page
    assert list((out / "report" / "figures").glob("*-energy.png"))
    # the same units again: nothing recomputed, even by a changed experiment that shares units
    Energy.runs.clear()
    run_study(_study(data, scale=2.0, images=1), tmp_path / "out", progress=False)
    assert Energy.runs == []


def _csv_json(path: Path) -> list[str]:
    import csv

    with open(path, newline="") as handle:
        return [json.dumps({k: _number(v) for k, v in row.items()}) for row in csv.DictReader(handle)]


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def test_yaml_and_cli_come_from_one_spec(data):
    with pytest.raises(ConfigError) as caught:
        validate(_study(data, scale="big"))
    assert caught.value.field == "experiments.energy.scale"
    with pytest.raises(ConfigError) as caught:
        validate(_study(data, colour=1))
    assert caught.value.field == "experiments.energy.colour"
    parser = argparse.ArgumentParser()
    add_arguments(parser, EnergySpec)
    spec = from_arguments(EnergySpec, parser.parse_args(["DATA", "--images", "3", "--scale", "0.5"]))
    assert spec == EnergySpec("DATA", ("zero-filled",), 3, 0.5, "test")
    with pytest.raises(ConfigError) as caught:
        from_arguments(EnergySpec, parser.parse_args(["DATA", "--images", "0"]))
    assert caught.value.field == "--images"
    assert "--scale" in parser.format_help() and "a factor" in parser.format_help()


def test_nested_attack_settings_are_typed():
    where = yaml_where("experiments.attack")
    spec = parse(AttackSpec, {"data": "d", "attack": {"steps": 5, "z_step": "descent"}}, where)
    assert spec.attack.given() == {"steps": 5, "z_step": "descent"}
    for bad, field in (({"steps": "abc"}, "experiments.attack.attack.steps"),
                       ({"bogus": 1}, "experiments.attack.attack.bogus"),
                       ({"z_step": "sideways"}, "experiments.attack.attack.z_step")):
        with pytest.raises(ConfigError) as caught:
            parse(AttackSpec, {"data": "d", "attack": bad}, where)
        assert caught.value.field == field
    with pytest.raises(ConfigError, match="allow_large_eps"):
        parse(AttackSpec, {"data": "d", "eps": [2.0]}, where)
    assert parse(AttackSpec, {"data": "d", "eps": [2.0], "allow_large_eps": True}, where).eps == (2.0,)


def test_to_mapping_is_the_inverse_of_parse():
    from mrirobust.experiments.spec import to_mapping
    from mrirobust.physics.masks import MaskSpec

    spec = parse(AttackSpec, {"data": "d", "methods": ["a", "b"], "eps": [0.0, 0.05], "attack": {"steps": 5},
                              "mask": {"type": "equispaced", "acceleration": [4, 8], "center_fraction": 0.08}})
    assert spec.mask == MaskSpec("equispaced", (0.08, 0.08), (4, 8))
    assert parse(AttackSpec, to_mapping(spec)) == spec
    assert to_mapping(spec)["attack"] == {"steps": 5, "objective": "both"}


def test_a_store_of_the_previous_layout_is_refused_in_one_line(data, tmp_path):
    store = tmp_path / "out" / "store"
    store.mkdir(parents=True)
    (store / "plan.json").write_text(json.dumps({"study": "toy", "jobs": []}))
    with pytest.raises(DataError, match="older mrirobust: use a new folder"):
        run_study(_study(data), tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="older mrirobust"):
        write_study_report(tmp_path / "out")


def test_no_source_module_is_too_long_or_imports_upward():
    """The layers of docs/architecture.md: no import from a lower layer into a higher one."""
    import ast

    order = ["errors", "atomic", "hashing", "physics", "data", "metrics", "results", "schema", "methods",
             "evaluate", "workflows", "robustness", "experiments", "report", "findings", "study", "demo", "card", "cli"]
    src = Path(__file__).resolve().parents[1] / "src" / "mrirobust"
    for path in src.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 450, path
        layer = path.relative_to(src).parts[0].removesuffix(".py")
        if layer not in order:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mrirobust."):
                target = node.module.split(".")[1]
                if target in order:
                    assert order.index(target) <= order.index(layer), f"{path.name} imports {node.module}"
