"""The embedded synthetic dataset: determinism, family statistics, contrasts, noise, file layout."""

import hashlib
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from mrirobust.data.fastmri import read_slice
from mrirobust.data.simulate import rss
from mrirobust.data.synthetic import (
    PRESETS,
    SynthConfig,
    generate_volume,
    render_volume,
    synthesize,
)
from mrirobust.errors import ConfigError
from mrirobust.physics.fft import center_crop, ifft2c

SMALL = dict(shape=(48, 48), slices_per_volume=3, num_coils=4)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_are_byte_identical_per_seed_and_differ_across_seeds(tmp_path):
    configs = [SynthConfig("knee", num_volumes=2, **SMALL), SynthConfig("brain", split="val", num_volumes=1, **SMALL)]
    first = synthesize(tmp_path / "a", configs)
    second = synthesize(tmp_path / "b", configs)
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    assert [p.name for p in first] == ["file_knee_000.h5", "file_knee_001.h5", "file_brain_000.h5"]
    assert [_digest(p) for p in first] == [_digest(p) for p in second]
    other = generate_volume(SynthConfig("knee", seed=1, **SMALL), 0)[0]
    assert not np.allclose(other, generate_volume(SynthConfig("knee", **SMALL), 0)[0])
    # volumes of one config are different patients
    assert not np.allclose(*(generate_volume(SynthConfig("knee", **SMALL), i)[1] for i in (0, 1)))


def test_files_read_back_with_metadata(tmp_path):
    config = SynthConfig("knee", acquisition="CORPDFS_FBK", split="test", seed=4, **SMALL)
    kspace, target, meta = generate_volume(config, 0)
    path = synthesize(tmp_path, SynthConfig(**{**config.__dict__, "num_volumes": 1}))[0]
    sample = read_slice(path, 2)
    np.testing.assert_array_equal(sample.kspace.numpy(), kspace[2])
    np.testing.assert_array_equal(sample.target.numpy(), target[2])
    assert sample.meta.acquisition == "CORPDFS_FBK" and sample.meta.anatomy == "knee"
    assert sample.meta.patient_id == meta["patient_id"] and sample.meta.max_value == pytest.approx(target.max())
    with h5py.File(path) as hf:
        assert hf.attrs["anatomy"] == "knee" and hf.attrs["snr_db"] == meta["snr_db"] == 25.0 - 5.0  # FS offset


def _mirror_correlation(images):
    return np.corrcoef(images.ravel(), images[..., ::-1].ravel())[0, 1]


