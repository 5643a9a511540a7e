"""The adversarial-perturbation experiment (paper section 4, appendix A): a transfer matrix.

For each batch of images, each attacked method and each eps, one perturbation z is found for the
attacked method and applied to every evaluated method; a random Gaussian z of the same norm is the
control. Each row scores f(y + z) against the target and records the loss relative to the clean
f(y) (`<metric>_loss`: clean - perturbed for SSIM/PSNR, perturbed - clean for NMSE/MSE, so a
positive loss always means worse).

Units: the clean reconstructions of a batch; one (attacked method or the random control, eps,
batch). A perturbed unit reads its batch's clean unit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

import mrirobust
from mrirobust import schema
from mrirobust.data.domains import data_identity, slice_id
from mrirobust.errors import ConfigError, MriRobustError
from mrirobust.evaluate import Batch, batches, config_hash
from mrirobust.experiments.base import Unit, UnitResult, method_identity, register
from mrirobust.experiments.recon import DATA_HELP, METHODS_HELP, Sliced
from mrirobust.experiments.spec import setting
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import center_crop, ifft2c
from mrirobust.physics.masks import MaskSpec
from mrirobust.robustness.attack_settings import Objective, PgdSettings, Scope, TwoStepSettings
from mrirobust.robustness.attacks import attack, random_perturbation

RANDOM = "random"  # the control: Gaussian z of the same norm
MAX_EPS = 1.0


_PGD, _TWO = PgdSettings(), TwoStepSettings()


@dataclass(frozen=True)
class AttackSettings:
    """Settings of the attack a method's traits call for (unset: that attack's default); each
    field is a field of robustness.attack_settings' PgdSettings, TwoStepSettings or Scope."""

    steps: int | None = setting(None, help=f"attack iterations (PGD: {_PGD.steps}, two-step: {_TWO.steps})",
                                minimum=1)
    step_size: float | None = setting(None, help="PGD step length (default: the radius)", minimum=0.0)
    restarts: int | None = setting(None, help=f"PGD restarts, the best kept (default {_PGD.restarts})", minimum=1)
    optimizer: Literal["l2", "adam"] | None = setting(None, help="PGD: normalised l2 steps or the authors' Adam")
    beta: float | None = setting(None, help="two-step: weight of the image-change penalty", minimum=0.0)
    clean_iters: int | None = setting(None, help=f"two-step: iterations on the clean loss first ({_TWO.clean_iters})",
                                      minimum=0)
    lr: float | None = setting(None, help=f"two-step: Adam rate of the method's variables ({_TWO.lr})", minimum=0.0)
    lr_z: float | None = setting(None, help="two-step: z step in units of the radius", minimum=0.0)
    z_step: Literal["ascent", "descent"] | None = setting(None, help="two-step: direction of the z steps")
    objective: Objective = setting("both", help="what the attack maximises on the scored crop: mse, ssim "
                                                "(1 - SSIM) or both (relative MSE + 1 - SSIM, as the verdicts "
                                                "score SSIM and PSNR)")

    def given(self) -> dict[str, Any]:
        """The attack settings that were set (the objective is the scope's, see `scope`)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k != "objective"}

    def scope(self, seed: int, reference: torch.Tensor | None, crop: tuple[int, int]) -> Scope:
        return Scope(seed, reference, crop, self.objective)


@dataclass(frozen=True)
class AttackSpec:
    data: str = setting(help=DATA_HELP, positional=True)
    methods: tuple[str, ...] = setting(("zero-filled", "sense"), help="methods to attack; " + METHODS_HELP)
    evaluate_only: tuple[str, ...] = setting((), help="methods evaluated under every perturbation but not attacked",
                                             minimum_items=0)
    eps: tuple[float, ...] = setting((0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08), minimum=0.0,
                                     help="budgets ||z|| / ||reference||")
    images: int = setting(10, help="attack the first this many slices", minimum=1)
    split: str = setting("test", help="the split folder of the data source")
    mask: MaskSpec | None = setting(None, help="the under-sampling mask (default: the data source's)")
    norm: Literal["measured", "full"] = setting(
        "measured", help="budget relative to the measured k-space y (paper) or the full k-space (authors' code)")
    attack: AttackSettings = setting(AttackSettings(), flag="--attack-setting",
                                     help="attack settings, e.g. steps=50")
    allow_large_eps: bool = setting(False, help=f"allow budgets above {MAX_EPS:g} (the perturbation larger than y)")
    seed: int = setting(0, help="seeds the attacks' random starts and the random control", minimum=0)
    batch_size: int = setting(4, help="images attacked at once", minimum=1)

    def __post_init__(self) -> None:
        if not self.allow_large_eps and max(self.eps) > MAX_EPS:
            raise ConfigError("eps", f"{max(self.eps):g} > {MAX_EPS:g}: a perturbation larger than the measurement; "
                                     "set allow_large_eps to mean it")


@register
class Attack(Sliced):
    kind = "attack"
    spec_type = AttackSpec
    summary = "adversarial k-space perturbations: the transfer matrix (Figures 3, 9, 10)"

    @classmethod
    def references(cls, spec: AttackSpec) -> tuple[list[str], list[str]]:
        return [spec.data], [*spec.methods, *spec.evaluate_only]

    @property
    def labels(self) -> list[str]:
        return [*self.spec.methods, *self.spec.evaluate_only]

    def check(self) -> None:
        if RANDOM in self.labels:
            raise ConfigError("methods", f"{RANDOM!r} names the random control; label the method otherwise")
        super().check()

    def units(self) -> list[Unit]:
        dataset = self.dataset()
        samples = [dataset[i] for i in range(min(self.spec.images, len(dataset)))]
        mask = self.mask()
        common = {"evaluated": method_identity(self.inputs, self.labels), "seed": self.spec.seed, "maps": "clean",
                  "norm": self.spec.norm, "settings": self.spec.attack.given(),
                  "objective": self.spec.attack.objective, "mask": mask.describe(),
                  "data": data_identity(dataset), "version": mrirobust.__version__}
        units, start = [], 0
        for group in batches(samples, self.spec.batch_size):
            images = {"images": [slice_id(dataset.index[start + i]) for i in range(len(group))], "start": start}
            clean = Unit(f"clean-image{start}", {"kind": "clean", **common, **images}, ("clean", group, start))
            units.append(clean)
            for label in [*self.spec.methods, RANDOM]:
                for eps in self.spec.eps:
                    units.append(Unit(f"attack-{label}-eps{eps:g}-image{start}",
                                      {"kind": "attack", "attacked": label, "eps": eps, **common, **images},
                                      ("attack", group, start, label, eps, clean.name)))
            start += len(group)
        return units

    def batch(self, group: list, start: int) -> Batch:
        """The batch starting at image `start`, loaded once per run: its precomputed per-method work
        (l1's maps) then serves every eps and attacked method."""
        loaded = self.__dict__.setdefault("_batches", {})
        if start not in loaded:
            loaded[start] = Batch.load(group, self.mask(), self.inputs.device)
        return loaded[start]

    def run(self, unit: Unit, done: Mapping[str, UnitResult]) -> UnitResult:
        if unit.work[0] == "clean":
            return self.clean_unit(self.batch(*unit.work[1:]), unit.work[2])
        _, group, start, label, eps, clean = unit.work
        return self._perturbed(self.batch(group, start), start, label, eps, done[clean])

    def _perturbation(self, label: str, eps: float, batch: Batch, start: int):
        """z (B, C, H, W), the attack's name, its per-image objective (None for random/zero) and the
        settings it ran with (the attack's defaults filled in)."""
        reference = batch.full if self.spec.norm == "full" else None
        seed = self.spec.seed + start
        if eps == 0:
            return torch.zeros_like(batch.full), RANDOM if label == RANDOM else "none", None, {}
        if label == RANDOM:
            z = random_perturbation(batch.measured, batch.masks, eps, seed=seed, reference=reference)
            return z, RANDOM, None, {"seed": seed}
        method = self.methods[label]
        result = attack(method, batch.measured, batch.masks, eps, self.spec.attack.given(),
                        self.spec.attack.scope(seed, reference, batch.shape), target_shape=batch.shape,
                        **batch.meta(method))  # the function scored: the U-net crops to target_shape first
        return result.perturbation.detach(), result.attack, result.objective.detach().tolist(), result.settings

    def _perturbed(self, batch: Batch, start: int, label: str, eps: float, clean: UnitResult) -> UnitResult:
        """Rows of every evaluated method under the perturbation of `label` at `eps`."""
        try:
            z, attack_name, objective, settings = self._perturbation(label, eps, batch, start)
            attack_failure = None
        except ConfigError:
            raise
        except MriRobustError as error:  # e.g. the attacked method returns NaN: no z, rows record why
            z, attack_name, objective, settings = torch.full_like(batch.full, math.nan), "failed", None, {}
            attack_failure = f"attack failed: {error}"
        reference = batch.full if self.spec.norm == "full" else batch.measured
        count = len(batch.samples)
        shared = {"attacked": label, "attacked_config_hash": self._hash(label), "attack": attack_name, "eps": eps,
                  "attack_seed": self.spec.seed + start, "norm": self.spec.norm,
                  "attack_settings": json.dumps(settings, sort_keys=True, default=str),
                  schema.MASK: self.mask().describe(), schema.VERSION: mrirobust.__version__,
                  schema.SSIM_VARIANT: batch.ssim_variant}
        per_image = {schema.FILE: [s.meta.file for s in batch.samples],
                     schema.SLICE: [s.meta.slice for s in batch.samples],
                     schema.IMAGE: [start + i for i in range(count)], schema.MASK_SEED: batch.mask_seeds,
                     "budget": (eps * torch.linalg.vector_norm(reference, dim=(-3, -2, -1))).tolist(),
                     "z_norm": torch.linalg.vector_norm(z, dim=(-3, -2, -1)).tolist(),
                     "attack_objective": [math.nan] * count if objective is None else objective}
        rows, example = [], {"perturbed_target": self._perturbed_target(batch, z)[0].cpu()}
        before_all = clean.artefacts["clean_scores"][start]
        for evaluated in self.labels:
            before = before_all[evaluated]
            failure = attack_failure or (f"clean reconstruction failed: {before}" if isinstance(before, str) else None)
            after = before  # z = 0 leaves y unchanged: the clean scores stand, nothing to reconstruct
            if failure is None and eps > 0:
                try:
                    image = batch.reconstruct(self.methods[evaluated], batch.measured + z)
                    after = batch.scores(image)
                    example[evaluated] = image[0].cpu()
                except MriRobustError as error:
                    failure = str(error)
            for i in range(count):
                row = {**shared, "evaluated": evaluated, schema.CONFIG_HASH: self._hash(evaluated),
                       "evaluated_family": getattr(self.methods[evaluated], "family", "custom"),
                       **{key: values[i] for key, values in per_image.items()},
                       schema.STATUS: "failed" if failure else "ok", schema.REASON: failure or ""}
                if failure is None:
                    for name, value in after[i].items():
                        row.update({name: value, schema.clean_column(name): before[i][name],
                                    schema.loss_column(name): schema.loss(name, before[i][name], value)})
                rows.append(row)
        keep = start == 0 and eps == max(self.spec.eps)
        return UnitResult(rows, {"perturbed": {label: example}} if keep else {})

    def _hash(self, label: str) -> str:
        return config_hash(self.methods[label]) if label in self.methods else ""

    @staticmethod
    def _perturbed_target(batch: Batch, z: torch.Tensor) -> torch.Tensor:
        """The ground truth seen through the perturbation: RSS of the full k-space plus z (Figure 9)."""
        return center_crop(rss(ifft2c(batch.full + z)), batch.shape)

    def finish(self, results: list[UnitResult]) -> UnitResult:
        merged = UnitResult([row for r in results for row in r.rows])
        examples: dict[str, Any] = {}
        for result in results:
            if "clean" in result.artefacts:
                examples["clean"] = result.artefacts["clean"]
            examples.update(result.artefacts.get("perturbed", {}))
        merged.artefacts = {"examples": examples, "eps": max(self.spec.eps)}
        return merged
