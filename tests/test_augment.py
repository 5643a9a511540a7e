"""Mirrored and transposed training slices: the transform commutes with the zero-filled pipeline's
centre crop (even and odd margins), k-space padding columns are mirrored exactly, a flip undoes
itself, and training with `augment` is seeded per (seed, epoch, slice) and off by default."""

from __future__ import annotations

import pytest
import torch

from mrirobust.data.augment import transformed
from mrirobust.data.sample import Sample, SampleMeta
from mrirobust.errors import ConfigError
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import center_crop, ifft2c, pad_to
from mrirobust.workflows.train import _MaskedSlices, train
from tests.test_train import TINY, _weights, config, data, root  # noqa: F401 (fixtures)


def _sample(shape: tuple[int, int], crop: tuple[int, int], padding: tuple[int, int] | None = None) -> Sample:
    generator = torch.Generator().manual_seed(sum(shape) + sum(crop))
    kspace = torch.randn(3, *shape, dtype=torch.complex64, generator=generator)
    meta = SampleMeta(file="x.h5", slice=0)
    if padding is not None:
        kspace[..., : padding[0]] = 0
        kspace[..., padding[1]:] = 0
        meta = SampleMeta(file="x.h5", slice=0, padding_left=padding[0], padding_right=padding[1])
    target = center_crop(rss(ifft2c(kspace), dim=-3), crop)
    return Sample(kspace=kspace, meta=meta, target=target, maps=ifft2c(kspace) / 10)


@pytest.mark.parametrize("shape, crop", [((12, 8), (6, 8)), ((11, 9), (6, 4)), ((10, 7), (7, 6))])
@pytest.mark.parametrize("dims", [(-2,), (-1,), (-2, -1)])
def test_flipped_kspace_gives_the_flipped_cropped_image_and_target(shape, crop, dims):
    sample = _sample(shape, crop)
    mirrored = transformed(sample, dims)
    image = center_crop(rss(ifft2c(mirrored.kspace), dim=-3), crop)
    assert torch.allclose(image, torch.flip(sample.target, dims), atol=1e-5)
    assert torch.equal(mirrored.target, torch.flip(sample.target, dims))
    assert torch.allclose(center_crop(mirrored.maps, crop), torch.flip(center_crop(sample.maps, crop), dims))
    again = transformed(mirrored, dims)
    assert torch.allclose(again.kspace, sample.kspace, atol=1e-5) and torch.equal(again.target, sample.target)
    assert transformed(sample, ()) is sample


@pytest.mark.parametrize("shape, crop", [((12, 8), (6, 6)), ((11, 9), (5, 5)), ((10, 7), (7, 7))])
@pytest.mark.parametrize("dims", [(), (-2,), (-2, -1)])
def test_transposed_kspace_gives_the_transposed_cropped_image_and_target(shape, crop, dims):
    sample = _sample(shape, crop)
    moved = transformed(sample, dims, transpose=True)
    expected = torch.flip(sample.target.T, dims)
    assert torch.allclose(center_crop(rss(ifft2c(moved.kspace), dim=-3), crop), expected, atol=1e-5)
    assert torch.equal(moved.target, expected)
    outside = rss(ifft2c(moved.kspace), dim=-3) - pad_to(expected, shape)
    assert float(outside.abs().max()) < 1e-5  # the rest of the field of view is empty
    assert transformed(_sample(shape, crop, padding=(1, shape[1] - 1)), (), transpose=True).meta.padding_left is None


@pytest.mark.parametrize("width, left, right", [(16, 3, 12), (15, 2, 15), (16, 1, 16), (9, 0, 7)])
def test_left_right_flip_mirrors_the_padding_columns_exactly(width, left, right):
    mirrored = transformed(_sample((8, width), (4, 4), padding=(left, right)), (-1,))
    nonzero = mirrored.kspace.abs().amax(dim=(0, 1)) > 1e-4
    columns = torch.nonzero(nonzero).flatten()
    assert (int(columns.min()), int(columns.max()) + 1) == (mirrored.meta.padding_left, mirrored.meta.padding_right)
    assert int(nonzero.sum()) == right - left
    assert transformed(_sample((8, width), (4, 4), padding=(left, right)), (-2,)).meta.padding_left == left


def test_undersampled_samples_and_bad_dims_are_refused():
    sample = _sample((8, 8), (4, 4))
    with pytest.raises(ValueError, match="x.h5"):
        transformed(Sample(kspace=sample.kspace, meta=sample.meta, mask=torch.ones(8, dtype=torch.bool)), (-1,))
    with pytest.raises(ValueError, match="dims"):
        transformed(sample, (0,))
    with pytest.raises(ValueError, match="square"):
        transformed(_sample((8, 8), (4, 3)), (), transpose=True)


def test_augmented_training_slices_are_seeded_and_vary_by_epoch(data):  # noqa: F811
    train_set, _ = data
    augmented, plain = _MaskedSlices(train_set, range(6), config(augment="dihedral")), _MaskedSlices(train_set, range(6), config())
    seen = set()
    for epoch in range(4):
        augmented.epoch = plain.epoch = epoch
        for i in range(6):
            first, again, base = augmented[i], augmented[i], plain[i]
            assert torch.equal(first.kspace, again.kspace) and torch.equal(first.mask, base.mask)
            moves = [torch.flip(t, d) for t in (base.target, base.target.T) for d in ([], [-2], [-1], [-2, -1])]
            matches = tuple(torch.equal(first.target, t) for t in moves)
            assert any(matches)
            seen.add(matches)
    assert len(seen) >= 5  # the identity and several of the 7 other symmetries drawn


def test_augment_changes_training_and_is_off_by_default(data, tmp_path):  # noqa: F811
    train_set, _ = data
    assert config().augment == "none" and "augment" not in config().identity()
    assert config(augment="flips").identity()["augment"] == "flips"
    plain = _weights(train(TINY, train_set, None, tmp_path / "plain", config(epochs=1)).last)
    mirrored = _weights(train(TINY, train_set, None, tmp_path / "mirrored", config(epochs=1, augment="dihedral")).last)
    assert any(not torch.equal(plain[k], mirrored[k]) for k in plain)


def test_dihedral_augment_of_a_non_square_target_is_a_config_error_before_training(tmp_path):
    with pytest.raises(ConfigError, match="augment.*square"):
        train(TINY, [_sample((8, 8), (4, 3))], None, tmp_path / "run", config(augment="dihedral"))
    assert not (tmp_path / "run").exists()