def _spectral_slope(images):
    """Slope of log radial power against log frequency (natural and MR images: about -2 to -4)."""
    h, w = images.shape[-2:]
    centred = images - images.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fftshift(np.fft.fft2(centred), axes=(-2, -1))) ** 2
    radius = np.hypot(*np.mgrid[-(h // 2): h - h // 2, -(w // 2): w - w // 2]).astype(int)
    frequencies = np.arange(3, h // 2 - 2)
    profile = [power[..., radius == f].mean() for f in frequencies]
    return np.polyfit(np.log(frequencies), np.log(profile), 1)[0]


def test_family_statistics():
    stats = {}
    for anatomy in ("knee", "brain"):
        volumes = [render_volume(SynthConfig(anatomy, shape=(64, 64), slices_per_volume=4, seed=s), 0).numpy()
                   for s in range(4)]
        stats[anatomy] = np.array([(_mirror_correlation(v), _spectral_slope(v)) for v in volumes])
    knee, brain = stats["knee"], stats["brain"]
    assert np.median(brain[:, 0]) > max(0.7, np.median(knee[:, 0]) + 0.1)  # brain: near mirror-symmetric
    slopes = np.concatenate([knee[:, 1], brain[:, 1]])
    assert slopes.min() > -4.8 and slopes.max() < -2.0  # 1/f-like power spectra, no regular texture


def test_volumes_and_slices_vary():
    """Different patients differ, and a knee stack changes along the slices (not a repeated slice)."""
    config = SynthConfig("knee", shape=(64, 64), slices_per_volume=8)
    volumes = [render_volume(config, i).numpy() for i in range(3)]
    across = [np.corrcoef(volumes[i][4].ravel(), volumes[i + 1][4].ravel())[0, 1] for i in range(2)]
    first, last = volumes[0][0], volumes[0][-1]
    assert max(across) < 0.8 and np.corrcoef(first.ravel(), last.ravel())[0, 1] < 0.9


def test_slices_vary_smoothly_within_a_volume():
    v = render_volume(SynthConfig("brain", shape=(64, 64), slices_per_volume=6), 0).numpy()
    neighbours = [np.corrcoef(v[i].ravel(), v[i + 1].ravel())[0, 1] for i in range(5)]
    assert min(neighbours) > 0.8 and np.corrcoef(v[0].ravel(), v[5].ravel())[0, 1] < max(neighbours)
    assert all(not np.allclose(v[i], v[i + 1]) for i in range(5))


def test_acquisitions_change_contrast_as_intended():
    config = SynthConfig("knee", shape=(64, 64), slices_per_volume=2)
    pd, fs = (render_volume(config, 0, a).numpy() for a in ("CORPD_FBK", "CORPDFS_FBK"))
    fat = pd > np.quantile(pd, 0.8)  # the brightest PD pixels: fat and marrow
    assert fs[fat].mean() < 0.35 * pd[fat].mean()  # fat suppression darkens them
    config = SynthConfig("brain", shape=(64, 64), slices_per_volume=2)
    t2, flair, t1 = (render_volume(config, 0, a).numpy() for a in ("AXT2", "AXFLAIR", "AXT1"))
    csf = t2 > np.quantile(t2, 0.97)  # the brightest T2 pixels: CSF
    assert flair[csf].mean() < 0.45 * t2[csf].mean()  # FLAIR suppresses CSF (partial volume in these pixels)
    brain = (t2 > 0.2) & ~csf
    assert np.corrcoef(t1[brain], t2[brain])[0, 1] < 0  # T1 inverts grey/white contrast
    with pytest.raises(ConfigError):
        SynthConfig("brain", acquisition="CORPD_FBK")


@pytest.mark.parametrize("snr_db, acquisition, offset", [(15.0, "AXT2", 0.0), (30.0, "AXFLAIR", -4.0)])
def test_requested_snr(snr_db, acquisition, offset):
    config = SynthConfig("brain", acquisition=acquisition, snr_db=None, **SMALL)
    clean = generate_volume(config, 0)[0]
    noisy = generate_volume(replace(config, snr_db=snr_db), 0)[0]
    noise = (noisy - clean).reshape(3, -1)
    power = (np.abs(clean.reshape(3, -1)) ** 2).mean(1)  # = mean coil-image power (Parseval)
    measured = 10 * np.log10(power / (np.abs(noise) ** 2).mean(1))
    np.testing.assert_allclose(measured, snr_db + offset, atol=0.15)
    spread = [generate_volume(replace(config, snr_db=snr_db, snr_spread_db=4.0), i)[2]["snr_db"] for i in range(4)]
    assert all(abs(s - snr_db - offset) <= 4.0 for s in spread) and len(set(spread)) == 4


def test_oversampled_matrix_and_target_crop():
    config = SynthConfig("knee", shape=(40, 40), matrix=(40, 46), oversample=True, slices_per_volume=2, num_coils=5)
    kspace, target, _ = generate_volume(config, 0)
    assert kspace.shape == (2, 5, 80, 46) and target.shape == (2, 40, 40)
    full = rss(ifft2c(torch.from_numpy(kspace)))
    np.testing.assert_allclose(center_crop(full, (40, 40)).numpy(), target, rtol=1e-5, atol=1e-6)


def test_same_patient_at_two_resolutions():
    coarse, fine = (render_volume(SynthConfig("knee", shape=s, slices_per_volume=2), 0).numpy() for s in ((48, 48), (96, 96)))
    downsampled = fine.reshape(2, 48, 2, 48, 2).mean((2, 4))
    assert np.corrcoef(coarse.ravel(), downsampled.ravel())[0, 1] > 0.9


def test_presets_and_bad_configs(tmp_path):
    demo = PRESETS["demo"]
    assert {(c.anatomy, c.split, c.num_volumes) for c in demo} >= {("knee", "train", 32), ("brain", "test", 2)}
    assert all(c.num_coils == 8 and c.shape == (160, 160) for c in demo if c.folder is None)
    # the dataset shift's second knee "scanner": other patients, coils and SNR, the same image size
    scanner, = (c for c in demo if c.folder is not None)
    knee_test, = (c for c in demo if (c.anatomy, c.split, c.folder) == ("knee", "test", None))
    assert (scanner.anatomy, scanner.split, scanner.shape) == ("knee", "test", (160, 160))
    assert scanner.seed != knee_test.seed and scanner.num_coils < 8 and scanner.snr_db < knee_test.snr_db
    big = PRESETS["fastmri-size"][0]
    assert (big.num_coils, big.matrix, big.oversample, big.shape) == (15, (320, 368), True, (320, 320))
    with pytest.raises(ConfigError):
        synthesize(tmp_path, "no-such-preset")
    with pytest.raises(ConfigError):
        synthesize(tmp_path, [SynthConfig("knee", **SMALL), SynthConfig("knee", **SMALL)])
    first, second = synthesize(tmp_path, [SynthConfig("knee", num_volumes=1, **SMALL),
                                          SynthConfig("knee", num_volumes=1, folder="knee-b", **SMALL)])
    assert (first.parent.parent.name, second.parent.parent.name) == ("knee", "knee-b")
    assert second.relative_to(tmp_path / "knee-b") == first.relative_to(tmp_path / "knee")
    with pytest.raises(ConfigError):
        SynthConfig("knee", shape=(64, 64), matrix=(32, 64))
    with pytest.raises(ConfigError, match="detail"):
        SynthConfig("knee", detail=1.5)
