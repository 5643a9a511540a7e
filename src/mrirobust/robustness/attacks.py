"""Adversarial perturbations of under-sampled k-space (paper section 4 and appendix A.1).

A perturbation z lives on the sampled locations and has ||z||_2 <= eps ||reference||_2 per slice,
norms over (C, H, W). The reference is the measured k-space y by default (the paper's eq. 2); the
authors' code divided by the norm of the fully sampled k-space: pass that as `reference` to match.
Every attack maximises the reconstruction change 1/2 ||f(y) - f(y + z)||^2 over that ball:

- `pgd`: methods that autograd differentiates (trait `differentiable`), eq. 2: projected gradient
  ascent with normalised-gradient l2 steps, or the authors' Adam variant.
- `two_step`: optimisation-based methods (trait `optimisation_based`), eq. 3: the method's own
  loss and the perturbation are optimised jointly, then the method is re-run on y + z.
- `worst_case_linear`: the exact optimum for a linear reconstruction (power iteration), the
  reference the attacks are tested against.
- `transfer`: methods that name differentiable `attack_surrogates(kspace, mask)` (test-time
  training: its fine-tuned and its base networks): PGD on each surrogate, the perturbations scored
  on the method, the stronger kept per slice (a lower bound).
- `random_perturbation`: Gaussian z of the same norm, the baseline every attack is compared with.

Attacks read the traits, never the class name, and work on a whole batch at once: budgets, step
lengths, restarts and stopping are per slice, and nothing leaves the k-space's device.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from mrirobust.errors import ConfigError
from mrirobust.methods.base import checked_reconstruct
from mrirobust.physics.l2ball import ball_radius, ball_step, clip_to_ball, fit_to_ball, norms, per_slice, unit
from mrirobust.physics.masks import check_mask
from mrirobust.robustness.attack_settings import PgdSettings, Scope, TwoStepSettings, attack_objective, split_settings

PGD_STEP_SCALE = 2.5  # the two-step attack's default z step: 2.5 radius / steps
ADAM_MAX_PROJECTIONS = 100  # the authors' stopping rule: stop after more than 100 projections ...
ADAM_WINDOW, ADAM_MIN_CHANGE = 200, 0.01  # ... or once ||z|| / ||ref|| grew by < 0.01 in 200 steps
BETA_DEFAULTS = {"l1": 1.0, "untrained": 0.05}  # the authors' beta for l1 and ConvDecoder
@runtime_checkable
class OptimisationAttackable(Protocol):
    """What an optimisation-based method offers the two-step attack (eq. 3 of the paper).

    `attack_variables` returns the method's variables at its starting point; those with
    `requires_grad` are optimised, the others are constants fixed from the clean data (coil maps,
    scales). `attack_image` is the magnitude image (B, H, W) the variables represent, at the data's
    scale; `attack_loss` is the method's own objective L_method(variables; kspace) per slice (B,).
    """

    def attack_variables(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> list[torch.Tensor]: ...

    def attack_image(self, variables: list[torch.Tensor]) -> torch.Tensor: ...

    def attack_loss(self, variables: list[torch.Tensor], kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


@dataclass
class AttackResult:
    """A perturbation and its effect: clean f(y), perturbed f(y + z), the objective (`Scope`) per slice."""

    perturbation: torch.Tensor  # (B, C, H, W) complex, zero off the mask
    clean: torch.Tensor  # (B, h, w)
    perturbed: torch.Tensor  # (B, h, w)
    objective: torch.Tensor  # (B,)
    method: str
    attack: str  # "pgd", "pgd-adam", "transfer-pgd", "two-step" or "random"
    eps: float
    settings: dict[str, Any] = field(default_factory=dict)


# --- the constraint set -----------------------------------------------------------------------
def check_eps(eps: Any) -> float:
    """eps as a float, or ConfigError("eps") for a negative, infinite or non-numeric value."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
        raise ConfigError("eps", f"{eps!r} must be a number >= 0 (the perturbation norm relative to the k-space norm)")
    return float(eps)


def project(z: torch.Tensor, reference: torch.Tensor, eps: float, mask: torch.Tensor) -> torch.Tensor:
    """The projection of z (B, C, H, W) onto {z = 0 off the mask, ||z|| <= eps ||reference||}, the
    budget holding exactly (see `fit_to_ball`)."""
    eps = check_eps(eps)
    mask = check_mask(mask, z.shape).to(z.device)
    return fit_to_ball(z, z, reference, eps, mask)


