"""`mrirobust study CONFIG`: validate, plan, run what the store lacks, export the rows.

Jobs run in one of three executors: `inline` (this process), `processes` (a local process pool,
one GPU per worker where GPUs exist) or `ray` (tasks on a Ray cluster, or a local Ray instance).
Only this process writes the store, as each job's result arrives, so every executor leaves the
same store behind.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import time
import traceback
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from mrirobust.atomic import atomic_path, check_output
from mrirobust.devices import resolve_device
from mrirobust.errors import ConfigError, DataError, MriRobustError
from mrirobust.findings import JobRows, Verdict, as_json, assess
from mrirobust.report.html import PREPARE_KINDS, ReportSource, write_report
from mrirobust.study import EXECUTORS
from mrirobust.study.config import Study, load_study, validate
from mrirobust.study.jobs import (
    Job,
    check,
    execute,
    job_record,
    job_summary,
    plan,
    with_prepared,
)
from mrirobust.study.store import Store


def run_study(config: str | Path | Study | dict, out: str | Path | None = None, *, executor: str | None = None,
              workers: int | None = None, address: str | None = None, device: str | None = None,
              progress: bool = True, report: bool = False) -> Path:
    """Run a study into `out` (default `out/<name>`); returns `out`. Finished jobs are not rerun.

    With `report`, the HTML report is written at the end while the store is still held, also
    after a failed job (it then shows what finished and lists what did not)."""
    study = config if isinstance(config, Study) else (
        validate(config) if isinstance(config, dict) else load_study(config))
    out = study_folder(study, out)
    kind = executor or study.executor["kind"]
    if kind not in EXECUTORS:
        raise ConfigError("--executor", f"{kind!r}; choose from {', '.join(EXECUTORS)}")
    workers = workers or study.executor.get("workers") or _default_workers()
    address = address or study.executor.get("address")
    device = device or study.device
    store = Store(out / "store")
    prepare_jobs, experiment_jobs = check_study(study, out, device)
    store.plan()  # refuses a store of another layout
    with store.lock():
        with atomic_path(out / "study.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(study.raw, sort_keys=False))
        store.write_plan(study.name, [job_summary(j) for j in prepare_jobs + experiment_jobs])
        failures: dict[str, str] = {}
        configs = {job.name: record["config"] for job in prepare_jobs if (record := store.record(job.key))}
        todo = [job for job in prepare_jobs if job.name not in configs]
        experiments = [job for job in experiment_jobs if store.record(job.key) is None]
        began = time.perf_counter()
        bar = tqdm(total=len(todo) + len(experiments), desc=f"study {study.name}", unit="job", disable=not progress)
        print(f"{study.name}: {len(prepare_jobs) + len(experiment_jobs)} jobs, {len(todo) + len(experiments)} to run "
              f"({kind} executor, device {device}); store {store.root}")

        def finish(job: Job, result: dict[str, Any]) -> None:
            bar.update()
            if "error" in result:
                failures[job.name] = result["error"]
                bar.write(f"{job.kind} {job.name} failed: {result['error']}")
                return
            rows = [{**row, "study": study.name, "experiment": job.name, "kind": job.kind, "job": job.key}
                    for row in result["rows"]]
            store.commit(job_record(job, result), rows, result.get("artefacts"))
            if "config" in result:
                configs[job.name] = result["config"]
            bar.write(f"{job.kind} {job.name}: done in {result['seconds']:.1f} s")

        try:
            with _executor(kind, workers, address) as submit:
                for job, result in submit(todo, device):
                    finish(job, result)
                ready = []
                for job in experiments:
                    missing = [label for label in job.uses if label in failures]
                    if missing:
                        failures[job.name] = f"skipped: {', '.join(missing)} could not be prepared"
                        bar.update()
                    else:
                        ready.append(with_prepared(job, configs))
                for job, result in submit(ready, device):
                    finish(job, result)
            written = store.export([j.key for j in prepare_jobs + experiment_jobs if store.record(j.key)], out)
            print(f"{study.name}: finished in {time.perf_counter() - began:.0f} s; "
                  + (f"rows in {', '.join(str(p) for p in written)}" if written else "no rows yet"))
        finally:
            bar.close()
            write_findings(out)
            if report:
                print(f"report: {write_study_report(out)}")
    if failures:
        raise MriRobustError(f"{len(failures)} job(s) did not finish (the others are stored; run again to retry): "
                             + "; ".join(f"{name}: {why}" for name, why in failures.items()))
    return out


def check_study(study: Study, out: Path, device: str) -> tuple[list[Job], list[Job]]:
    """Everything a run needs, before any file is written: the output folder can be written, the
    device exists, every experiment's labels, data files and settings pass (errors in a job's spec
    are named by their path in the study, `experiments.NAME.FIELD`)."""
    check_output(out, folder=True)
    resolved = str(resolve_device(device, "--device" if device != study.device else "device"))
    prepare_jobs, experiment_jobs = plan(study, out)
    for job in experiment_jobs:
        try:
            check(job, resolved)
        except ConfigError as error:
            raise ConfigError(_in_experiment(job.name, error.field), error.problem) from None
    return prepare_jobs, experiment_jobs


def _in_experiment(name: str, field: str) -> str:
    """A spec field named by an experiment's check, as its path in the study config."""
    head = re.split(r"[.\[]", field, maxsplit=1)[0]
    if field.startswith(("experiments.", "--")) or (head in ("data", "methods") and "." in field):
        return field
    return f"experiments.{name}.{field}"


