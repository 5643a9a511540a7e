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
from mrirobust.hashing import digest
from mrirobust.methods.train import TrainConfig
from mrirobust.robustness.shifts import Domain, Model, prepare
from mrirobust.study.config import RUNNERS, DataSource, Experiment, MethodEntry, Study, mask_spec


@dataclass(frozen=True)
class Job:
    """One unit of work: what to run (`payload`, JSON-able) and what to record with its rows."""

    key: str
    name: str
    kind: str  # "train", "tune" or an experiment kind
    payload: dict[str, Any]
    uses: tuple[str, ...] = ()  # method labels whose prepared configs the payload needs
    record: dict[str, Any] = field(default_factory=dict)


def _key(value: Any) -> str:
    """A job's key: longer than the artefact digests, as one store holds every job of every config."""
    return digest(value, 16)


def folder_identity(root: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of every data file under `root`: changes when the data change."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".h5", ".hdf5") and p.is_file())
    return [(str(p.relative_to(root)), (s := p.stat()).st_size, s.st_mtime_ns) for p in files]


def versions() -> dict[str, str]:
    return {"mrirobust": mrirobust.__version__, "torch": torch.__version__, "python": platform.python_version()}


def _domain(source: DataSource, name: str) -> dict[str, Any]:
    return {"root": str(source.root), "format": source.format, "acquisitions": source.acquisitions, "name": name}


def _mask_args(spec: Any) -> dict[str, Any]:
    return {"mask_type": spec.kind, "acceleration": spec.accelerations[0], "center_fraction": spec.center_fractions[0]}


def plan(study: Study, out: Path) -> tuple[list[Job], list[Job]]:
    """The prepare jobs and the experiment jobs of a study writing under `out`."""
    identities = {name: folder_identity(source.root) for name, source in study.data.items()}
    prepared = {label: _prepare_job(entry, study, out, identities) for label, entry in study.methods.items()
                if entry.train or entry.tune}
    method_keys = {label: prepared[label].key if label in prepared else _key(entry.config)
                   for label, entry in study.methods.items()}
    experiments = [_experiment_job(exp, study, out, identities, method_keys) for exp in study.experiments.values()]
    return list(prepared.values()), experiments


def _prepare_job(entry: MethodEntry, study: Study, out: Path, identities: dict) -> Job:
    section = entry.train or entry.tune
    source = study.data[section["data"]]
    spec = source.mask
    payload = {"label": entry.label, "config": entry.config, "domain": _domain(source, section["data"]),
               "mask": _mask_args(spec), "cache": str(out / "cache")}
    if entry.train:
        payload["train"] = {k: v for k, v in entry.train.items() if k != "data"}
    else:
        payload["grid"] = entry.tune["grid"]
        payload["images"] = entry.tune.get("images", 4)
    kind = "train" if entry.train else "tune"
    key = _key({"kind": kind, **{k: v for k, v in payload.items() if k not in ("cache", "domain")},
                  "data": identities[section["data"]], "format": source.format, "acq": source.acquisitions})
    record = {"settings": {k: v for k, v in payload.items() if k not in ("cache", "domain", "label", "config")},
              "methods": {entry.label: entry.config}, "data": {section["data"]: str(source.root)},
              "mask": spec.describe()}
    return Job(key, entry.label, kind, payload, record=record)


def _experiment_job(exp: Experiment, study: Study, out: Path, identities: dict, method_keys: dict) -> Job:
    entry = exp.entry
    if exp.kind == "shift":  # trains and tunes its groups on its own source: uses the raw configs
        names = [entry["source"]] + ([entry["target"]] if "target" in entry else [])
        labels = [s for specs in entry["groups"].values() for s in specs if isinstance(s, str)]
        uses: tuple[str, ...] = ()
        keys = {label: _key([study.methods[label].config, study.methods[label].tune, study.methods[label].train])
                for label in labels}
    else:
        names = [entry["data"]]
        labels = uses = tuple(entry["methods"]) + tuple(entry.get("evaluate_only", ()))
        keys = {label: method_keys[label] for label in uses}
    spec = mask_spec(entry.get("mask", {}), "mask", study.data[names[0]].mask)
    key_content = {"kind": exp.kind, "entry": {k: v for k, v in entry.items() if k != "annotations"},
                   "data": {n: [identities[n], study.data[n].format, study.data[n].acquisitions] for n in names},
                   "methods": keys, "mask": spec.describe()}
    if "annotations" in entry:
        key_content["annotations"] = Path(entry["annotations"]).read_text()
    key = _key(key_content)
    payload = {"kind": exp.kind, "entry": entry, "settings": exp.settings, "mask": _mask_args(spec),
               "domains": {n: _domain(study.data[n], n) for n in names},
               "out": str(out / "runs" / f"{exp.name}-{key}"), "cache": str(out / "cache"),
               "methods": {label: study.methods[label].config for label in labels},
               "grids": {label: study.methods[label].tune["grid"] for label in labels if study.methods[label].tune},
               "train": {label: {k: v for k, v in study.methods[label].train.items() if k != "data"}
                         for label in labels if study.methods[label].train}}
    record = {"settings": exp.settings, "data": {n: str(study.data[n].root) for n in names},
              "methods": payload["methods"], "mask": spec.describe(), "outputs": f"runs/{exp.name}-{key}"}
    return Job(key, exp.name, exp.kind, payload, uses, record)


def with_prepared(job: Job, configs: dict[str, dict[str, Any]]) -> Job:
    """The job with its methods' prepared configs (checkpoints, tuned settings) filled in."""
    methods = {label: configs.get(label, config) if label in job.uses else config
               for label, config in job.payload["methods"].items()}
    return replace(job, payload={**job.payload, "methods": methods}, record={**job.record, "methods": methods})


# --- running one job (in this process, a worker process or a Ray task) ------------------------------

def execute(job: Job, device: str, progress: bool = False) -> dict[str, Any]:
    """Run a job; returns its rows, the prepared config (prepare jobs) and figures, for the store."""
    began = time.perf_counter()
    if job.kind in ("train", "tune"):
        result = {"rows": [], "config": _run_prepare(job.payload, device, progress), "figures": []}
    else:
        result = _run_experiment(job.payload, device, progress)
    return {**result, "seconds": round(time.perf_counter() - began, 3), "device": device}


def _run_prepare(payload: dict[str, Any], device: str, progress: bool) -> dict[str, Any]:
    from mrirobust.physics.masks import MaskSpec

    mask = payload["mask"]
    spec = MaskSpec(mask["mask_type"], (mask["center_fraction"],), (mask["acceleration"],))
    train_config = TrainConfig(**{**payload.get("train", {}), **mask})
    model = Model(payload["label"], "study", payload["config"], payload.get("grid"))
    prepared = prepare(model, Domain(**payload["domain"]), cache=Path(payload["cache"]), train_config=train_config,
                       spec=spec, tune_images=payload.get("images", 4), device=device, progress=progress)
    return prepared.config


def _run_experiment(payload: dict[str, Any], device: str, progress: bool) -> dict[str, Any]:
    kind, entry, out = payload["kind"], payload["entry"], Path(payload["out"])
    common = {**payload["settings"], **payload["mask"], "out": out, "device": device, "progress": progress}
    methods = payload["methods"]
    domains = {name: Domain(**domain) for name, domain in payload["domains"].items()}
    if kind == "shift":
        groups = {group: [_group_member(s, methods, payload["grids"], payload["train"]) for s in specs]
                  for group, specs in entry["groups"].items()}
        source = domains[entry["source"]]
        target = domains.get(entry.get("target"))
        path = RUNNERS[kind](entry["shift"], source, target, groups=groups, cache=Path(payload["cache"]),
                             train_config=TrainConfig(**entry.get("train", {})), **common)
        rows = _read_rows(path)
    else:
        domain = domains[entry["data"]]
        chosen = [methods[label] for label in entry["methods"]]
        if kind == "recon":
            rows = RUNNERS[kind](domain.split(entry.get("split", "test")), chosen, **common)
        elif kind == "annotated":
            rows = _read_rows(RUNNERS[kind](domain.split(entry.get("split", "test")), entry["annotations"], chosen,
                                            **common))
        else:
            data = domain.dataset(entry.get("split", "test"))
            extra = {"evaluate_only": [methods[label] for label in entry["evaluate_only"]]} \
                if "evaluate_only" in entry else {}
            rows = _read_rows(RUNNERS[kind](data, chosen, **extra, **common))
    figures = sorted(str(p) for p in out.glob("*.png"))
    return {"rows": rows, "figures": figures}


def _group_member(spec: str | dict, methods: dict, grids: dict, train: dict) -> dict[str, Any]:
    """A shift model from a study method: its config, tuning grid and its own training settings."""
    if not isinstance(spec, str):
        return dict(spec)
    return {**methods[spec], "label": spec, **({"tune": grids[spec]} if spec in grids else {}),
            **({"train": train[spec]} if spec in train else {})}


def _read_rows(csv_path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(Path(csv_path).with_suffix(".parquet")).to_pylist()


def job_summary(job: Job) -> dict[str, str]:
    return {"key": job.key, "name": job.name, "kind": job.kind}


def job_record(job: Job, result: dict[str, Any], out: Path) -> dict[str, Any]:
    """What the store keeps about a finished job (see docs/study.md)."""
    figures = [str(Path(p).relative_to(out)) for p in result["figures"]]
    return {"key": job.key, "name": job.name, "kind": job.kind, **job.record, "versions": versions(),
            "device": result["device"], "seconds": result["seconds"], "figures": figures,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **({"config": result["config"]} if "config" in result else {})}
