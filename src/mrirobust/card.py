"""`mrirobust card METHOD --data DIR`: a robustness card for one method against three references.

The card is a preset study (recon, attack, perturb and, with a second data folder, an anatomy
shift) comparing METHOD with zero-filled, l1 and a U-net (unet-small trained on the data, or given
weights), run through the study runner into OUT (so it resumes and `mrirobust report OUT` draws
the full report). card.json and card.html hold the tables the card summarises and the verdicts of
the claims its experiments decide; a claim its few models cannot decide stays inconclusive.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrirobust import schema
from mrirobust.atomic import atomic_path, check_output
from mrirobust.errors import ConfigError
from mrirobust.findings import CLAIMS
from mrirobust.methods.base import describe, parse_spec
from mrirobust.methods.unet import load_checkpoint, recorded_method
from mrirobust.metrics import mean_ci
from mrirobust.report.html import write_summary
from mrirobust.report.perturb_figures import area_table
from mrirobust.report.recon_figures import summary_table
from mrirobust.report.registry import Table, kind_report
from mrirobust.report.tables import ok_rows
from mrirobust.study.config import validate
from mrirobust.study.runner import run_study, study_findings
from mrirobust.study.store import Store

REFERENCES = ("zero-filled", "l1", "unet")
RANDOM = "random"  # the attack's random-noise control (experiments.attack.RANDOM)


@dataclass(frozen=True)
class CardPreset:
    """The card's study size: images per experiment, the attack's budget and the models' effort."""

    images: int = 8  # attacked and perturbed slices (the costly experiments)
    recon_images: int = 8
    eps: float = 0.05
    attack_steps: int = 5
    l1_iters: int = 30
    l1_lams: tuple[float, ...] = (0.001, 0.004)
    unet: Mapping[str, Any] | None = None  # unet-small settings (default: the preset's own)
    epochs: int = 10
    kinds: tuple[str, ...] = ("motion", "noise")
    levels: int = 5
    batch_size: int = 4


PRESETS = {
    "demo": CardPreset(),
    "quick": CardPreset(images=2, recon_images=2, attack_steps=2, l1_iters=5, l1_lams=(0.001,),
                        unet={"chans": 4, "num_pool_layers": 2}, epochs=1, batch_size=2),
}


@dataclass(frozen=True)
class CardRequest:
    """What the command line asks for: the method spec, the data folders and the U-net's weights."""

    method: str
    data: Path
    data2: Path | None = None
    unet_checkpoint: Path | None = None
    preset: str = "demo"
    mask: Mapping[str, Any] | None = None  # the study's mask (default: the study default, random 4x, 8% centre)


def method_entry(text: str, taken: Sequence[str]) -> tuple[str, dict[str, Any], Any]:
    """The method's study label, config and traits; a bad name or module:attr is a ConfigError on METHOD."""
    spec = parse_spec(text)
    config = {"name": spec} if isinstance(spec, str) else dict(spec)
    try:
        info = describe({k: v for k, v in config.items() if k not in ("train", "tune")})
    except ConfigError as error:
        raise ConfigError("METHOD", error.problem if error.field == "method" else str(error)) from None
    label = str(info.name or config["name"]).rsplit(":", 1)[-1].rsplit(".", 1)[-1] or "method"
    return (f"{label}-card" if label in taken else label), config, info


def given_unet(checkpoint: Path) -> dict[str, Any]:
    """The reference U-net for given weights: the architecture our trainer recorded in them (any
    preset's size), else unet-small's defaults (fastMRI's and other trainers' files record none).
    The preset's `unet` sizes only say what the card trains."""
    spec = dict(recorded_method(load_checkpoint(checkpoint)) or {"name": "unet-small"})
    if not str(spec["name"]).startswith("unet"):
        raise ConfigError("--unet-checkpoint", f"{checkpoint}: holds {spec['name']} weights, not a U-net's")
    return {**spec, "checkpoint": str(checkpoint)}


