"""The adversarial-perturbation experiment (paper section 4, appendix A): a transfer matrix.

For each batch of images, each attacked method and each eps, one perturbation z is found for the
attacked method and applied to every evaluated method; a random Gaussian z of the same norm is the
control. Each row scores f(y + z) against the target and records the loss relative to the clean
f(y) (`<metric>_loss`: clean - perturbed for SSIM/PSNR, perturbed - clean for NMSE/MSE, so a
positive loss always means worse).

The work is split into units (the clean reconstructions of a batch; one attacked method, eps and
batch). Each unit is written atomically to `out/units/` as soon as it is done, under a key that
hashes everything that produced it, so a re-run skips what is done and gives identical rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import mrirobust
from mrirobust.atomic import atomic_path
from mrirobust.data.dataset import first_samples
from mrirobust.data.sample import Sample, draw_mask
from mrirobust.errors import ConfigError, MriRobustError
from mrirobust.evaluate import batches, config_hash
from mrirobust.hashing import digest
from mrirobust.methods.base import build, checked_reconstruct, parse_spec
from mrirobust.metrics import SLICE_MAX, VOLUME_MAX, score, ssim_name
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import center_crop, ifft2c
from mrirobust.physics.masks import MaskSpec, stack_masks
from mrirobust.robustness.attacks import attack, random_perturbation
from mrirobust.report.adversarial_figures import RANDOM, basis_figure, examples_figure, loss_figure
from mrirobust.results import write_csv, write_parquet

NORMS = ("measured", "full")  # budget relative to ||y|| (paper eq. 2) or the full k-space (authors' code)
RESULTS_NAME = "attack"
_WORSE_WHEN_LOWER = ("ssim", "psnr")


def check_eps(values: Sequence[Any] | str) -> list[float]:
    """Budgets as floats >= 0, from a list or the CLI text "0,0.01,0.02"; ConfigError names --eps."""
    items = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
    if not items:
        raise ConfigError("--eps", "give at least one budget, e.g. 0,0.02,0.04,0.08")
    budgets = []
    for item in items:
        try:
            value = float(item) if not isinstance(item, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError("--eps", f"{item!r} is not a number >= 0 (eps = ||z|| / ||reference||)")
        budgets.append(value)
    return budgets


@dataclass
class _Batch:
    """One batch of images on the device: measured k-space y, mask, full k-space and targets."""

    samples: list[Sample]
    start: int  # index of the first image in the run: names units, seeds the attack, numbers rows
    masks: torch.Tensor
    mask_seeds: list[str]
    full: torch.Tensor
    targets: torch.Tensor
    max_values: torch.Tensor
    ssim_variant: str
    precomputed: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # see `meta`

    @property
    def measured(self) -> torch.Tensor:
        return self.full * self.masks

    @classmethod
    def load(cls, samples: list[Sample], start: int, spec: MaskSpec, device: str | torch.device) -> "_Batch":
        for s in samples:
            if s.target is None:
                raise ConfigError("data", f"{s.meta.file} slice {s.meta.slice} has no target to score against")
        drawn = [draw_mask(s, spec) for s in samples]
        volume_max = all(s.meta.max_value is not None for s in samples)
        return cls(
            samples=samples,
            start=start,
            masks=stack_masks([m for m, _ in drawn]).to(device),
            mask_seeds=["from-file" if seed is None else Path(s.meta.file).name
                        for s, (_, seed) in zip(samples, drawn)],
            full=torch.stack([s.kspace for s in samples]).to(device),
            targets=torch.stack([s.target for s in samples]).to(device),
            max_values=torch.tensor([s.meta.max_value or 0.0 for s in samples], device=device),
            ssim_variant=VOLUME_MAX if volume_max else SLICE_MAX,
        )

    def meta(self, method: Any) -> dict[str, torch.Tensor]:
        """`method.precompute` of the clean y (l1: its maps), once per batch and method; {} without one.

        Passed to every reconstruction and attack of this batch, so l1 estimates its maps once
        instead of at every PGD step, eps value and evaluation (perturbed y reuse the clean maps).
        """
        key = id(method)
        if key not in self.precomputed:
            prepare = getattr(method, "precompute", None)
            with torch.no_grad():
                self.precomputed[key] = prepare(self.measured, self.masks) if prepare else {}
        return self.precomputed[key]

    def reconstruct(self, method: Any, kspace: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            image = checked_reconstruct(method, kspace, self.masks, target_shape=tuple(self.targets.shape[-2:]),
                                        **self.meta(method))
        return center_crop(image, tuple(self.targets.shape[-2:]))

    def score(self, image: torch.Tensor) -> list[dict[str, float]]:
        """Per image, the named metrics of `image` (B, h, w) against the targets."""
        scores = score(self.targets, image, self.max_values, ssim_variant=self.ssim_variant)
        values = {name: value.tolist() for name, value in scores.items()}
        return [{name: column[i] for name, column in values.items()} for i in range(len(self.samples))]

    def perturbed_target(self, z: torch.Tensor) -> torch.Tensor:
        """The ground truth seen through the perturbation: RSS of the full k-space plus z (Figure 9)."""
        return center_crop(rss(ifft2c(self.full + z)), tuple(self.targets.shape[-2:]))


def _loss(name: str, clean: float, perturbed: float) -> float:
    difference = clean - perturbed
    return difference if name.split("[")[0] in _WORSE_WHEN_LOWER else -difference


class _Experiment:
    """One configured run: methods, budgets and settings; computes or loads its units."""

    def __init__(self, attacked: list[Any], evaluated: list[Any], eps: list[float], spec: MaskSpec, *,
                 out: Path, seed: int, norm: str, attack_settings: dict[str, Any]) -> None:
        self.attacked, self.evaluated, self.eps, self.spec = attacked, evaluated, eps, spec
        self.out, self.seed, self.norm, self.settings = out, seed, norm, attack_settings
        self.hashes = {m.name: config_hash(m) for m in evaluated}
        self.common = {
            "norm": norm, "attack_settings": json.dumps(attack_settings, sort_keys=True, default=str),
            "mask": spec.describe(), "mrirobust_version": mrirobust.__version__,
        }

    def _key(self, kind: str, label: str, eps: float | None, batch: _Batch) -> str:
        identity = {
            "kind": kind, "attacked": label, "attacked_hash": self.hashes.get(label, ""), "eps": eps,
            "images": [(s.meta.file, s.meta.slice) for s in batch.samples], "seed": self.seed,
            "evaluated": self.hashes, **self.common,
        }
        name = f"{kind}-{label}-eps{eps:g}" if eps is not None else kind
        return f"{name}-image{batch.start}-{digest(identity)}"

    def unit(self, key: str, compute: Callable[[], dict]) -> dict:
        """The stored unit `key`, or compute it and store it atomically."""
        path = self.out / "units" / f"{key.replace('/', '_')}.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
        result = compute()
        with atomic_path(path) as tmp:
            torch.save(result, tmp)
        return result

    def clean(self, batch: _Batch) -> dict:
        """Scores of every evaluated method on the clean y (a failure is stored as its reason)."""

        def compute() -> dict:
            scores, example = {}, {"target": batch.targets[0].cpu()}
            for method in self.evaluated:
                try:
                    image = batch.reconstruct(method, batch.measured)
                except MriRobustError as error:
                    scores[method.name] = str(error)
                    continue
                scores[method.name] = batch.score(image)
                example[method.name] = image[0].cpu()
            return {"scores": scores, "example": example if batch.start == 0 else None}

        return self.unit(self._key("clean", "", None, batch), compute)

    def perturbed(self, label: str, eps: float, batch: _Batch, clean: dict) -> dict:
        """Rows of every evaluated method under the perturbation of `label` (a method or RANDOM) at `eps`."""

        def compute() -> dict:
            try:
                z, attack_name, objective, settings = self._perturbation(label, eps, batch)
                attack_failure = None
            except ConfigError:
                raise
            except MriRobustError as error:  # e.g. the attacked method returns NaN: no z, rows record why
                z, attack_name, objective, settings = torch.full_like(batch.full, math.nan), "failed", None, {}
                attack_failure = f"attack failed: {error}"
            reference = batch.full if self.norm == "full" else batch.measured
            shared = {
                "attacked": label, "attacked_hash": self.hashes.get(label, ""), "attack": attack_name, "eps": eps,
                "attack_seed": self.seed + batch.start, **self.common,
                "attack_settings": json.dumps(settings, sort_keys=True, default=str),
                "ssim_variant": batch.ssim_variant,
            }
            per_image = {
                "file": [s.meta.file for s in batch.samples], "slice": [s.meta.slice for s in batch.samples],
                "image": [batch.start + i for i in range(len(batch.samples))], "mask_seed": batch.mask_seeds,
                "budget": (eps * torch.linalg.vector_norm(reference, dim=(-3, -2, -1))).tolist(),
                "z_norm": torch.linalg.vector_norm(z, dim=(-3, -2, -1)).tolist(),
                "attack_objective": [math.nan] * len(batch.samples) if objective is None else objective,
            }
            rows, example = [], {"perturbed_target": batch.perturbed_target(z)[0].cpu()}
            for method in self.evaluated:
                before = clean["scores"][method.name]
                failure = attack_failure or (
                    f"clean reconstruction failed: {before}" if isinstance(before, str) else None)
                after = before  # z = 0 leaves y unchanged: the clean scores stand, nothing to reconstruct
                if failure is None and eps > 0:
                    try:
                        image = batch.reconstruct(method, batch.measured + z)
                        after = batch.score(image)
                        example[method.name] = image[0].cpu()
                    except MriRobustError as error:
                        failure = str(error)
                for i in range(len(batch.samples)):
                    row = {**shared, "evaluated": method.name, "evaluated_hash": self.hashes[method.name],
                           **{key: values[i] for key, values in per_image.items()},
                           "status": "failed" if failure else "ok", "reason": failure or ""}
                    if failure is None:
                        for name, value in after[i].items():
                            row.update({name: value, f"{name}_clean": before[i][name],
                                        f"{name}_loss": _loss(name, before[i][name], value)})
                    rows.append(row)
            return {"rows": rows, "example": example if batch.start == 0 else None}

        return self.unit(self._key("attack", label, eps, batch), compute)

    def _perturbation(self, label: str, eps: float, batch: _Batch):
        """z (B, C, H, W), the attack's name, its per-image objective (None for random/zero) and the
        settings it ran with (the attack's defaults filled in)."""
        reference = batch.full if self.norm == "full" else None
        seed = self.seed + batch.start
        if eps == 0:
            return torch.zeros_like(batch.full), RANDOM if label == RANDOM else "none", None, {}
        if label == RANDOM:
            z = random_perturbation(batch.measured, batch.masks, eps, seed=seed, reference=reference)
            return z, RANDOM, None, {"seed": seed}
        method = next(m for m in self.attacked if m.name == label)
        crop = tuple(batch.targets.shape[-2:])  # the scored region: the attack aims there
        result = attack(method, batch.measured, batch.masks, eps, seed=seed, reference=reference, crop=crop,
                        **self.settings, **batch.meta(method))
        return result.perturbation.detach(), result.attack, result.objective.detach().tolist(), result.settings


def _build_methods(specs: Sequence[str | dict], field: str) -> list[Any]:
    methods = [build(parse_spec(s) if isinstance(s, str) else s) for s in specs]
    _check_names([m.name for m in methods], field)
    return methods


def _check_names(names: list[str], field: str) -> None:
    """Names label rows and figure panels, so they must be unique (and not the random control's)."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice or RANDOM in names:
        raise ConfigError(field, f"method names must be unique and not {RANDOM!r}; repeated: {', '.join(twice)}")


def run_attack_experiment(
    data: str | Path | Sequence[Sample],
    methods: Sequence[str | dict],
    *,
    eps: Sequence[float] | str,
    images: int = 10,
    out: str | Path,
    mask_type: str = "random",
    acceleration: int = 4,
    center_fraction: float = 0.08,
    evaluate_only: Sequence[str | dict] = (),
    device: str | torch.device = "cpu",
    seed: int = 0,
    norm: str = "measured",
    attack_settings: dict[str, Any] | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> Path:
    """`mrirobust attack`: attack each of `methods` on the first `images` slices, apply every z to
    every method (plus `evaluate_only`), write `out/attack.csv` (+ .parquet) and Figures 3, 9, 10.

    Returns the CSV's path. A re-run with the same settings resumes from `out/units/`.
    """
    budgets = check_eps(eps)
    if norm not in NORMS:
        raise ConfigError("--norm", f"unknown {norm!r}; choose from {', '.join(NORMS)}")
    attacked = _build_methods(methods, "--methods")
    evaluated = attacked + _build_methods(evaluate_only, "--evaluate-only")
    _check_names([m.name for m in evaluated], "--methods/--evaluate-only")
    spec = MaskSpec(mask_type, (center_fraction,), (acceleration,))
    samples = first_samples(data, images)
    out = Path(out)
    run = _Experiment(attacked, evaluated, budgets, spec, out=out, seed=seed, norm=norm,
                      attack_settings=dict(attack_settings or {}))
    labels = [m.name for m in attacked] + [RANDOM]
    groups = list(batches(samples, batch_size))
    starts = np.cumsum([0] + [len(g) for g in groups]).tolist()
    rows, examples = [], {}
    bar = tqdm(total=len(groups) * (1 + len(labels) * len(budgets)), desc="attack", unit="unit",
               disable=not progress)
    for start, group in zip(starts, groups):
        batch = _Batch.load(group, start, spec, device)
        clean = run.clean(batch)
        bar.update()
        if clean["example"] is not None:
            examples["clean"] = clean["example"]
        for label in labels:
            for value in budgets:
                bar.set_postfix_str(f"{label} eps={value:g}")
                unit = run.perturbed(label, value, batch, clean)
                rows.extend(unit["rows"])
                if unit["example"] is not None and value == max(budgets):
                    examples[label] = unit["example"]
                bar.update()
    bar.close()

    csv_path = write_csv(rows, out / f"{RESULTS_NAME}.csv")
    parquet = write_parquet(rows, out / f"{RESULTS_NAME}.parquet")
    loss_key = f"{ssim_name(rows[0]['ssim_variant'])}_loss"
    figures = [loss_figure(rows, out / "figure3.png", loss_key=loss_key),
               examples_figure(examples, out / "figure9.png", eps=max(budgets))]
    figure10 = basis_figure(rows, out / "figure10.png", loss_key=loss_key)
    figures += [figure10] if figure10 else []
    print(format_transfer(rows, loss_key=loss_key))
    failed = sum(r["status"] != "ok" for r in rows)
    if failed:
        print(f"{failed} of {len(rows)} rows failed; their `reason` column says why")
    wrote = [csv_path, parquet, *figures]
    print("wrote " + ", ".join(str(p) for p in wrote))
    return csv_path


def transfer_matrix(rows: Sequence[dict], *, loss_key: str, eps: float | None = None
                    ) -> tuple[list[str], list[str], np.ndarray]:
    """Mean loss at `eps` (default: the largest) per (attacked, evaluated): row and column labels, matrix."""
    eps = max(r["eps"] for r in rows) if eps is None else eps
    chosen = [r for r in rows if r["eps"] == eps and r["status"] == "ok"]
    attackers = list(dict.fromkeys(r["attacked"] for r in rows))
    victims = list(dict.fromkeys(r["evaluated"] for r in rows))
    matrix = np.full((len(attackers), len(victims)), np.nan)
    for i, a in enumerate(attackers):
        for j, v in enumerate(victims):
            values = [r[loss_key] for r in chosen if r["attacked"] == a and r["evaluated"] == v]
            matrix[i, j] = np.mean(values) if values else np.nan
    return attackers, victims, matrix


def format_transfer(rows: Sequence[dict], *, loss_key: str) -> str:
    """The transfer matrix at the largest eps as text, and whether each method is hurt most by its own attack."""
    eps = max(r["eps"] for r in rows)
    attackers, victims, matrix = transfer_matrix(rows, loss_key=loss_key, eps=eps)
    width = max(len(n) for n in attackers + victims + ["attacked \\ evaluated"]) + 2
    lines = [f"mean {loss_key} at eps={eps:g} (rows: attacked, columns: evaluated; nan: failed)",
             "attacked \\ evaluated".ljust(width) + "".join(v.rjust(width) for v in victims)]
    lines += [a.ljust(width) + "".join(f"{x:.4f}".rjust(width) for x in matrix[i]) for i, a in enumerate(attackers)]
    verdicts = []
    for j, victim in enumerate(victims):
        if victim not in attackers:
            continue
        column = matrix[:, j]
        if np.isnan(column).all():
            verdicts.append(f"{victim}: no results")
            continue
        worst = attackers[int(np.nanargmax(column))]
        verdicts.append(f"{victim}: {'yes' if worst == victim else f'no (worst: {worst})'}")
    if verdicts:
        lines.append("hurt most by its own attack? " + "; ".join(verdicts))
    return "\n".join(lines)