def _gaussian_direction(kspace: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A unit-norm complex Gaussian on the sampled locations, per slice."""
    noise = torch.randn(kspace.shape, generator=generator, device=kspace.device, dtype=kspace.dtype)
    return unit(noise * mask)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def random_perturbation(
    kspace: torch.Tensor, mask: torch.Tensor, eps: float, *, seed: int, reference: torch.Tensor | None = None
) -> torch.Tensor:
    """Complex Gaussian z on the sampled locations with ||z|| = eps ||reference|| exactly, per slice."""
    eps = check_eps(eps)
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    direction = _gaussian_direction(kspace, mask, _generator(kspace.device, seed))
    return fit_to_ball(direction, kspace, reference, eps, mask, sphere=True)


# --- scoring ----------------------------------------------------------------------------------
def _label(method: Any) -> str:
    return getattr(method, "name", "") or type(method).__name__


def apply_perturbation(
    method: Any, kspace: torch.Tensor, mask: torch.Tensor, perturbation: torch.Tensor, eps: float, *,
    attack: str = "given", clean: torch.Tensor | None = None, scope: Scope = Scope(), **meta: Any,
) -> AttackResult:
    """Score a given perturbation on `method` (also one found for another method: the transfer matrix).

    `clean` reuses an already computed f(y); the objective is the scope's, over its crop.
    """
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    with torch.no_grad():
        clean = checked_reconstruct(method, kspace, mask, **meta) if clean is None else clean
        perturbed = checked_reconstruct(method, kspace + perturbation, mask, **meta)
        objective = attack_objective(clean, perturbed, scope)
    return AttackResult(perturbation.detach(), clean.detach(), perturbed.detach(), objective, _label(method), attack,
                        check_eps(eps), scope.describe())


def random_attack(method: Any, kspace: torch.Tensor, mask: torch.Tensor, eps: float, scope: Scope = Scope(),
                  **meta: Any) -> AttackResult:
    """The baseline: a Gaussian perturbation of the attack's norm, scored on `method`."""
    z = random_perturbation(kspace, mask, eps, seed=scope.seed, reference=scope.reference)
    return apply_perturbation(method, kspace, mask, z, eps, attack="random", scope=scope, **meta)


# --- attacks ----------------------------------------------------------------------------------
def _traits(method: Any) -> str:
    return (f"family={getattr(method, 'family', '?')!r}, differentiable={getattr(method, 'differentiable', False)}, "
            f"optimisation_based={getattr(method, 'optimisation_based', False)}")


def _positive_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, f"{value!r} must be an integer >= {minimum}")
    return value


