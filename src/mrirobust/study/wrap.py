"""One experiment from the command line as a one-experiment study.

`mrirobust attack DATA --methods ...` (and recon, features, shift) run through the study runner,
so a command resumes, stores and reports exactly as `mrirobust study` does. The command's
positional paths become data sources, its method specs (NAME, NAME=CHECKPOINT, a method YAML,
package.module:attr) become method entries, and every other flag is the kind's spec field.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from mrirobust.data.domains import Domain
from mrirobust.errors import ConfigError
from mrirobust.experiments.base import Experiment
from mrirobust.experiments.spec import cli_mask, from_arguments, mask_mapping, to_mapping
from mrirobust.hashing import digest
from mrirobust.methods.base import parse_spec
from mrirobust.study.config import ExperimentEntry, Study, _data, _method

METHOD_FIELDS = ("methods", "evaluate_only")


def method_configs(texts: list[str], flag: str) -> dict[str, dict[str, Any]]:
    """Command-line method specs labelled by name; a name given twice with different settings gets
    its config digest (`l1[3f2a9c]`), the same spec twice is an error."""
    configs = [parse_spec(text) for text in texts]
    configs = [{"name": c} if isinstance(c, str) else c for c in configs]
    names = [c["name"] for c in configs]
    labelled: dict[str, dict[str, Any]] = {}
    for name, config in zip(names, configs):
        label = name if names.count(name) == 1 else f"{name}[{digest(config)[:6]}]"
        if label in labelled:
            raise ConfigError(flag, f"{label} is listed twice with the same settings")
        labelled[label] = config
    return labelled


def _texts(value: Any, default: tuple[str, ...]) -> list[str]:
    if value is None:
        return list(default)
    return [t.strip() for t in str(value).split(",") if t.strip()]


def one_experiment_study(cls: type[Experiment], args: argparse.Namespace) -> Study:
    """The study that runs `cls` with the command's arguments."""
    fields = {f.name: f for f in dataclasses.fields(cls.spec_type)}
    mask = cli_mask(args)
    raw: dict[str, Any] = {"name": cls.kind, "mask": mask_mapping(mask), "data": {}, "methods": {}}
    given: dict[str, Any] = {}
    data = {}
    for name, field in fields.items():
        if not field.metadata.get("positional") or field.metadata.get("path"):
            continue
        text = getattr(args, name, None)
        if text is None:
            raise ConfigError(name, "missing: give the data folder")
        domain = Domain.parse(text)
        entry = {"root": str(domain.root), "format": domain.format,
                 **({"acquisitions": list(domain.acquisitions)} if domain.acquisitions else {})}
        raw["data"][name] = entry
        try:
            data[name] = _data(name, entry, Path.cwd(), mask)
        except ConfigError as error:  # `data.NAME.root` in a study is the positional NAME here
            raise ConfigError(name, error.problem) from None
        given[name] = name
    methods = {}
    for name in METHOD_FIELDS:
        if name not in fields:
            continue
        default = fields[name].default if isinstance(fields[name].default, tuple) else ()
        configs = method_configs(_texts(getattr(args, name, None), default), f"--{name.replace('_', '-')}")
        overlap = sorted(set(configs) & set(methods))
        if overlap:
            raise ConfigError(f"--{name.replace('_', '-')}", f"{', '.join(overlap)} is already in --methods")
        methods.update({label: _method(label, config, data, configs) for label, config in configs.items()})
        raw["methods"].update(configs)
        given[name] = tuple(configs)
    if "groups" in fields and getattr(args, "groups", None) is None:
        given["groups"] = None
    spec = from_arguments(cls.spec_type, args, **given)
    if getattr(spec, "groups", None):
        spec = dataclasses.replace(spec, groups=_inline_groups(spec.groups))
    raw["experiments"] = {cls.kind: {"kind": cls.kind, **to_mapping(spec)}}
    if "mask" in fields:
        spec = dataclasses.replace(spec, mask=mask)
    experiment = ExperimentEntry(cls.kind, cls.kind, spec)
    return Study(cls.kind, None, raw, "auto", {"kind": "inline"}, data, methods, {cls.kind: experiment})


def _inline_groups(groups: Any) -> Any:
    """Group members given by name on the command line are inline method configs."""
    if not isinstance(groups, dict):
        raise ConfigError("--groups", "the file must map group names to lists of methods")
    return {group: [{"name": m} if isinstance(m, str) else m for m in members] if isinstance(members, list)
            else members for group, members in groups.items()}
