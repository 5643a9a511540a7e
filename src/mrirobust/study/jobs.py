"""A validated study as jobs, keyed by the content that determines their results.

Two phases: `prepare` jobs train or tune a method; `experiment` jobs run one experiment with the
prepared methods. A key is a digest of everything a job's result depends on (settings, method
configs, the data files' names/sizes/mtimes, and the keys of the jobs it uses), so an unchanged
job is found in the store and skipped, and a changed one gets a new key and runs.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import mrirobust
from mrirobust.data.domains import folder_identity
from mrirobust.experiments.base import Inputs, MethodInput, experiment_type
from mrirobust.experiments.runner import UnitCache, run_experiment
from mrirobust.experiments.spec import to_mapping
from mrirobust.hashing import digest
from mrirobust.methods.base import wrapped_setting
from mrirobust.study.config import ExperimentEntry, MethodEntry, Study
from mrirobust.workflows.prepare import Model, PrepareSettings, prepare
from mrirobust.workflows.train import TrainConfig


@dataclass(frozen=True)
class Job:
    """One unit of work: what to run (`payload`, picklable) and what to record with its rows."""

    key: str
    name: str
    kind: str  # "train", "tune" or an experiment kind
    payload: dict[str, Any]
    uses: tuple[str, ...] = ()  # method labels whose prepared configs the payload needs
    record: dict[str, Any] = field(default_factory=dict)


def _key(value: Any) -> str:
    """A job's key: longer than the artefact digests, as one store holds every job of every config."""
    return digest(value, 16)


def versions() -> dict[str, str]:
    return {"mrirobust": mrirobust.__version__, "torch": torch.__version__, "python": platform.python_version()}


def plan(study: Study, out: Path) -> tuple[list[Job], list[Job]]:
    """The prepare jobs and the experiment jobs of a study writing under `out`."""
    identities = {name: folder_identity(source.domain.root) for name, source in study.data.items()}
    prepared = {label: _prepare_job(entry, study, out, identities) for label, entry in study.methods.items()
                if (entry.train or entry.tune) and entry.base is None}
    method_keys = {label: prepared[label].key if label in prepared else _key(entry.config)
                   for label, entry in study.methods.items()}
    method_keys.update({label: _key([method_keys[entry.base], entry.config]) for label, entry in study.methods.items()
                        if entry.base is not None})  # a wrapper changes when its prepared base does
    experiments = [_experiment_job(exp, study, out, identities, method_keys) for exp in study.experiments.values()]
    return list(prepared.values()), experiments


def _prepare_job(entry: MethodEntry, study: Study, out: Path, identities: dict) -> Job:
    section = entry.train or entry.tune
    source = study.data[section["data"]]
    payload = {"label": entry.label, "config": entry.config, "source": source, "cache": str(out / "cache")}
    if entry.train:
        payload["train"] = {k: v for k, v in entry.train.items() if k != "data"}
    else:
        payload["grid"] = entry.tune["grid"]
        payload["images"] = entry.tune.get("images", 4)
    kind = "train" if entry.train else "tune"
    key = _key({"kind": kind, **{k: v for k, v in payload.items() if k not in ("cache", "source")},
                "data": identities[section["data"]], "format": source.domain.format,
                "acq": source.domain.acquisitions, "mask": source.mask.describe()})
    record = {"settings": {k: v for k, v in payload.items() if k in ("train", "grid", "images")},
              "methods": {entry.label: entry.config}, "data": {section["data"]: str(source.domain.root)},
              "mask": source.mask.describe()}
    return Job(key, entry.label, kind, payload, record=record)


def _method_input(entry: MethodEntry) -> MethodInput:
    train = {k: v for k, v in entry.train.items() if k != "data"} if entry.train else None
    return MethodInput(entry.config, train, entry.tune, entry.checkpoints)