def pgd(method: Any, kspace: torch.Tensor, mask: torch.Tensor, eps: float, settings: PgdSettings = PgdSettings(),
        scope: Scope = Scope(), **meta: Any) -> AttackResult:
    """Projected gradient ascent on the scope's objective (by default 1/2 ||f(y) - f(y + z)||^2,
    eq. 2) over the ball, per slice.

    `optimizer="l2"`: steps z <- P(z + step_size g / ||g||), step_size (absolute, k-space units)
    by default the radius eps ||ref||: measured on the tests' methods, one-radius steps reach 99.7%
    of a linear method's exact optimum in 40 steps and +5..46% higher objectives than the shrinking
    2.5 eps ||ref|| / steps rule (which plateaus at 94% of it). `optimizer="adam"` is the authors' variant: Adam ascent on
    z with projection after every step, each slice stopping (frozen) after more than 100
    projections or once ||z|| / ||ref|| grew by less than 0.01 over 200 steps; the authors ran up
    to thousands of steps from a tiny start. Here Adam works on u = z / (eps ||ref||), so
    `step_size` is its learning rate in units of the radius, by default 1 / sqrt(m) with m the
    number of real coordinates on the mask (a sign-like Adam step then is one radius long). Adam's
    per-coordinate steps do not follow the l2 geometry: on a linear method it stalls near 58% of
    the exact optimum, so "l2" is the default. Both start at a random point inside the ball (at zero the gradient of the objective
    vanishes), keep the best iterate and the best of `restarts` starts per slice.

    `scope.crop` (h, w): count only the centre region that is scored (the target's size). A method
    whose output covers the oversampled field of view (l1, CG-SENSE) otherwise lets the attack
    spend its budget on changes outside the scored image. `scope.objective="ssim"` or "both": aim
    at what SSIM sees; the MSE alone lets l1's attack put its change into the few border pixels
    SSIM's window barely covers (measured: all of it within 8 pixels of the edge).
    """
    eps = check_eps(eps)
    steps, step_size, restarts, optimizer = settings.steps, settings.step_size, settings.restarts, settings.optimizer
    seed, reference = scope.seed, scope.reference
    if not getattr(method, "differentiable", False):
        hint = "use the two-step attack (attack='two-step')" if getattr(method, "optimisation_based", False) \
            else "no attack applies"
        raise ConfigError("attack", f"PGD needs a differentiable method; {_label(method)!r} has {_traits(method)}: {hint}")
    if optimizer not in ("l2", "adam"):
        raise ConfigError("optimizer", f"choose 'l2' or 'adam', got {optimizer!r}")
    steps, restarts = _positive_int(steps, "steps", 0), _positive_int(restarts, "restarts", 1)
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    radius = ball_radius(kspace, reference, eps)
    scale = per_slice(radius, kspace.ndim)
    ones = torch.ones_like(radius)
    if optimizer == "l2":  # step length in units of the radius, per slice
        step = torch.ones_like(radius) if step_size is None \
            else step_size / radius.clamp_min(torch.finfo(radius.dtype).tiny)
    else:
        coordinates = 2 * float(mask.expand(kspace.shape)[0].sum())
        lr = 1 / math.sqrt(coordinates) if step_size is None else step_size
    with torch.no_grad():
        clean = checked_reconstruct(method, kspace, mask, **meta)
    generator = _generator(kspace.device, seed)
    best_obj = torch.full_like(radius, -math.inf)
    best_z, best_image = torch.zeros_like(kspace), torch.zeros_like(clean)
    for _ in range(restarts):
        start = torch.rand(radius.shape, generator=generator, device=kspace.device, dtype=radius.dtype)
        u = (_gaussian_direction(kspace, mask, generator) * per_slice(start, kspace.ndim)).requires_grad_()
        if optimizer == "adam":
            adam = torch.optim.Adam([u], lr=lr, maximize=True)
            active = torch.ones_like(radius, dtype=torch.bool)
            projections = torch.zeros_like(radius, dtype=torch.long)
            history: list[torch.Tensor] = []
        for it in range(steps + 1):
            with torch.enable_grad():
                image = checked_reconstruct(method, kspace + scale * u, mask, **meta)
                objective = attack_objective(clean, image, scope)
            with torch.no_grad():
                better = objective > best_obj
                best_obj = torch.where(better, objective, best_obj)
                best_z = torch.where(per_slice(better, 4), scale * u, best_z)
                best_image = torch.where(per_slice(better, 3), image, best_image)
            if it == steps:
                break
            (grad,) = torch.autograd.grad(objective.sum(), u)
            with torch.no_grad():
                grad = grad * mask
                if optimizer == "l2":
                    u.copy_(ball_step(u, grad, step, ones, mask))
                    continue
                previous = u.clone()
                u.grad = grad
                adam.step()
                projections += active & (norms(u * mask) > 1)
                u.copy_(torch.where(per_slice(active, 4), clip_to_ball(u, ones, mask), previous))
                active &= projections <= ADAM_MAX_PROJECTIONS
                history.append(eps * norms(u))
                if len(history) > ADAM_WINDOW:  # the norm ratio now vs ADAM_WINDOW steps ago
                    active &= history[-1] - history.pop(0) >= ADAM_MIN_CHANGE
    best_z = fit_to_ball(best_z.detach(), kspace, reference, eps, mask)  # moves z by a few float32 ulps at most
    return AttackResult(best_z, clean, best_image.detach(), best_obj.detach(), _label(method),
                        "pgd" if optimizer == "l2" else "pgd-adam", eps, {**asdict(settings), **scope.describe()})


