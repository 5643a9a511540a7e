"""Metrics against scikit-image / fastMRI's evaluate, and statistics against scipy and analytic results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastmri import evaluate as fm_eval
from scipy import stats

from mrirobust import metrics
from mrirobust.errors import ConfigError, ShapeError


def smooth_pair(rng: np.random.Generator, shape: tuple[int, int, int], scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A volume of smooth positive images and a noisy, slightly shifted reconstruction of it."""
    s, h, w = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    freqs = rng.uniform(1, 6, size=(s, 2, 1, 1))
    target = 1.5 + np.sin(2 * np.pi * freqs[:, 0] * yy) * np.cos(2 * np.pi * freqs[:, 1] * xx)
    target = target + 0.8 * np.exp(-((yy - 0.5) ** 2 + (xx - 0.4) ** 2) / 0.02)
    recon = 0.95 * target + 0.15 * rng.standard_normal(target.shape)
    return (scale * target).astype(np.float32), (scale * np.abs(recon)).astype(np.float32)


def random_pair(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    target = rng.random(shape).astype(np.float32)
    return target, (target + 0.3 * rng.standard_normal(shape)).astype(np.float32)


CASES = [
    ("smooth", (3, 320, 320), 1.0),
    ("smooth", (2, 37, 51), 3e-4),  # odd sizes, fastMRI-like magnitudes
    ("smooth", (4, 7, 7), 1.0),  # smallest image the 7x7 window allows
    ("random", (3, 64, 48), 1.0),
    ("random", (1, 33, 65), 1.0),
]


def make_case(kind: str, shape: tuple[int, int, int], scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return smooth_pair(rng, shape, scale) if kind == "smooth" else random_pair(rng, shape)


@pytest.mark.parametrize("kind,shape,scale", CASES)
def test_ssim_matches_skimage_and_fastmri_volume_max(kind, shape, scale):
    target, recon = make_case(kind, shape, scale)
    ours = metrics.ssim(torch.from_numpy(target), torch.from_numpy(recon), float(target.max()))
    assert ours.dtype == torch.float32 and ours.shape == (shape[0],)
    per_slice_ref = metrics.ssim_skimage(target.astype(np.float64), recon.astype(np.float64))
    np.testing.assert_allclose(ours.numpy(), per_slice_ref, atol=1e-4, rtol=0)
    # fastMRI's evaluate.ssim averages the per-slice values over the volume with data_range = gt.max().
    fastmri_ref = fm_eval.ssim(target.astype(np.float64), recon.astype(np.float64)).item()
    assert abs(ours.mean().item() - fastmri_ref) < 1e-4


def test_ssim_slice_max_option_matches_skimage():
    target, recon = make_case("smooth", (3, 40, 30), 1.0)
    target *= np.array([1.0, 0.3, 2.0], dtype=np.float32)[:, None, None]  # slices with different maxima
    slice_max = target.max(axis=(1, 2))
    ref = metrics.ssim_skimage(target, recon, data_range=slice_max)
    t, r = torch.from_numpy(target), torch.from_numpy(recon)
    np.testing.assert_allclose(metrics.ssim(t, r, torch.from_numpy(slice_max)).numpy(), ref, atol=1e-4, rtol=0)
    out = metrics.score(t, r, None, ssim_variant=metrics.SLICE_MAX)
    np.testing.assert_allclose(out["ssim[fastmri,slice-max]"].numpy(), ref, atol=1e-4, rtol=0)
    # The two variants really differ here, which is why outputs are named.
    volume = metrics.score(t, r, None)["ssim[fastmri,volume-max]"]
    assert (volume - out["ssim[fastmri,slice-max]"]).abs().max() > 1e-3


def test_ssim_identical_images_is_one_and_float64_is_exact():
    target, recon = make_case("smooth", (2, 20, 24), 1.0)
    t64, r64 = torch.from_numpy(target).double(), torch.from_numpy(recon).double()
    torch.testing.assert_close(metrics.ssim(t64, t64, 2.0), torch.ones(2, dtype=torch.float64))
    ref = metrics.ssim_skimage(target.astype(np.float64), recon.astype(np.float64), data_range=2.0)
    np.testing.assert_allclose(metrics.ssim(t64, r64, 2.0).numpy(), ref, atol=1e-12, rtol=0)


def test_ssim_gradcheck():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 9, 8, dtype=torch.float64, generator=gen)
    recon = (target + 0.2 * torch.rand(2, 9, 8, dtype=torch.float64, generator=gen)).requires_grad_()
    assert torch.autograd.gradcheck(lambda r: metrics.ssim(target, r, torch.tensor([1.0, 1.2], dtype=torch.float64)),
                                    (recon,))
    metrics.ssim(target, recon, 1.0).sum().backward()
    assert recon.grad is not None and torch.isfinite(recon.grad).all() and recon.grad.abs().sum() > 0


def test_psnr_nmse_mse_match_fastmri():
    target, recon = make_case("smooth", (3, 32, 40), 2e-4)
    t, r = torch.from_numpy(target), torch.from_numpy(recon)
    maxval = float(target.max())
    t64, r64 = target.astype(np.float64), recon.astype(np.float64)
    np.testing.assert_allclose(
        metrics.psnr(t, r, maxval).numpy(), [fm_eval.psnr(a, b, maxval) for a, b in zip(t64, r64)], rtol=1e-5
    )
    np.testing.assert_allclose(metrics.nmse(t, r).numpy(), [fm_eval.nmse(a, b) for a, b in zip(t64, r64)], rtol=1e-5)
    np.testing.assert_allclose(metrics.mse(t, r).numpy(), [fm_eval.mse(a, b) for a, b in zip(t64, r64)], rtol=1e-5)


def test_score_names_variants_and_uses_max_value():
    target, recon = make_case("smooth", (2, 24, 24), 1.0)
    t, r = torch.from_numpy(target), torch.from_numpy(recon)
    out = metrics.score(t, r, 5.0)
    assert set(out) == {"ssim[fastmri,volume-max]", "psnr[volume-max]", "nmse", "mse"}
    np.testing.assert_allclose(out["ssim[fastmri,volume-max]"].numpy(),
                               metrics.ssim_skimage(target, recon, data_range=5.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["psnr[volume-max]"], metrics.psnr(t, r, 5.0))
    assert all(v.shape == (2,) for v in out.values())
    with pytest.raises(ConfigError, match="ssim_variant"):
        metrics.score(t, r, 5.0, ssim_variant="gaussian")


def test_region_mse_matches_numpy_slices():
    rng = np.random.default_rng(1)
    target, recon = rng.random((3, 20, 30)), rng.random((3, 20, 30))
    boxes = np.array([[0, 0, 5, 7], [12, 21, 8, 9], [3, 4, 1, 1]])  # (top, left, height, width)
    expected = [np.mean((target[i, t:t + h, l:l + w] - recon[i, t:t + h, l:l + w]) ** 2)
                for i, (t, l, h, w) in enumerate(boxes)]
    tt, rr = torch.from_numpy(target), torch.from_numpy(recon)
    np.testing.assert_allclose(metrics.region_mse(tt, rr, torch.from_numpy(boxes)).numpy(), expected, rtol=1e-12)
    # K boxes of one image, and one box over a batch.
    np.testing.assert_allclose(metrics.region_mse(tt[1], rr[1], boxes).numpy(),
                               [np.mean((target[1, t:t + h, l:l + w] - recon[1, t:t + h, l:l + w]) ** 2)
                                for t, l, h, w in boxes], rtol=1e-12)
    np.testing.assert_allclose(metrics.region_mse(tt, rr, (2, 3, 4, 5)).numpy(),
                               np.mean((target[:, 2:6, 3:8] - recon[:, 2:6, 3:8]) ** 2, axis=(1, 2)), rtol=1e-12)


@pytest.mark.parametrize("box", [(15, 0, 6, 3), (0, -1, 2, 2), (0, 0, 0, 4)])
def test_region_mse_rejects_bad_boxes(box):
    img = torch.zeros(2, 20, 30)
    with pytest.raises(ShapeError, match="box"):
        metrics.region_mse(img, img, box)


@pytest.mark.parametrize(
    "fn", [lambda a, b: metrics.ssim(a, b, 1.0), lambda a, b: metrics.psnr(a, b, 1.0), metrics.nmse,
           metrics.mse, lambda a, b: metrics.score(a, b, 1.0), lambda a, b: metrics.region_mse(a, b, (0, 0, 2, 2))]
)
def test_shape_mismatch_raises_shape_error(fn):
    with pytest.raises(ShapeError, match="does not match|equal shape"):
        fn(torch.zeros(2, 16, 16), torch.zeros(2, 16, 15))


def test_other_invalid_inputs_raise_shape_error():
    with pytest.raises(ShapeError, match="at least 7x7"):
        metrics.ssim(torch.zeros(1, 6, 10), torch.zeros(1, 6, 10), 1.0)
    with pytest.raises(ShapeError, match=r"\(batch, H, W\)"):
        metrics.ssim(torch.zeros(16, 16), torch.zeros(16, 16), 1.0)
    with pytest.raises(ShapeError, match="data_range"):
        metrics.ssim(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), torch.ones(3))
    with pytest.raises(ShapeError, match="does not match"):
        metrics.ssim_skimage(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


def test_linear_fit_matches_linregress_and_t_intervals():
    rng = np.random.default_rng(2)
    x = rng.uniform(0.5, 1.0, 40)
    y = 0.3 - 0.7 * x + 0.05 * rng.standard_normal(40)
    fit = metrics.linear_fit(x, y)
    ref = stats.linregress(x, y)
    np.testing.assert_allclose([fit.slope, fit.intercept, fit.slope_stderr, fit.intercept_stderr, fit.r_squared],
                               [ref.slope, ref.intercept, ref.stderr, ref.intercept_stderr, ref.rvalue**2],
                               rtol=1e-10)
    t = stats.t.ppf(0.975, 38)
    np.testing.assert_allclose(fit.slope_ci, (ref.slope - t * ref.stderr, ref.slope + t * ref.stderr), rtol=1e-10)
    # The band's half-width at x_mean is t * s / sqrt(n), and it equals the intercept CI at x = 0.
    y_hat, low, high = fit.band(np.array([fit.x_mean, 0.0]))
    np.testing.assert_allclose(high[0] - y_hat[0], t * fit.residual_std / np.sqrt(40), rtol=1e-10)
    np.testing.assert_allclose((low[1], high[1]), fit.intercept_ci, rtol=1e-10)


def test_linear_fit_analytic_case():
    # y = 2x + 1 with residuals (+1, -1, -1, +1) orthogonal to (1, x): SSE = 4, Sxx = 5, s^2 = 2.
    x = np.array([0.0, 1.0, 2.0, 3.0])
    y = 2 * x + 1 + np.array([1.0, -1.0, -1.0, 1.0])
    fit = metrics.linear_fit(x, y, confidence=0.9)
    assert fit.slope == pytest.approx(2.0) and fit.intercept == pytest.approx(1.0)
    assert fit.slope_stderr == pytest.approx(np.sqrt(2 / 5))
    assert fit.intercept_stderr == pytest.approx(np.sqrt(2 * (1 / 4 + 1.5**2 / 5)))
    assert fit.r_squared == pytest.approx(1 - 4 / (4 * 5 + 4))  # Syy = 4 Sxx + SSE
    t = stats.t.ppf(0.95, 2)
    assert fit.slope_ci == pytest.approx((2 - t * np.sqrt(0.4), 2 + t * np.sqrt(0.4)))
    with pytest.raises(ShapeError, match="distinct"):
        metrics.linear_fit([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ShapeError, match="x has 3"):
        metrics.linear_fit([1.0, 2.0, 3.0], [1.0, 2.0])


def test_bootstrap_ci_deterministic_and_close_to_scipy():
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 0.1, size=60)
    mean, low, high = metrics.bootstrap_ci(values, n_resamples=20000, seed=5)
    assert (mean, low, high) == metrics.bootstrap_ci(values, n_resamples=20000, seed=5)
    assert metrics.bootstrap_ci(values, seed=6) != metrics.bootstrap_ci(values, seed=7)
    assert mean == pytest.approx(values.mean()) and low < mean < high
    ref = stats.bootstrap((values,), np.mean, confidence_level=0.95, method="percentile", n_resamples=20000,
                          random_state=np.random.default_rng(0)).confidence_interval
    width = ref.high - ref.low
    assert abs(low - ref.low) < 0.05 * width and abs(high - ref.high) < 0.05 * width
    with pytest.raises(ConfigError, match="confidence"):
        metrics.bootstrap_ci(values, confidence=95)
    with pytest.raises(ShapeError, match="at least 2"):
        metrics.bootstrap_ci([1.0])


def test_mean_ci_is_the_bootstrap_from_two_values_and_claims_no_interval_below():
    values = [0.7, 0.9, 0.8]
    assert metrics.mean_ci(values, seed=3) == metrics.bootstrap_ci(values, seed=3)
    one = metrics.mean_ci([0.25])
    assert one[0] == 0.25 and np.isnan(one[1:]).all()
    assert np.isnan(metrics.mean_ci([])).all()


def test_bootstrap_ci_coverage_near_nominal():
    rng = np.random.default_rng(4)
    true_mean, trials = 1.0, 200
    covered = 0
    for trial in range(trials):
        sample = rng.normal(true_mean, 0.5, size=50)
        _, low, high = metrics.bootstrap_ci(sample, n_resamples=1000, seed=trial)
        covered += low <= true_mean <= high
    assert 0.88 <= covered / trials <= 0.99
