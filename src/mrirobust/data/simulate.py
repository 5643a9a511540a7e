"""Multi-coil k-space from magnitude images: the forward model the whole project measures with.

y_i = F S_i x + n_i, with x = magnitude * exp(i * smooth random phase), S_i birdcage coil
sensitivities, F the centred orthonormal FFT and n_i white complex Gaussian noise. The target is
built the way fastMRI builds `reconstruction_rss`: the root-sum-of-squares of the fully sampled
(noisy) coil images, centre-cropped to the image size.
"""

from __future__ import annotations

import torch

from mrirobust.errors import ShapeError
from mrirobust.physics.coils import birdcage_maps, normalize_maps, smooth_phase
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import center_crop, fft2c, ifft2c


def simulate_kspace(
    image: torch.Tensor,
    *,
    num_coils: int,
    seed: int,
    snr_db: float | None = None,
    oversample: bool = False,
    maps: torch.Tensor | None = None,
    shading: bool = True,
    coil_radius: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Simulate fully sampled multi-coil k-space from real magnitude image(s) (H, W) or (B, H, W).

    Returns (kspace (C, H', W') complex64, target (H, W) float32, maps (C, H', W') complex64),
    with a leading batch axis on k-space and target for batched input (the maps are shared).
    `oversample=True` embeds the image in a field of view twice as long along H (fastMRI's 2x
    readout oversampling), so H' = 2H; otherwise H' = H, W' = W.

    Coil images are S_i x with the given `maps`, or, if None, un-normalised birdcage maps of
    coils on a circle of relative radius `coil_radius` (scaled to a mean sum_i |S_i|^2 of 1 over
    the image), so the target shows coil shading as fastMRI's RSS images do; `shading=False`
    normalises them (sum_i |S_i|^2 = 1), for images that already carry shading. The birdcage is
    laid out over the 2x readout field of view with or without `oversample`, so the image's
    corners never sit next to a coil (their shading would set the target's maximum). The
    returned maps are normalised: with them, F S x_eff reproduces the noise-free k-space for
    x_eff = the noise-free RSS times the phase.

    SNR: snr_db = 10 log10(P / sigma^2), P the mean of |S_i x|^2 over all coils and the H x W
    image pixels (per image), sigma^2 = E|n|^2 of one complex k-space sample, which is also the
    noise variance of one coil-image pixel because the FFT is orthonormal. None: no noise.
    The phase is drawn before the noise, so the same seed gives the same noise-free data at any SNR.
    """
    if image.ndim not in (2, 3) or image.is_complex():
        raise ShapeError(f"expected a real (H, W) or (B, H, W) image, got {tuple(image.shape)} {image.dtype}")
    batched = image.ndim == 3
    images = (image if batched else image[None]).to(torch.float32)
    height, width = images.shape[-2:]
    full = (2 * height if oversample else height, width)
    device = images.device
    generator = torch.Generator(device=device).manual_seed(seed)

    phases = torch.stack([smooth_phase((height, width), generator=generator) for _ in range(images.shape[0])])
    x = torch.polar(images, phases)
    if oversample:
        top = height // 2  # where fastMRI's center_crop takes the H rows back out of 2H
        x = torch.nn.functional.pad(x, (0, 0, top, full[0] - height - top))

    if maps is None:
        maps = center_crop(birdcage_maps(num_coils, (2 * height, width), radius=coil_radius, normalize=not shading,
                                         device=device), full)
        power = (center_crop(maps, (height, width)).abs() ** 2).sum(0).mean()
        maps = maps / torch.sqrt(power)
    elif tuple(maps.shape) != (num_coils, *full):
        raise ShapeError(f"maps of shape {tuple(maps.shape)} do not match {(num_coils, *full)}")
    coil_images = maps.to(device=device, dtype=torch.complex64) * x[:, None]
    kspace = fft2c(coil_images)

    if snr_db is not None:
        power = (center_crop(coil_images, (height, width)).abs() ** 2).mean(dim=(-3, -2, -1))
        sigma = torch.sqrt(power / 10 ** (snr_db / 10))
        noise = torch.randn(kspace.shape, generator=generator, device=device, dtype=torch.complex64)
        kspace = kspace + sigma[:, None, None, None] * noise  # complex randn has E|n|^2 = 1

    target = center_crop(rss(ifft2c(kspace)), (height, width))
    maps = normalize_maps(maps.to(torch.complex64))
    return (kspace, target, maps) if batched else (kspace[0], target[0], maps)