def two_step(method: Any, kspace: torch.Tensor, mask: torch.Tensor, eps: float,
             settings: TwoStepSettings = TwoStepSettings(), scope: Scope = Scope(), **meta: Any) -> AttackResult:
    """The two-step attack for optimisation-based methods (appendix A.1, eq. 3).

    Step 1 optimises L(z, v) = L_method(v; y + z) - beta ||x(v) - x*||^2 / ||x*||^2 jointly for
    `steps` iterations: Adam descent (learning rate `lr`, the authors' ConvDecoder rate) on the
    method's variables v, which first take `clean_iters` Adam steps on the clean loss (giving x*),
    and projected normalised-gradient steps on z (length `lr_z` in units of the radius, default
    2.5 / steps) from a random start. Step 2 re-runs the method from scratch on y + z and scores it.

    `z_step`: "ascent" (default) moves z to increase L, pushing y + z away from what the method's
    current image explains; "descent" is the paper's text read literally (minimise L in z too: z
    makes y + z consistent with an image the penalty drives away from x*). On small synthetic tests
    descent is somewhat stronger for l1 and weaker than a random z for a tiny ConvDecoder, whose
    under-fitted output it then merely matches; ascent beats random z for both.

    Scale: the penalty is relative to ||x*||^2 so that beta is scale-free; both built-in losses are
    relative too (l1: its objective over ||y||^2; un-trained nets: the mean squared residual of
    k-space normalised to unit RMS), which makes beta = 1 for l1 the authors' value (there
    ||x*||^2 ~ ||y||^2). beta defaults to the authors' 1 (family "l1") and 0.05 ("untrained").
    The penalty is the scope's objective, relative, on its crop (the MSE term above by default).
    """
    eps = check_eps(eps)
    beta, steps, clean_iters, lr = settings.beta, settings.steps, settings.clean_iters, settings.lr
    lr_z, z_step, reference = settings.lr_z, settings.z_step, scope.reference
    if not (getattr(method, "optimisation_based", False) and isinstance(method, OptimisationAttackable)):
        raise ConfigError("attack", f"the two-step attack needs an optimisation-based method with attack_variables, "
                                    f"attack_image and attack_loss; {_label(method)!r} has {_traits(method)}")
    family = getattr(method, "family", "")
    if beta is None:
        if family not in BETA_DEFAULTS:
            raise ConfigError("beta", f"no default for family {family!r} of {_label(method)!r}; pass beta=")
        beta = BETA_DEFAULTS[family]
    steps, clean_iters = _positive_int(steps, "steps", 1), _positive_int(clean_iters, "clean_iters", 0)
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    radius = ball_radius(kspace, reference, eps)
    scale, ones = per_slice(radius, kspace.ndim), torch.ones_like(radius)
    step_z = PGD_STEP_SCALE / steps if lr_z is None else lr_z
    if z_step not in ("ascent", "descent"):
        raise ConfigError("z_step", f"choose 'ascent' or 'descent', got {z_step!r}")
    sign = 1.0 if z_step == "ascent" else -1.0
    generator = _generator(kspace.device, scope.seed)
    with torch.inference_mode(False), torch.enable_grad():
        variables = method.attack_variables(kspace, mask, **meta)
        adam = torch.optim.Adam([v for v in variables if v.requires_grad], lr=lr)
        for _ in range(clean_iters):
            adam.zero_grad(set_to_none=True)
            method.attack_loss(variables, kspace, mask).sum().backward()
            adam.step()
        x_star = method.attack_image(variables).detach()
        start = torch.rand(radius.shape, generator=generator, device=kspace.device, dtype=radius.dtype)
        u = (_gaussian_direction(kspace, mask, generator) * per_slice(start, kspace.ndim)).requires_grad_()
        for _ in range(steps):
            adam.zero_grad(set_to_none=True)
            u.grad = None
            penalty = attack_objective(x_star, method.attack_image(variables), scope, relative=True)
            loss = method.attack_loss(variables, kspace + scale * u, mask) - beta * penalty
            loss.sum().backward()  # slices share no variables: the sum keeps gradients per slice
            adam.step()
            with torch.no_grad():
                u.copy_(ball_step(u, u.grad, sign * step_z, ones, mask))
    z = fit_to_ball((scale * u).detach(), kspace, reference, eps, mask)
    result = apply_perturbation(method, kspace, mask, z, eps, attack="two-step", scope=scope, **meta)
    result.settings = {**asdict(settings), "beta": beta, "lr_z": step_z, **scope.describe()}
    return result


