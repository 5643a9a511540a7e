"""Physical perturbations against analytic results, and the worst-case search by its guarantees."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from fastmri.data.subsample import EquiSpacedMaskFunc, RandomMaskFunc

from mrirobust.errors import ConfigError
from mrirobust.methods.baselines import ZeroFilled
from mrirobust.physics import perturbations as P
from mrirobust.physics.coils import birdcage_maps
from mrirobust.physics.fft import fft2c, ifft2c
from mrirobust.physics.masks import seed_from_filename
from mrirobust.physics.motion import rigid_motion_kspace
from mrirobust.physics.offresonance import off_resonance_kspace, readout_times
from mrirobust.robustness import worst_case as W

B, C, H, WIDTH = 2, 4, 32, 24


def phantom(height: int, width: int, batch: int = 1) -> torch.Tensor:
    """Smooth complex blobs (batch, H, W): band-limited enough for motion and B0 to be well posed."""
    y = torch.linspace(-1, 1, height)[:, None]
    x = torch.linspace(-1, 1, width)[None, :]
    images = [torch.exp(-((y - 0.2 * b) ** 2 / 0.2 + (x + 0.1) ** 2 / 0.3)) * torch.exp(1j * (x + y) * (1 + b))
              + 0.5 * torch.exp(-((y + 0.4) ** 2 + (x - 0.3) ** 2) / 0.05) for b in range(batch)]
    return torch.stack(images).to(torch.complex64)


def data(height: int = H, width: int = WIDTH, batch: int = B) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image, coil maps and k-space y = F S x that fits the maps exactly."""
    image = phantom(height, width, batch)
    maps = birdcage_maps(C, (height, width))[None].expand(batch, -1, -1, -1)
    return image, maps, fft2c(maps * image[:, None])


def bits(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t).view(torch.int32)


def all_specs(severity: float, seed: int = 3) -> list[P.Perturbation]:
    specs = [P.make(kind, severity, seed) for kind in P.KINDS]
    return specs + [P.make("coils", severity, seed, mode=mode) for mode in ("fewer", "gain", "phase")]