def study_folder(study: Study, out: str | Path | None) -> Path:
    """Where a study writes: `out`, by default out/<name>."""
    return Path(out or Path("out") / study.name).resolve()


def run_with_report(study: Study, out: str | Path | None = None, **options: Any) -> Path:
    """`run_study` with its HTML report; returns the report's path."""
    out = study_folder(study, out)
    run_study(study, out, report=True, **options)
    return out / "report" / "index.html"


def report_source(out: str | Path) -> ReportSource:
    """What the report of the study folder `out` is drawn from, read through its store."""
    out = Path(out)
    store = Store(out / "store")
    plan = store.plan()
    config = out / "study.yaml"
    if plan is None and not config.is_file():
        raise DataError(out, "not a study folder (no study.yaml, no store/plan.json)")
    jobs = plan["jobs"] if plan else []
    records = {entry["key"]: record for entry in jobs if (record := store.record(entry["key"]))}
    verdicts = [v.as_dict() for v in study_findings(out)] if plan else []
    return ReportSource(out, plan["study"] if plan else out.name, jobs, records, store.rows, store.artefacts,
                        config.read_text(encoding="utf-8") if config.is_file() else None, plan is not None,
                        verdicts)


def study_findings(out: str | Path) -> list[Verdict]:
    """The verdicts on the paper's claims from the finished experiments of the study folder `out`."""
    store = Store(Path(out) / "store")
    plan = store.plan()
    if plan is None:
        raise DataError(out, "not a study folder with a plan (no store/plan.json): nothing has run")
    jobs = [JobRows(entry["name"], entry["kind"], store.rows(entry["key"]),
                    lambda key=entry["key"]: store.artefacts(key))
            for entry in plan["jobs"] if entry["kind"] not in PREPARE_KINDS and store.record(entry["key"])]
    return assess(jobs)


def write_findings(out: str | Path) -> Path:
    """findings.json in the study folder `out` (atomically): the rules and every claim's verdict."""
    path = Path(out) / "findings.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(as_json(study_findings(out)), indent=1, default=str), encoding="utf-8")
    return path


def write_study_report(out: str | Path, folder: str | Path | None = None) -> Path:
    """The HTML report of the study folder `out`, written into `folder` (default out/report), while
    holding the store: a run in progress owns its report."""
    folder = Path(folder) if folder else Path(out) / "report"
    source = report_source(out)
    check_output(folder, folder=True)
    if not source.planned:
        return write_report(source, folder)
    with Store(Path(out) / "store").lock():
        return write_report(source, folder)


def describe_plan(study: Study, out: str | Path | None = None) -> str:
    """The jobs a run would have, each marked done (in the store) or to run; runs nothing."""
    out = study_folder(study, out)
    store = Store(out / "store")
    prepare_jobs, experiment_jobs = check_study(study, out, study.device)
    lines = [f"{study.name}: config valid; {len(prepare_jobs) + len(experiment_jobs)} jobs in {out}"]
    lines += [f"  {'done  ' if store.record(job.key) else 'to run'}  {job.kind:13s} {job.name}  [{job.key}]"
              for job in prepare_jobs + experiment_jobs]
    return "\n".join(lines)


def _default_workers() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def safe_execute(job: Job, device: str, progress: bool = False) -> dict[str, Any]:
    """`execute`, with a user-caused failure (bad data, a vanished folder, a full disk) turned into
    an error message: such exceptions do not always survive pickling between processes."""
    try:
        return execute(job, str(resolve_device(device)), progress)
    except (MriRobustError, OSError) as error:
        return {"error": f"{type(error).__name__}: {error}"}
    except Exception:  # a bug: keep its traceback across the process boundary
        raise RuntimeError(f"{job.kind} {job.name} crashed:\n{traceback.format_exc()}") from None


# --- executors: each yields (job, result) as results arrive -------------------------------------------

class _executor:
    """Context manager giving `submit(jobs, device) -> iterator of (job, result)`."""

    def __init__(self, kind: str, workers: int, address: str | None) -> None:
        self.kind, self.workers, self.address = kind, workers, address
        self.pool: Any = None

    def __enter__(self):
        if self.kind == "processes":
            context = multiprocessing.get_context("spawn")
            gpus = context.Queue()
            for i in range(self.workers):
                gpus.put(i)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker,
                                            initargs=(gpus,))
        elif self.kind == "ray":
            self.pool = _ray(self.address, self.workers)
        return self.submit

    def __exit__(self, *exc: Any) -> None:
        if self.kind == "processes":
            self.pool.shutdown(cancel_futures=True)

    def submit(self, jobs: Iterable[Job], device: str) -> Iterator[tuple[Job, dict[str, Any]]]:
        jobs = list(jobs)
        if self.kind == "inline":
            for job in jobs:
                yield job, safe_execute(job, device, progress=True)
        elif self.kind == "processes":
            pending = {self.pool.submit(safe_execute, job, device): job for job in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        else:
            ray, task = self.pool
            pending = {task.remote(job, device): job for job in jobs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                yield pending.pop(done[0]), ray.get(done[0])


def _init_worker(gpus: Any) -> None:
    """Give this worker process one GPU (by its index in the pool) before torch touches CUDA."""
    index = gpus.get()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [p.name[len("nvidia"):] for p in sorted(Path("/dev").glob("nvidia[0-9]*"))]
    if ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[index % len(ids)]


def _ray(address: str | None, workers: int) -> tuple[Any, Any]:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor.kind", "ray is not installed; pip install 'mrirobust[ray]'") from None
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0  # one GPU per task where the cluster has them
    return ray, ray.remote(num_gpus=gpus)(safe_execute)