def transfer(method: Any, kspace: torch.Tensor, mask: torch.Tensor, eps: float,
             settings: PgdSettings = PgdSettings(), scope: Scope = Scope(), **meta: Any) -> AttackResult:
    """PGD on each differentiable method `method.attack_surrogates(kspace, mask, **meta)` returns
    (test-time training: its networks fine-tuned on this measurement and its base network), each
    perturbation scored on `method` itself, and per slice the one with the larger objective: a
    transfer attack, so a lower bound on the method's worst case (the white-box attack would
    differentiate through its per-slice optimisation). The method's clean image is computed once: a
    surrogate that `reproduces` it (TTT's fine-tuned networks) lends its own."""
    results: list[AttackResult] = []
    for surrogate in method.attack_surrogates(kspace, mask, **meta):
        found = pgd(surrogate, kspace, mask, eps, settings, scope, **meta)
        clean = found.clean if getattr(surrogate, "reproduces", False) else (results[0].clean if results else None)
        result = apply_perturbation(method, kspace, mask, found.perturbation, eps, attack="transfer-pgd",
                                    clean=clean, scope=scope, **meta)
        result.settings = {**found.settings, "surrogate": _label(surrogate)}
        results.append(result)
    return _strongest(results)


def _strongest(results: list[AttackResult]) -> AttackResult:
    """Per slice, the result with the largest objective; settings name each slice's surrogate."""
    best = torch.stack([r.objective for r in results]).argmax(dim=0)  # (B,)
    pick = lambda name: torch.stack([getattr(r, name) for r in results])[best, torch.arange(best.numel())]  # noqa: E731
    first = results[0]
    settings = {k: v for k, v in first.settings.items() if k != "surrogate"}
    settings["surrogate"] = [results[int(i)].settings["surrogate"] for i in best]
    return AttackResult(pick("perturbation"), first.clean, pick("perturbed"), pick("objective"), first.method,
                        first.attack, first.eps, settings)


def attack(method: Any, kspace: torch.Tensor, mask: torch.Tensor, eps: float,
           settings: Mapping[str, Any] | None = None, scope: Scope = Scope(), **meta: Any) -> AttackResult:
    """The attack a method's traits call for: PGD if differentiable (l1 too, through its unrolled
    fixed-iteration FISTA), else a transfer attack from its `attack_surrogates` where it names them
    (ttt: its fine-tuned and base networks), else the two-step attack if optimisation-based.
    `settings` are flat (`split_settings`): each attack takes its own keys and leaves the other's."""
    pgd_settings, two_step_settings = split_settings(settings or {})
    if getattr(method, "differentiable", False):
        return pgd(method, kspace, mask, eps, pgd_settings, scope, **meta)
    if callable(getattr(method, "attack_surrogates", None)):
        return transfer(method, kspace, mask, eps, pgd_settings, scope, **meta)
    if getattr(method, "optimisation_based", False):
        return two_step(method, kspace, mask, eps, two_step_settings, scope, **meta)
    raise ConfigError("attack", f"no attack applies to {_label(method)!r} ({_traits(method)}): it must be "
                                "differentiable (PGD) or optimisation-based (two-step)")


def worst_case_linear(
    apply: Callable[[torch.Tensor], torch.Tensor], kspace: torch.Tensor, mask: torch.Tensor, eps: float, *,
    iters: int = 50, seed: int = 0, reference: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The worst perturbation for a (real-)linear reconstruction `apply`, and its objective (B,).

    For linear f, 1/2 ||f(y) - f(y + z)||^2 = 1/2 ||J z||^2 is largest at eps ||ref|| times the top
    right singular vector of J restricted to the mask: power iteration on M J^T J M, where J^T J v
    is the gradient of 1/2 ||J v||^2 (one forward and one backward pass). `apply` must act on each
    batch element separately; its output may be complex (a complex image is treated as R^2).
    """
    eps = check_eps(eps)
    _positive_int(iters, "iters", 1)
    mask = check_mask(mask, kspace.shape).to(kspace.device)
    v = _gaussian_direction(kspace, mask, _generator(kspace.device, seed))
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(iters):
            v = v.detach().requires_grad_()
            out = apply(v)
            (grad,) = torch.autograd.grad(out, v, grad_outputs=out)
            v = unit(grad * mask)
    z = fit_to_ball(v.detach(), kspace, reference, eps, mask, sphere=True)
    with torch.no_grad():
        change = apply(kspace + z) - apply(kspace)
        objective = 0.5 * change.abs().square().flatten(1).sum(dim=1)
    return z, objective
