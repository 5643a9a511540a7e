"""Un-trained networks fitted per measurement: ConvDecoder and Deep Decoder.

A decoder G(w) maps a fixed random input (seeded) to 2*C channels, read as C complex coil images.
Fitting minimises the k-space data loss || M F G(w) - y ||^2 over the weights w with Adam (or
gradient descent with a linearly growing step, appendix C.1 of the paper), keeps the lowest-loss
iterate, replaces the sampled k-space entries of F G(w*) by y (data consistency) and returns the
RSS over coils.

Batching: B slices are fitted as one model whose weights carry a leading batch axis. Convolutions
run as grouped convolutions (B groups, slices stacked along channels), so BatchNorm statistics,
gradients and Adam's moments stay per slice, and every slice gets the same initial weights and input
(the seed): a slice's reconstruction does not depend on the batch it is fitted in.

Scale: y is divided per slice by s = ||M y|| / sqrt(C H W), so the zero-filled coil images have
unit RMS (the order of the initial network output), and the image is multiplied by s at the end.
The method is therefore scale-equivariant (bit for bit for power-of-two factors), and learning rates
mean the same for any data scale. Weights are float64 for complex128 k-space, else float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mrirobust.errors import ConfigError
from mrirobust.methods.base import Reconstructor, register, register_preset
from mrirobust.methods.settings import at_least, one_of
from mrirobust.physics.combine import rss
from mrirobust.physics.fft import fft2c, ifft2c

BN_EPS = 1e-5
INPUT_AMPLITUDE = 0.1  # the fixed input is U(0, 0.1), as in the authors' ConvDecoder


def upsample_sizes(input_size: tuple[int, int], output_size: tuple[int, int], layers: int) -> list[tuple[int, int]]:
    """Sizes after each of the `layers - 1` upsampling blocks: geometric from input to output."""
    steps = layers - 1
    growth = [(out / inp) ** (1 / steps) for inp, out in zip(input_size, output_size)]
    hidden = [tuple(math.ceil(g**n * inp) for g, inp in zip(growth, input_size)) for n in range(1, steps)]
    return hidden + [tuple(output_size)]


@dataclass
class FitState:
    """Everything a fit needs to continue: weights (leading batch axis), input, scale, optimiser.

    `best` holds the lowest-loss network output (normalised coil images) and `losses` the data loss
    of every evaluated iterate, shape (iterations + 1, B), both from the last `fit` call.
    """

    params: list[torch.Tensor]
    noise: torch.Tensor
    scale: torch.Tensor  # (B,) per-slice k-space scale s
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler | None
    best: torch.Tensor | None = None
    losses: torch.Tensor | None = None


@dataclass
class UntrainedDecoder(Reconstructor):
    """A decoder network fitted to each measurement; see the module docstring.

    Architecture: input (channels, *input_size) -> [upsample -> conv(kernel) -> ReLU -> BatchNorm]
    x (layers - 1) -> conv(kernel) -> ReLU -> BatchNorm -> conv1x1 to 2*C channels. The upsampled
    sizes grow geometrically to the k-space size. `optimizer`: "adam" (betas (beta1, 0.999)) or
    "gd-linear" (step lr * (1 + lr_growth * t) at iteration t; the default lr is Adam's, gradient
    descent wants a larger one, e.g. 0.5, as the loss is a mean over k-space entries).
    """

    layers: int = 8
    channels: int = 256
    input_size: tuple[int, int] = (10, 5)
    kernel: int = 3
    upsample: str = "nearest"
    iters: int = 25000
    optimizer: str = "adam"
    lr: float = 0.008
    beta1: float = 0.9
    lr_growth: float = 0.0
    seed: int = 0

    family = "untrained"
    optimisation_based = True

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        at_least(settings, 2, "layers")
        at_least(settings, 1, "channels", "kernel")
        if min(settings["input_size"]) < 1:
            raise ConfigError("input_size", f"{settings['input_size']!r} must be sizes >= 1")
        at_least(settings, 0, "iters", "lr", "lr_growth")
        one_of(settings, "optimizer", ("adam", "gd-linear"))
        one_of(settings, "upsample", ("nearest", "bilinear"))
        if settings["kernel"] % 2 != 1:
            raise ConfigError("kernel", f"must be odd, got {settings['kernel']}")

    # --- the network -------------------------------------------------------------------------
    def init(self, kspace: torch.Tensor, mask: torch.Tensor) -> FitState:
        """Seeded initial weights and input for every slice of k-space (B, C, H, W), plus the scale."""
        batch, coils = kspace.shape[:2]
        generator = torch.Generator().manual_seed(self.seed)

        def uniform(*shape: int, bound: float) -> torch.Tensor:  # PyTorch's default conv init
            return (torch.rand(shape, generator=generator) * 2 - 1) * bound

        ch, k = self.channels, self.kernel
        single: list[torch.Tensor] = []
        for _ in range(self.layers):
            single += [uniform(ch, ch, k, k, bound=1 / math.sqrt(ch * k * k)), torch.ones(ch), torch.zeros(ch)]
        single.append(uniform(2 * coils, ch, 1, 1, bound=1 / math.sqrt(ch)))
        noise = torch.rand((ch, *self.input_size), generator=generator) * INPUT_AMPLITUDE

        def stacked(t: torch.Tensor) -> torch.Tensor:  # float64 weights for complex128 k-space
            return t.to(device=kspace.device, dtype=kspace.real.dtype).expand(batch, *t.shape).clone()

        params = [stacked(p).requires_grad_() for p in single]
        if self.optimizer == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, 0.999))
            schedule = None
        else:
            optimizer = torch.optim.SGD(params, lr=self.lr)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 + self.lr_growth * t)
        y = kspace * mask
        scale = torch.linalg.vector_norm(y, dim=(1, 2, 3)) / math.sqrt(y[0].numel())
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return FitState(params, stacked(noise), scale, optimizer, schedule)

    def decode(self, params: list[torch.Tensor], noise: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Network output for every slice: normalised complex coil images (B, C, *size)."""
        batch = noise.shape[0]
        x = noise.reshape(1, -1, *noise.shape[2:])  # slices stacked along channels: grouped convs
        sizes = upsample_sizes(self.input_size, size, self.layers) + [None]
        for i, target in enumerate(sizes):
            weight, gain, bias = params[3 * i : 3 * i + 3]
            if target is not None:
                x = F.interpolate(x, size=target, mode=self.upsample)
            x = F.conv2d(x, weight.flatten(0, 1), padding=self.kernel // 2, groups=batch)
            x = F.batch_norm(F.relu(x), None, None, gain.flatten(), bias.flatten(), training=True, eps=BN_EPS)
        x = F.conv2d(x, params[-1].flatten(0, 1), groups=batch)
        x = x.reshape(batch, -1, 2, *size).permute(0, 1, 3, 4, 2)
        return torch.view_as_complex(x.contiguous())

    def data_loss(self, state: FitState, kspace: torch.Tensor, mask: torch.Tensor,
                  coil_images: torch.Tensor | None = None) -> torch.Tensor:
        """L_method(w; y) per slice (B,): mean over (C, H, W) of |M (F G(w) - y / s)|^2.

        The paper's eq. 4 is this times C H W / 2 (in normalised units). Differentiable in the
        weights and in `kspace` (the two-step attack ascends in y); `coil_images` skips a forward.
        """
        if coil_images is None:
            coil_images = self.decode(state.params, state.noise, kspace.shape[-2:])
        residual = (fft2c(coil_images) - kspace / state.scale.view(-1, 1, 1, 1)) * mask
        return (residual.real**2 + residual.imag**2).mean(dim=(1, 2, 3))

    # --- fitting ------------------------------------------------------------------------------
    def fit(
        self,
        kspace: torch.Tensor,
        mask: torch.Tensor,
        *,
        iters: int | None = None,
        state: FitState | None = None,
        extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, FitState]:
        """Fit to k-space (B, C, H, W); return the data-consistent RSS image (B, H, W) and the state.

        `state` continues an earlier fit (weights, optimiser moments and scale are kept).
        `extra_loss(image)` maps the current RSS image (B, H, W, at the data's scale, before data
        consistency) to a per-slice (B,) term added to the minimised loss, e.g. -beta ||x - x*||^2.
        The best iterate is chosen by the total loss; only the end of the fit reads from the device.
        """
        mask = mask.to(kspace.device)
        iters = self.iters if iters is None else iters
        state = self.init(kspace, mask) if state is None else state
        y = kspace * mask
        batch = kspace.shape[0]
        best_loss = torch.full((batch,), math.inf, device=kspace.device, dtype=kspace.real.dtype)
        best = None
        losses = []
        for step in range(iters + 1):  # evaluates iters + 1 iterates: the last one too
            coil_images = self.decode(state.params, state.noise, kspace.shape[-2:])
            loss = self.data_loss(state, y, mask, coil_images)
            if extra_loss is not None:
                loss = loss + extra_loss(rss(coil_images) * state.scale.view(-1, 1, 1))
            with torch.no_grad():
                better = loss < best_loss
                best_loss = torch.where(better, loss, best_loss)
                output = coil_images.detach()
                best = output if best is None else torch.where(better.view(-1, 1, 1, 1), output, best)
                losses.append(loss.detach())
            if step == iters:
                break
            state.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # slices' losses share no weights: the sum keeps gradients per slice
            state.optimizer.step()
            if state.schedule is not None:
                state.schedule.step()
        state.best, state.losses = best, torch.stack(losses)
        image = rss(consistent_coil_images(best * state.scale.view(-1, 1, 1, 1), y, mask))
        return image.detach(), state

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> torch.Tensor:
        with torch.inference_mode(False), torch.enable_grad():  # callers may evaluate without autograd
            image, _ = self.fit(kspace, mask)
        return image

    # --- the two-step attack's protocol (mrirobust.robustness.attacks.OptimisationAttackable) ---
    def attack_variables(self, kspace: torch.Tensor, mask: torch.Tensor, **meta: Any) -> list[torch.Tensor]:
        """[*weights, input, scale map]: the seeded initial weights (requiring grad), the fixed input,
        and the per-slice k-space scale s as a (B, H, W) map, which also carries the output size."""
        state = self.init(kspace, mask.to(kspace.device))
        scale_map = state.scale.reshape(-1, 1, 1).expand(-1, *kspace.shape[-2:])
        return [*state.params, state.noise, scale_map]

    def attack_image(self, variables: list[torch.Tensor]) -> torch.Tensor:
        """The RSS of the network output at the data's scale (before data consistency), (B, H, W)."""
        *params, noise, scale_map = variables
        return rss(self.decode(params, noise, tuple(scale_map.shape[-2:]))) * scale_map

    def attack_loss(self, variables: list[torch.Tensor], kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`data_loss` of the weights for k-space (normalised by the clean data's scale), (B,)."""
        *params, noise, scale_map = variables
        state = FitState(params, noise, scale_map[:, 0, 0], optimizer=None, schedule=None)  # type: ignore[arg-type]  # no fitting
        return self.data_loss(state, kspace, mask)


def consistent_coil_images(coil_images: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Coil images whose k-space equals `kspace` on the sampled entries and F(coil_images) elsewhere."""
    return ifft2c(torch.where(mask, kspace, fft2c(coil_images)))


@register("convdecoder")
@dataclass
class ConvDecoder(UntrainedDecoder):
    """ConvDecoder (Darestani & Heckel 2020): nearest upsampling and 3x3 convolutions."""


@register("deepdecoder")
@dataclass
class DeepDecoder(UntrainedDecoder):
    """Deep Decoder (Heckel & Hand 2019) for MRI: bilinear upsampling and 1x1 convolutions.

    A 1x1 convolution commutes with bilinear upsampling (both linear, weights summing to one), so
    upsample-then-convolve equals the original's convolve-then-upsample.
    """

    layers: int = 10
    channels: int = 368
    input_size: tuple[int, int] = (16, 16)
    kernel: int = 1
    upsample: str = "bilinear"
    iters: int = 20000


# CPU-sized decoders for the demo, on one core for 8 coils x 320x160: ConvDecoder ~7 it/s
# (~45 s a slice), Deep Decoder ~5 it/s (~65 s a slice).
register_preset("convdecoder-small", ConvDecoder, {"layers": 5, "channels": 32, "iters": 300})
register_preset("deepdecoder-small", DeepDecoder, {"layers": 6, "channels": 64, "iters": 300})
