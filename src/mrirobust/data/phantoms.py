"""Random structure with the statistics of MR images, for the embedded synthetic dataset.

A phantom volume is painted in three stages on a `Canvas` (S slices of an (H, W) matrix):

1. Anatomy: smooth shape priors (`knee`, `brain`) give soft tissue masks composited in order,
   with per-volume geometry (zoom, tilt, position, sizes) and strong dependence on the slice
   position `t` in the organ, so that neighbouring slices are alike and distant ones are not.
2. Dead leaves: hundreds of occluding 3-D superellipsoids with a power-law size distribution
   (density ~ r^-3, scale invariant like natural images) cut into the anatomy, either as small
   pieces of a tissue (fat lobules, vessels, septa) or as multiplicative intensity patches. Each
   leaf is an ellipsoid across slices too, so it appears, grows and vanishes along the stack.
3. 1/f-like texture and a smooth bias field multiply the result (`Canvas.fractal`).

Leaves are placed from a fixed number of continuous random draws, and random fields from
spectral coefficients on a fixed frequency grid, so a patient looks the same at any matrix size
over the same field of view (resolution shifts). Edges are soft (partial volume) with a
per-volume edge width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mrirobust.physics.fft import ifft2c

Layers = list[tuple[str, torch.Tensor]]
_SPECTRUM_HALF = 80  # random-field coefficients cover |frequency| < 80 cycles per 2 units


class Canvas:
    """Coordinates, random draws and soft masks for S slices of an (H, W) matrix.

    Positions are in units where the target's shorter side spans [-1, 1); a wider matrix sees
    more of the object. `t` (S, 1, 1) is the slice position within the organ, in about [-1, 1].
    """

    def __init__(self, matrix: tuple[int, int], target: tuple[int, int], t: torch.Tensor,
                 generator: torch.Generator) -> None:
        self.matrix = matrix
        self.unit = 2.0 / min(target)  # pixel size
        height, width = matrix
        self.y = ((torch.arange(height, dtype=torch.float64) - height // 2) * self.unit)[:, None]
        self.x = ((torch.arange(width, dtype=torch.float64) - width // 2) * self.unit)[None, :]
        self.t = t[:, None, None]
        self.generator = generator
        self.edge = self.unit * self.uniform(0.45, 1.1)  # partial-volume edge width of this volume

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, dtype=torch.float64)

    def soft(self, distance: torch.Tensor) -> torch.Tensor:
        """Anti-aliased inside-mask of a signed distance (positive inside), ~1 pixel edge."""
        return torch.sigmoid(distance / self.edge)

    def _spectral(self, weight_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], drift: float,
                  symmetric: float) -> torch.Tensor:
        """A unit-variance Gaussian random field per slice (S, H, W) with spectral weight
        `weight_of(ky, kx)` (cycles per 2 units), drifting over slices: slice s mixes two fields
        as cos(phi_s) A + sin(phi_s) B with phi growing by `drift`. `symmetric` in [0, 1] blends
        in the mirror image about x = 0."""
        n = _SPECTRUM_HALF
        coefficients = torch.randn(2, 2 * n, 2 * n, generator=self.generator, dtype=torch.complex128)
        spectra = []
        for size in self.matrix:
            extent = size * self.unit / 2  # frequency index f is f / extent cycles per 2 units
            spectra.append(torch.arange(-(size // 2), size - size // 2, dtype=torch.float64) / extent)
        weight = weight_of(spectra[0][:, None], spectra[1][None, :])
        grid = torch.zeros(2, *self.matrix, dtype=torch.complex128)
        rows, cols = _overlap(self.matrix[0], n), _overlap(self.matrix[1], n)
        grid[:, rows[0], cols[0]] = coefficients[:, rows[1], cols[1]]
        pair = ifft2c(grid * weight).real * math.sqrt(2 * self.matrix[0] * self.matrix[1] / (weight**2).sum())
        if symmetric:
            mirrored = torch.roll(torch.flip(pair, (-1,)), 1 - self.matrix[1] % 2, -1)
            pair = (1 - symmetric) * pair + symmetric * (pair + mirrored) / math.sqrt(2)
        phi = self.uniform(0, 2 * math.pi) + drift * torch.arange(self.t.shape[0], dtype=torch.float64)
        return torch.cos(phi)[:, None, None] * pair[0] + torch.sin(phi)[:, None, None] * pair[1]

    def field(self, centre: float, width: float, *, stretch: float = 1.0, angle: float = 0.0,
              drift: float = 0.3, symmetric: float = 0.0) -> torch.Tensor:
        """A random field whose spectrum is a ring of radius `centre` and width `width` (centre 0
        is low-pass); `stretch` > 1 elongates its structures along x at `angle`."""
        def weight(ky: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
            u = ky * math.cos(angle) + kx * math.sin(angle)
            v = kx * math.cos(angle) - ky * math.sin(angle)
            return torch.exp(-0.5 * ((torch.sqrt(u**2 + (stretch * v) ** 2) - centre) / width) ** 2)
        return self._spectral(weight, drift, symmetric)

    def fractal(self, exponent: float, *, drift: float = 0.3, symmetric: float = 0.0) -> torch.Tensor:
        """A random field with a 1/f^exponent power spectrum (natural-image-like texture)."""
        return self._spectral(lambda ky, kx: (ky**2 + kx**2 + 1.0) ** (-exponent / 4), drift, symmetric)


def _overlap(size: int, half: int) -> tuple[slice, slice]:
    """Slices of a size-`size` centred FFT grid and of the (2 half) coefficient grid that overlap."""
    low = max(-(size // 2), -half)
    high = min(size - size // 2, half)
    return slice(low + size // 2, high + size // 2), slice(low + half, high + half)


def ellipse(y, x, cy, cx, ay, ax, angle=0.0):
    """Approximate signed distance to an ellipse (positive inside)."""
    dy, dx = y - cy, x - cx
    u = dy * math.cos(angle) + dx * math.sin(angle)
    v = dx * math.cos(angle) - dy * math.sin(angle)
    rho = torch.sqrt((u / ay) ** 2 + (v / ax) ** 2)
    return (1 - rho) * torch.minimum(torch.as_tensor(ay), torch.as_tensor(ax))


def smoothstep(z: torch.Tensor) -> torch.Tensor:
    z = z.clamp(0, 1)
    return z * z * (3 - 2 * z)


def paint(layers: Layers, contrast: dict[str, float]) -> torch.Tensor:
    """Composite soft tissue masks in order: each layer covers what lies below by its opacity."""
    image = torch.zeros(())
    for tissue, opacity in layers:
        image = image + opacity * (contrast[tissue] - image)
    return image


# --- dead leaves ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaves:
    """A dead-leaves population: `candidates` draws, kept where they fall inside the body.

    Radii (in units) follow a power law of density r^-3 on [r_min, r_max]; up to `aspect`:1
    elongation, random orientation and superellipse exponent; slice extent `depth` times the
    radius (t units). `tissues` maps a tissue (or "" for a multiplicative patch of log-std
    `spread`) to its probability. Tissue leaves are at most `tissue_radius` wide.
    """

    candidates: int
    r_min: float
    r_max: float
    aspect: float
    depth: float
    tissues: tuple[tuple[str, float], ...]
    spread: float
    tissue_radius: float


def paint_leaves(c: Canvas, image: torch.Tensor, body: torch.Tensor, spec: Leaves,
                 contrast: dict[str, float]) -> torch.Tensor:
    """Cut the leaves of `spec` into `image` (S, H, W): tissue leaves in drawing order (later
    ones occlude), then the multiplicative patches all at once (they commute)."""
    n = spec.candidates
    draws = torch.rand(n, 9, generator=c.generator, dtype=torch.float64)
    lo, hi = spec.r_min ** -2, spec.r_max ** -2
    radius = (lo - draws[:, 0] * (lo - hi)) ** -0.5
    t = c.t.flatten()
    step = float(t[1] - t[0]) if len(t) > 1 else 0.1
    cz = t[0] - step + draws[:, 1] * (t[-1] - t[0] + 2 * step)
    height, width = c.matrix
    rows = (draws[:, 2] * height).long().clamp(max=height - 1)
    cols = (draws[:, 3] * width).long().clamp(max=width - 1)
    nearest = ((cz - t[0]) / step).round().long().clamp(0, len(t) - 1)
    inside = body[nearest, rows, cols] > 0.5
    names = [name for name, _ in spec.tissues]
    cumulative = torch.cumsum(torch.tensor([p for _, p in spec.tissues], dtype=torch.float64), 0)
    kinds = torch.searchsorted(cumulative / cumulative[-1], draws[:, 4].contiguous()).clamp(max=len(names) - 1)
    tissue = torch.tensor([bool(name) for name in names])[kinds]
    radius = torch.where(tissue, radius.clamp(max=spec.tissue_radius), radius)
    elongation = 1 + (spec.aspect - 1) * draws[:, 5] ** 2
    geometry = (cz, radius * elongation.sqrt(), radius / elongation.sqrt(), spec.depth * radius * (0.5 + draws[:, 6]),
                math.pi * draws[:, 7], 1.5 + 2.5 * draws[:, 8])
    leaves = _Shapes(rows, cols, *(g.float() for g in geometry))  # float32: the batched patches are large
    factors = torch.exp(spec.spread * c.normal(n))
    for i in (inside & tissue).nonzero().flatten().tolist():
        region, opacity = leaves.patch(c, i, body)
        if opacity is not None:
            patch = image[region]
            image[region] = patch + opacity * (contrast[names[int(kinds[i])]] * float(factors[i]) - patch)
    return image * torch.exp(leaves.log_patches(c, (inside & ~tissue).nonzero().flatten(), factors, body))


@dataclass(frozen=True)
class _Shapes:
    """Leaf geometry: centre pixel (rows, cols), slice centre cz, semi-axes (ry, rx), slice
    half-extent depth, orientation and superellipse exponent; one entry per leaf."""

    rows: torch.Tensor
    cols: torch.Tensor
    cz: torch.Tensor
    ry: torch.Tensor
    rx: torch.Tensor
    depth: torch.Tensor
    angle: torch.Tensor
    power: torch.Tensor

    def _opacity(self, c: Canvas, index: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                 positions: torch.Tensor) -> torch.Tensor:
        """Soft inside-masks (N, s, h, w) of leaves `index` at offsets dy (N, h, 1), dx (N, 1, w)
        on the slices at `positions` (N, s)."""
        cos, sin = torch.cos(self.angle[index])[:, None, None], torch.sin(self.angle[index])[:, None, None]
        ry, rx = self.ry[index][:, None, None], self.rx[index][:, None, None]
        power = self.power[index][:, None, None]
        rho = (((dy * cos + dx * sin) / ry).abs() ** power + ((dx * cos - dy * sin) / rx).abs() ** power) ** (1 / power)
        along = (positions - self.cz[index][:, None]) / self.depth[index][:, None]
        k = torch.sqrt((1 - along**2).clamp_min(0))[:, :, None, None]
        return c.soft((k - rho[:, None]) * rx[:, None]) * (k > 0)

    def patch(self, c: Canvas, i: int, body: torch.Tensor) -> tuple[tuple[slice, slice, slice], torch.Tensor | None]:
        """The region and opacity (s, h, w) of leaf i (None where it misses every slice)."""
        reach = float(torch.maximum(self.ry[i], self.rx[i])) + 2 * c.unit
        r0, r1 = _span(c.y.flatten(), float(c.y[self.rows[i], 0]), reach)
        c0, c1 = _span(c.x.flatten(), float(c.x[0, self.cols[i]]), reach)
        index = torch.tensor([i])
        opacity = self._opacity(c, index, (c.y[r0:r1] - c.y[self.rows[i], 0])[None],
                                (c.x[:, c0:c1] - c.x[0, self.cols[i]])[None], c.t.flatten()[None])[0]
        on = opacity.flatten(1).amax(1).nonzero().flatten()
        if not len(on):
            return (slice(0), slice(0), slice(0)), None
        region = (slice(int(on[0]), int(on[-1]) + 1), slice(r0, r1), slice(c0, c1))
        return region, opacity[region[0]] * body[region]

    def log_patches(self, c: Canvas, index: torch.Tensor, factors: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        """sum over leaves `index` of log(1 + opacity (factor - 1)), (S, H, W), batched by size:
        each batch covers a square of offsets and the window of slices its leaves can reach."""
        slices, height, width = body.shape
        t = c.t.flatten().float()
        step = float(t[1] - t[0]) if slices > 1 else 1.0
        half = (torch.maximum(self.ry, self.rx)[index] / c.unit).ceil().long() + 2
        sizes = [4]
        while len(index) and sizes[-1] < int(half.max()):
            sizes.append(2 * sizes[-1])
        pad = sizes[-1]
        total = torch.zeros(slices, height + 2 * pad, width + 2 * pad)
        padded = torch.nn.functional.pad(body.float(), (pad, pad, pad, pad))
        for size in sizes if len(index) else []:
            group = index[(half <= size) & (half > size // 2 if size > 4 else True)]
            if not len(group):
                continue
            offsets = torch.arange(-size, size + 1)
            reach = min(slices, math.ceil(float(self.depth[group].max()) / step) + 1)
            nearest = ((self.cz[group] - t[0]) / step).round().long()
            window = nearest[:, None] + torch.arange(-reach, reach + 1)[None]
            valid = (window >= 0) & (window < slices)
            window = window.clamp(0, slices - 1)
            d = offsets * c.unit
            opacity = self._opacity(c, group, d[None, :, None].expand(len(group), -1, 1),
                                    d[None, None, :].expand(len(group), 1, -1), t[window])
            opacity = opacity * valid[:, :, None, None]
            r = (self.rows[group] + pad)[:, None, None, None] + offsets[None, None, :, None]
            q = (self.cols[group] + pad)[:, None, None, None] + offsets[None, None, None, :]
            flat = ((window[:, :, None, None] * (height + 2 * pad) + r) * (width + 2 * pad) + q)
            flat = flat.expand_as(opacity).reshape(-1)
            opacity = opacity.reshape(-1) * padded.reshape(-1)[flat]
            gain = (factors[group].float() - 1)[:, None, None, None].expand(-1, *valid.shape[1:], len(offsets), len(offsets))
            total.view(-1).index_add_(0, flat, torch.log1p(opacity * gain.reshape(-1)))
        return total[:, pad: pad + height, pad: pad + width].double()

def _span(axis: torch.Tensor, centre: float, reach: float) -> tuple[int, int]:
    """Index range of the sorted coordinates `axis` within `reach` of `centre`."""
    low = int(torch.searchsorted(axis, torch.tensor(centre - reach, dtype=axis.dtype)))
    high = int(torch.searchsorted(axis, torch.tensor(centre + reach, dtype=axis.dtype)))
    return low, max(high, low)