def _experiment_job(exp: ExperimentEntry, study: Study, out: Path, identities: dict, method_keys: dict) -> Job:
    cls = experiment_type(exp.kind)
    data_labels, labels = cls.references(exp.spec)
    prepared = tuple(cls.prepared_methods(exp.spec))
    bases = {label: study.methods[label].base for label in prepared if study.methods[label].base is not None}
    uses = (*prepared, *sorted(set(bases.values()) - set(prepared)))  # a wrapper waits for its base's preparation
    keys = {label: method_keys[label] if label in uses else _key(_method_input(study.methods[label]))
            for label in labels}
    key = _key({"kind": exp.kind, "spec": exp.spec, "methods": keys,
                "data": {n: [identities[n], study.data[n].domain, study.data[n].mask] for n in data_labels},
                "annotations": _file_text(getattr(exp.spec, "annotations", None))})
    payload = {"kind": exp.kind, "spec": exp.spec, "data": {n: study.data[n] for n in data_labels},
               "methods": {label: _method_input(study.methods[label]) for label in labels}, "bases": bases,
               "prepared": prepared,  # filled in by with_prepared (a wrapper's base alone is only waited for)
               "cache": str(out / "cache"), "units": str(out / "store" / "units")}
    settings = to_mapping(exp.spec)
    record = {"settings": settings, "data": {n: str(study.data[n].domain.root) for n in data_labels},
              "methods": {label: study.methods[label].config for label in labels},
              "mask": (getattr(exp.spec, "mask", None) or study.data[data_labels[0]].mask).describe()}
    return Job(key, exp.name, exp.kind, payload, uses, record)


def _file_text(path: str | None) -> str | None:
    """A file's text for a job's identity; undecodable bytes are the reader's to report, in `check`."""
    return Path(path).read_text(encoding="utf-8", errors="replace") if path else None


def with_prepared(job: Job, configs: dict[str, dict[str, Any]]) -> Job:
    """The job with its methods' prepared configs (checkpoints, tuned settings) filled in; a wrapper
    (ttt) of a study label gets that label's prepared config as its wrapped method."""
    bases = job.payload.get("bases", {})

    def prepared(label: str, config: dict[str, Any]) -> dict[str, Any]:
        if label in bases and bases[label] in configs:
            return {**config, wrapped_setting(config): configs[bases[label]]}
        return configs.get(label, config)

    methods = {label: replace(method, config=prepared(label, method.config)) if label in job.payload["prepared"]
               else method
               for label, method in job.payload["methods"].items()}
    return replace(job, payload={**job.payload, "methods": methods},
                   record={**job.record, "methods": {label: m.config for label, m in methods.items()}})


# --- running one job (in this process, a worker process or a Ray task) ------------------------------

def _experiment(job: Job, device: str) -> Any:
    payload = job.payload
    inputs = Inputs(payload["data"], payload["methods"], device, Path(payload["cache"]))
    return experiment_type(job.kind)(payload["spec"], inputs)


def check(job: Job, device: str) -> None:
    """An experiment job's checks (labels, data files, settings) without running anything."""
    _experiment(job, device).check()


def execute(job: Job, device: str, progress: bool = False) -> dict[str, Any]:
    """Run a job; returns its rows and artefacts (experiments) or its prepared config (prepare jobs)."""
    began = time.perf_counter()
    if job.kind in ("train", "tune"):
        result = {"rows": [], "artefacts": {}, "config": _run_prepare(job.payload, device, progress)}
    else:
        done = run_experiment(_experiment(job, device), UnitCache(job.payload["units"]), progress=progress,
                              label=job.name)
        result = {"rows": done.rows, "artefacts": done.artefacts}
    return {**result, "seconds": round(time.perf_counter() - began, 3), "device": device}


def _run_prepare(payload: dict[str, Any], device: str, progress: bool) -> dict[str, Any]:
    source = payload["source"]
    mask = source.mask
    train_config = TrainConfig(**{**payload.get("train", {}), "mask_type": mask.kind,
                                  "acceleration": mask.accelerations[0], "center_fraction": mask.center_fractions[0]})
    model = Model(payload["label"], "study", payload["config"], payload.get("grid"))
    settings = PrepareSettings(Path(payload["cache"]), train_config, mask, payload.get("images", 4), device, progress)
    return prepare(model, source.domain, settings).config


def job_summary(job: Job) -> dict[str, str]:
    return {"key": job.key, "name": job.name, "kind": job.kind}


def job_record(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """What the store keeps about a finished job (see docs/study.md)."""
    return {"key": job.key, "name": job.name, "kind": job.kind, **job.record, "versions": versions(),
            "device": result["device"], "seconds": result["seconds"],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **({"config": result["config"]} if "config" in result else {})}