def test_integer_translation_with_one_shot_is_the_shifted_image():
    image, maps, kspace = data()
    everything = torch.ones(B, WIDTH, dtype=torch.long)  # every line in pose group 1: one shot
    moved = rigid_motion_kspace(kspace, maps, torch.tensor([[3.0, -2.0, 0.0]]), everything)
    expected = fft2c(maps * torch.roll(image, shifts=(3, -2), dims=(-2, -1))[:, None])
    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_ninety_degree_rotation_is_rot90():
    image, maps, kspace = data(28, 28)
    moved = rigid_motion_kspace(kspace, maps, torch.tensor([[0.0, 0.0, 90.0]]), torch.ones(B, 28, dtype=torch.long))
    expected = fft2c(maps * torch.rot90(image, 1, dims=(-2, -1))[:, None])
    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_motion_keeps_reference_lines_and_moves_the_others():
    image, maps, kspace = data()
    spec = P.RigidMotion(severity=1.0, seed=0, shots=4, events=1, ordering="sequential")
    moved = P.perturb(kspace, spec, maps=maps)
    changed = (moved != kspace).any(dim=(1, 2))  # (B, W) lines that differ
    start = 1 + min(int(P.draw_params(spec, kspace.shape)[0] * 3), 2)
    assert not changed[:, : start * WIDTH // 4].any() and changed[:, start * WIDTH // 4:].all()


def test_spikes_add_exactly_the_requested_energy():
    _, _, kspace = data()
    spec = P.Spikes(severity=0.6, seed=5, count=4)
    mask = torch.rand(WIDTH, generator=torch.Generator().manual_seed(0)) < 0.4
    change = P.perturb(kspace, spec, mask=mask) - kspace
    peak = kspace.abs().amax(dim=(-2, -1))
    requested = spec.count * (spec.severity * spec.max_intensity) ** 2 * peak.square().sum(dim=1)
    torch.testing.assert_close(change.abs().square().sum(dim=(1, 2, 3)), requested, rtol=1e-5, atol=0)
    assert (change.abs().sum(dim=(0, 1, 2))[~mask] == 0).all()  # spikes fall on measured lines only
    assert ((change != 0).sum(dim=(2, 3)) == spec.count).all()  # distinct locations, every coil


def test_noise_reaches_the_requested_snr():
    _, _, kspace = data(batch=1)
    mask = torch.arange(WIDTH) % 3 == 0
    for snr_db in (5.0, 20.0):
        noise_power = torch.stack([
            (P.perturb(kspace, P.noise_at_snr(snr_db, seed=s), mask=mask) - kspace)[..., mask].abs().square().mean()
            for s in range(40)]).mean()
        snr = kspace[..., mask].abs().square().mean() / noise_power
        assert abs(10 * math.log10(float(snr)) - snr_db) < 10 * math.log10(1.01)


def test_dropped_coils_are_zero_and_the_others_unchanged():
    _, _, kspace = data()
    spec = P.CoilFault(severity=1.0, seed=2, mode="drop")
    out = P.perturb(kspace, spec)
    zero = (out == 0).flatten(2).all(dim=2).all(dim=0)  # (C,) coils all zero
    assert int(zero.sum()) == math.ceil(spec.max_fraction * C)
    assert torch.equal(bits(out[:, ~zero]), bits(kspace[:, ~zero]))
    fewer = P.perturb(kspace, dataclasses.replace(spec, mode="fewer"))
    kept = spec.kept_coils(C)
    assert torch.equal(kept, torch.nonzero(~zero)[:, 0]) and torch.equal(fewer, kspace[:, kept])


@pytest.mark.parametrize("mask_kind, reference", [("random", RandomMaskFunc), ("equispaced", EquiSpacedMaskFunc)])
def test_sampling_shift_masks_equal_fastmri(mask_kind, reference):
    width = 368
    spec = P.SamplingShift(severity=0.5, seed=11, mask_kind=mask_kind, center_fraction=0.04)
    assert spec.acceleration == 8
    for seed in (11, seed_from_filename("file1000001.h5")):
        mask = P.perturb_mask(torch.ones(width, dtype=torch.bool), spec, shape=(640, width),
                              seed=None if seed == 11 else seed)
        expected, _ = reference([0.04], [8])((1, 640, width, 2), None, seed)
        assert torch.equal(mask, expected.flatten().bool())


def test_poisson_sampling_shift_reaches_its_acceleration():
    spec = P.SamplingShift(severity=0.25, seed=1, mask_kind="poisson")
    mask = P.perturb_mask(torch.ones(64, dtype=torch.bool), spec, shape=(80, 64))
    assert mask.shape == (80, 64) and abs(80 * 64 / mask.sum().item() - spec.acceleration) < 0.05 * spec.acceleration


@pytest.mark.parametrize("mask_kind", ["random", "equispaced", "poisson"])
def test_sampling_shift_never_samples_zero_padded_columns(mask_kind):
    spec = P.SamplingShift(severity=0.25, seed=2, mask_kind=mask_kind)
    free = P.perturb_mask(torch.ones(64, dtype=torch.bool), spec, shape=(80, 64))
    kept = P.perturb_mask(torch.ones(64, dtype=torch.bool), spec, shape=(80, 64), columns=(6, 57))
    assert free[..., :6].any() or free[..., 57:].any()  # the draw itself reaches the padding
    assert not kept[..., :6].any() and not kept[..., 57:].any()
    assert torch.equal(kept[..., 6:57], free[..., 6:57])


@pytest.mark.parametrize("spec", all_specs(0.0), ids=lambda s: f"{s.kind}-{getattr(s, 'mode', '')}")
def test_severity_zero_is_the_identity_bit_for_bit(spec):
    _, maps, kspace = data()
    mask = torch.ones(WIDTH, dtype=torch.bool)
    assert torch.equal(bits(P.perturb(kspace, spec, maps=maps, mask=mask)), bits(kspace))
    assert P.perturb_mask(mask, spec, shape=(H, WIDTH)) is mask


@pytest.mark.parametrize("spec", [s for s in all_specs(1e-6) if s.kind != "sampling" and getattr(s, "mode", "") not in
                                  ("drop", "fewer")], ids=lambda s: f"{s.kind}-{getattr(s, 'mode', '')}")
def test_tiny_severity_is_a_tiny_change(spec):
    """Severity is continuous at 0: the identity is not only a short cut."""
    _, maps, kspace = data()
    change = W.relative_change(kspace, spec, maps=maps)
    assert (change > 0).all() and (change < 1e-4).all()


@pytest.mark.parametrize("spec", all_specs(0.7), ids=lambda s: f"{s.kind}-{getattr(s, 'mode', '')}")
def test_deterministic_under_a_seed_and_batch_equals_per_slice(spec):
    _, maps, kspace = data()
    mask = torch.stack([torch.arange(WIDTH) % 2 == 0, torch.arange(WIDTH) % 3 != 1])[:, None, None, :]
    out = P.perturb(kspace, spec, maps=maps, mask=mask)
    assert torch.equal(out, P.perturb(kspace, spec, maps=maps, mask=mask))
    for i in range(B):
        single = P.perturb(kspace[i:i + 1], spec, maps=maps[i:i + 1], mask=mask[i:i + 1])
        assert torch.equal(out[i:i + 1], single)
    if spec.kind != "sampling":
        other = P.perturb(kspace, dataclasses.replace(spec, seed=spec.seed + 1), maps=maps, mask=mask)
        assert not torch.equal(out, other)


def test_line_phase_is_meddlrs_even_odd_model():
    _, _, kspace = data()
    spec = P.LinePhase(severity=0.8, seed=4)
    ratio = P.perturb(kspace, spec) / kspace
    theta = -torch.angle(ratio[0, 0, 0])
    odd, even = (math.pi * 0.8 * 0.5 * (2 * torch.tensor(P.draw_params(spec, kspace.shape)) - 1)).tolist()
    torch.testing.assert_close(theta[0::2], torch.full((WIDTH // 2,), even), rtol=0, atol=1e-5)
    torch.testing.assert_close(theta[1::2], torch.full((WIDTH // 2,), odd), rtol=0, atol=1e-5)
    torch.testing.assert_close(ratio.abs(), torch.ones_like(ratio.abs()), rtol=0, atol=1e-5)


def test_constant_b0_is_a_readout_phase_ramp():
    _, _, kspace = data()
    field = torch.full((H, WIDTH), 120.0)
    out = off_resonance_kspace(kspace, field, 0.008)
    ramp = torch.exp(-2j * math.pi * 120.0 * readout_times(H, 0.008)).to(torch.complex64)
    torch.testing.assert_close(out, kspace * ramp[:, None], rtol=0, atol=1e-5 * kspace.abs().max().item())


def test_b0_time_segmentation_matches_the_exact_signal():
    """Exact: readout sample h is row h of the 2-D FFT of coil images x exp(-2 pi i df t_h)."""
    _, _, kspace = data(16, 12, batch=1)
    spec = P.OffResonance(severity=1.0, params=(1.0,) * 10)  # every coefficient at its bound: |df| reaches max_hz
    field = spec.field_hz(torch.tensor(P.draw_params(spec, kspace.shape)), (16, 12))
    coil_images = ifft2c(kspace)
    times = readout_times(16, spec.readout_ms / 1000)
    exact = torch.stack([fft2c(coil_images * torch.exp(-2j * math.pi * field * t).to(torch.complex64))[..., h, :]
                         for h, t in enumerate(times)], dim=-2)
    out = P.perturb(kspace, spec)
    assert (out - exact).norm() < 2e-5 * (exact - kspace).norm()
    assert float(field.abs().max()) == pytest.approx(spec.max_hz)


def test_bad_settings_and_missing_maps_are_config_errors():
    with pytest.raises(ConfigError, match="motion.shots"):
        P.make("motion", 0.5, shots=1)
    with pytest.raises(ConfigError, match="unknown settings"):
        P.make("noise", 0.5, sigma=3)
    with pytest.raises(ConfigError, match="severity"):
        P.Noise(severity=-1)
    with pytest.raises(ConfigError, match="motion.shots: '50' must be of type int"):
        P.RigidMotion(shots="50")
    with pytest.raises(ConfigError, match="needs coil maps"):
        P.perturb(data()[2], P.RigidMotion(severity=0.5))


def small_case() -> W.Case:
    image, maps, kspace = data()
    mask = torch.arange(WIDTH) % 2 == 0
    mask[WIDTH // 2 - 2: WIDTH // 2 + 2] = True
    return W.Case(kspace, mask, image.abs()[:, 4:-4, 2:-2], maps=maps)


def test_worst_case_is_at_least_as_bad_as_every_swept_point():
    case, method = small_case(), ZeroFilled()
    spec = P.RigidMotion(severity=0.5, seed=10, shots=6, events=2)
    swept = [float(W.perturbed_scores(method, case, dataclasses.replace(spec, seed=spec.seed + i))
                   ["ssim[fastmri,volume-max]"].mean()) for i in range(4)]
    found = W.worst_case(method, case, spec, W.Search(trials=4, refine=6))
    assert found.score <= min(swept) and found.spec.params is not None and len(found.evaluated) == 10
    again = float(W.perturbed_scores(method, case, found.spec)["ssim[fastmri,volume-max]"].mean())
    assert again == pytest.approx(found.score, abs=1e-6)
    assert found.score == min(value for _, value in found.evaluated)  # the worst of everything it tried
    explicit = W.worst_case(method, case, found.spec, W.Search(trials=3, refine=0))
    assert explicit.evaluated[0][0] == found.spec and explicit.score <= found.score  # given params are tried first


def test_matched_l2_attack_is_at_least_as_strong_as_the_perturbation():
    """On a linear method the attack's optimum over the ball beats any one point of it, the
    perturbation's own change included (PGD reaches 99.7% of that optimum, tests/test_attacks.py)."""
    case = small_case()
    spec = P.RigidMotion(severity=0.3, seed=1, shots=6, events=2)
    matched = W.matched_attack(ZeroFilled(), case, spec, steps=20)
    torch.testing.assert_close(matched.eps, W.relative_change(case.kspace, spec, maps=case.maps, mask=case.mask))
    assert (matched.eps > 0).all() and (matched.attack_objective >= matched.perturbation_objective).all()
    assert matched.scores["ssim[fastmri,volume-max]"].shape == (B,)
    with pytest.raises(ConfigError, match="sampling shift"):
        W.matched_attack(ZeroFilled(), case, P.SamplingShift(severity=0.5))


def test_relative_change_of_dropped_coils_is_their_energy_share():
    _, _, kspace = data()
    spec = P.CoilFault(severity=0.5, seed=1, mode="fewer")
    kept = spec.kept_coils(C)
    dropped = torch.ones(C, dtype=torch.bool)
    dropped[kept] = False
    energy = kspace.abs().square().sum(dim=(2, 3))
    expected = torch.sqrt(energy[:, dropped].sum(dim=1) / energy.sum(dim=1))
    torch.testing.assert_close(W.relative_change(kspace, spec), expected)


def test_more_samples_worse_reports_where_quality_drops():
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(30, generator=generator, dtype=torch.float64)
    scores = {2.0: base + 0.10, 4.0: base + 0.05, 8.0: base}  # quality falls as acceleration rises
    assert W.more_samples_worse(scores) == []
    scores[2.0] = base + 0.02  # fewer samples' result beats more samples'
    (drop,) = W.more_samples_worse(scores)
    assert (drop.lower, drop.higher, drop.verdict, drop.n) == (2.0, 4.0, "drop", 30)
    assert drop.difference == pytest.approx(-0.03) and drop.ci[1] < 0
    assert W.more_samples_worse({2.0: [0.5, 0.1, 0.9], 4.0: [0.4, 0.3, 0.9]})[0].verdict == "inconclusive"
    nmse = W.more_samples_worse({2.0: base + 0.1, 4.0: base}, metric="nmse")  # higher nmse at 2x is worse
    assert [d.verdict for d in nmse] == ["drop"]


def test_acceleration_sweep_scores_every_acceleration():
    case = small_case()
    results = W.acceleration_sweep(ZeroFilled(), case, W.AccelerationSweep(accelerations=(2, 4), center_fraction=0.1))
    ssim = {a: r["ssim[fastmri,volume-max]"] for a, r in results.items()}
    assert set(ssim) == {2.0, 4.0} and all(v.shape == (B,) for v in ssim.values())
    assert (ssim[2.0] > ssim[4.0]).all()  # zero-filled on a smooth phantom gains from more columns