def card_config(request: CardRequest) -> tuple[str, dict[str, Any]]:
    """The method's label and the card's study config (a mapping for `study.config.validate`)."""
    for flag, folder in (("--data", request.data), ("--data2", request.data2)):
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(flag, f"no such folder: {folder}")
    if request.unet_checkpoint is not None and not Path(request.unet_checkpoint).is_file():
        raise ConfigError("--unet-checkpoint", f"no such file: {request.unet_checkpoint}")
    preset = PRESETS[request.preset]
    label, config, info = method_entry(request.method, REFERENCES)
    train = {"data": "data", "epochs": preset.epochs, "batch_size": preset.batch_size}
    for section in ("train", "tune"):  # a method file's own training or tuning runs on the card's data
        if isinstance(config.get(section), dict):
            config[section] = {**config[section], "data": "data"}
    if info.needs_checkpoint and "train" not in config:
        config["train"] = train
    unet = given_unet(request.unet_checkpoint) if request.unet_checkpoint else \
        {"name": "unet-small", **(preset.unet or {}), "train": train}
    methods = {label: config, "zero-filled": "zero-filled",
               "l1": {"name": "l1", "iters": preset.l1_iters,
                      "tune": {"data": "data", "grid": {"lam": list(preset.l1_lams)}, "images": 1}},
               "unet": unet}
    everyone = [label, *REFERENCES]
    attacked = [label] if info.differentiable or info.optimisation_based else []
    experiments: dict[str, Any] = {
        "recon": {"data": "data", "methods": everyone, "limit": preset.recon_images, "batch_size": preset.batch_size},
        "attack": {"data": "data", "methods": [*attacked, "l1", "unet"],
                   "evaluate_only": [m for m in everyone if m not in attacked and m not in ("l1", "unet")],
                   "eps": [preset.eps], "images": preset.images, "attack": {"steps": preset.attack_steps},
                   "batch_size": preset.batch_size},
        "perturb": {"data": "data", "methods": everyone, "kinds": list(preset.kinds), "levels": preset.levels,
                    "images": preset.images, "batch_size": preset.batch_size},
    }
    data: dict[str, Any] = {"data": str(Path(request.data).resolve())}
    if request.data2 is not None:
        data["data2"] = str(Path(request.data2).resolve())
        experiments["anatomy-shift"] = {
            "kind": "anatomy_shift", "source": "data", "target": "data2", "images": preset.images,
            "groups": {label: [label], "l1": ["l1"], "U-net": ["unet"], "baseline": ["zero-filled"]},
            "batch_size": preset.batch_size}
    return label, {"name": f"card-{label}", "device": "auto", **({"mask": dict(request.mask)} if request.mask else {}),
                   "data": data, "methods": methods, "experiments": experiments}


def run_card(request: CardRequest, out: str | Path, *, device: str = "auto", progress: bool = True) -> Path:
    """Run (or resume) the card's study into `out` and write card.json and card.html; returns card.html."""
    out = Path(out).resolve()
    check_output(out, folder=True)
    label, raw = card_config(request)
    study = validate(raw, base=Path.cwd())
    run_study(study, out, device=device, progress=progress)
    return write_card(out, label, request.preset)


def write_card(out: Path, label: str, preset: str) -> Path:
    """card.json and card.html of the finished card study in `out` (atomically)."""
    store = Store(out / "store")
    jobs = {entry["kind"]: store.rows(entry["key"]) for entry in store.plan()["jobs"] if store.record(entry["key"])}
    tables = card_tables(jobs)
    verdicts = [v.as_dict() for v in study_findings(out) if CLAIMS[v.claim][0] in jobs]
    card = {"method": label, "references": list(REFERENCES), "preset": {"name": preset, **asdict(PRESETS[preset])},
            "study": str(out), "tables": [{"title": t, "header": h, "rows": b} for t, h, b in tables],
            "verdicts": verdicts}
    with atomic_path(out / "card.json") as tmp:
        tmp.write_text(json.dumps(card, indent=1, default=str), encoding="utf-8")
    intro = (f"{label} against {', '.join(REFERENCES)} ({preset} preset; study folder {out}: "
             "`mrirobust report` draws its full report, `mrirobust card` again resumes it).")
    return write_summary(out / "card.html", f"Robustness card: {label}", intro, tables, verdicts)


def card_tables(jobs: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Table]:
    """Recon quality with CIs, the attack's worst-case loss, the perturbation sweep areas (and the shift's tables)."""
    tables: list[Table] = []
    if jobs.get("recon"):
        tables.append(summary_table(jobs["recon"]))
    if ok_rows(jobs.get("attack", [])):
        tables.append(worst_attack_table(ok_rows(jobs["attack"])))
    perturbed = ok_rows(jobs.get("perturb", []))
    if perturbed:
        tables += [area_table(perturbed, column) for column in schema.metric_columns(list(perturbed[0]))
                   if schema.metric_family(column) in ("ssim", "psnr")]
    if jobs.get("anatomy_shift"):
        tables += kind_report("anatomy_shift").tables(jobs["anatomy_shift"])
    return tables


def worst_attack_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Per evaluated method and metric at the largest eps: the worst attack's mean loss [95% CI over
    images] and the random control's, so the loss reads against noise of the same norm."""
    eps = max(r["eps"] for r in rows)
    chosen = [r for r in rows if r["eps"] == eps]
    body = []
    for column in [schema.loss_column(c) for c in schema.metric_columns(list(chosen[0]))
                   if schema.metric_family(c) in ("ssim", "psnr") and schema.loss_column(c) in chosen[0]]:
        for method in dict.fromkeys(r["evaluated"] for r in chosen):
            mine = [r for r in chosen if r["evaluated"] == method]
            losses = {a: [float(r[column]) for r in mine if r["attacked"] == a]
                      for a in dict.fromkeys(r["attacked"] for r in mine)}
            attacks = [a for a in losses if a != RANDOM]
            worst = max(attacks, key=lambda a: float(np.mean(losses[a])))
            body.append([column, method, worst, len(losses[worst]), _mean_ci(losses[worst]),
                         _mean_ci(losses.get(RANDOM, []))])
    title = (f"Attack at eps {eps:g}: the worst attack's mean loss per evaluated method [95% bootstrap CI over "
             "images; n = images] and the random-noise control of the same norm")
    return title, ["loss", "evaluated", "worst attack", "n", "mean loss", "random-noise loss"], body


def _mean_ci(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean, low, high = mean_ci(values)
    return f"{mean:.4f} (n 1: no CI)" if len(values) == 1 else f"{mean:.4f} [{low:.4f}, {high:.4f}]"
