"""Birdcage coil maps against SigPy, and the smooth random phase."""

import numpy as np
import pytest
import sigpy.mri
import torch

from mrirobust.physics.coils import birdcage_maps, smooth_phase


@pytest.mark.parametrize("num_coils, shape", [(8, (64, 48)), (5, (33, 40)), (15, (80, 46))])
def test_birdcage_equals_sigpy(num_coils, shape):
    ours = birdcage_maps(num_coils, shape, radius=1.3, dtype=torch.complex128).numpy()
    np.testing.assert_allclose(ours, sigpy.mri.birdcage_maps((num_coils, *shape), r=1.3), atol=1e-12)


def test_birdcage_rings_equal_sigpy_4d():
    # SigPy's 4-D maps with one slice sit at z = -1 of the ring axis.
    ours = birdcage_maps(12, (32, 40), rings=2, z=-1.0, dtype=torch.complex128).numpy()
    np.testing.assert_allclose(ours, sigpy.mri.birdcage_maps((12, 1, 32, 40), nzz=6)[:, 0], atol=1e-12)


def test_birdcage_normalisation_and_falloff():
    maps = birdcage_maps(8, (40, 40))
    torch.testing.assert_close((maps.abs() ** 2).sum(0), torch.ones(40, 40), atol=1e-5, rtol=0)
    raw = birdcage_maps(8, (40, 40), normalize=False).abs()
    # coil 0 sits at x = +1.5, y = 0: its sensitivity falls from the right edge to the left edge
    assert raw[0, 20, -1] > 2 * raw[0, 20, 0]
    assert maps.dtype == torch.complex64 and maps.shape == (8, 40, 40)


def test_birdcage_rejects_bad_ring_split():
    with pytest.raises(ValueError):
        birdcage_maps(7, (8, 8), rings=2)


def test_smooth_phase_deterministic_and_smooth():
    a = smooth_phase((64, 48), generator=torch.Generator().manual_seed(3))
    b = smooth_phase((64, 48), generator=torch.Generator().manual_seed(3))
    c = smooth_phase((64, 48), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == (64, 48) and a.dtype == torch.float32
    # a low-order polynomial: neighbouring pixels differ by a small fraction of the phase range
    steps = torch.cat([a.diff(dim=0).abs().flatten(), a.diff(dim=1).abs().flatten()])
    assert steps.max() < 0.1 * (a.max() - a.min())
    # degree 0 is a constant
    flat = smooth_phase((8, 8), generator=torch.Generator().manual_seed(1), max_order=0)
    assert torch.allclose(flat, flat[0, 0].expand(8, 8))
