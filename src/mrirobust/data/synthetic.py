"""The embedded default dataset: procedural knee-like and brain-like multi-coil volumes.

Each volume is one "patient" (anatomy drawn from a seed) imaged as a stack of neighbouring
slices whose anatomy changes smoothly along the slice index. A phantom is painted as layers of
tissue (soft masks composited in order), and an acquisition is a table of tissue intensities,
so the same patient can be rendered with any contrast of its family:

- knee (coronal, like fastMRI knee): femur and tibia with dark cortex and textured marrow, thin
  cartilage, joint fluid, menisci, physeal scars, subcutaneous fat and muscle with fibrous
  streaks; an off-centre, left/right-asymmetric field of view; lots of fine horizontal edges.
  `CORPD_FBK` (proton density) and `CORPDFS_FBK` (fat suppressed: fat and marrow go dark).
- brain (axial, like fastMRI brain): scalp, dark skull, CSF, folded grey-matter cortex over
  white matter, ventricles and deep grey nuclei; near mirror-symmetric and smoother.
  `AXT2` (CSF bright), `AXFLAIR` (CSF suppressed) and `AXT1` (white matter brighter than grey).

Random fields are synthesised from spectral coefficients drawn on a fixed frequency grid, so a
patient looks the same at any matrix size over the same field of view (resolution shifts).
Small lesions (`SynthConfig.lesions`) are one more painted layer each (`_paint`'s layer list):
bright or dark discs a few pixels wide inside the anatomy on up to 3 consecutive slices, drawn
from their own seeded generator so volumes without lesions are unchanged; `synthesize` writes
their boxes as a fastMRI+-format `annotations.csv` next to the files (`data.annotations`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mrirobust.data.annotations import write_fastmri_plus
from mrirobust.data.fastmri import write_volume
from mrirobust.data.simulate import simulate_kspace
from mrirobust.errors import ConfigError
from mrirobust.physics.fft import center_crop, ifft2c

# Tissue intensities per acquisition (relative; each family's brightest tissue near 1).
ACQUISITIONS: dict[str, dict[str, dict[str, float]]] = {
    "knee": {
        "CORPD_FBK": dict(fat=1.0, marrow=0.85, muscle=0.35, cartilage=0.55, fluid=0.6, fibrous=0.05),
        "CORPDFS_FBK": dict(fat=0.1, marrow=0.12, muscle=0.28, cartilage=0.5, fluid=0.95, fibrous=0.04),
    },
    "brain": {
        "AXT2": dict(fat=0.55, fibrous=0.03, csf=1.0, gm=0.5, wm=0.33),
        "AXFLAIR": dict(fat=0.6, fibrous=0.03, csf=0.06, gm=0.55, wm=0.38),
        "AXT1": dict(fat=0.9, fibrous=0.05, csf=0.12, gm=0.42, wm=0.62),
    },
}
_SPECTRUM_HALF = 48  # random-field coefficients cover |frequency| < 48 cycles per 2 units


@dataclass(frozen=True)
class SynthConfig:
    """One split of one anatomy family: `num_volumes` patients of `slices_per_volume` slices.

    `shape` is the target (h, w); `matrix` the imaged matrix before readout oversampling
    (default `shape`; fastMRI knee: 320 x 368 for a 320 x 320 target). k-space is
    (2 * matrix[0] if oversample else matrix[0], matrix[1]). `acquisition`: one name or a tuple
    cycled over the volumes (None: all of the family's). `snr_db` as in `simulate_kspace`.
    `lesions`: small planted lesions per volume (0: none, the files are as without the option).
    """

    anatomy: str = "knee"
    acquisition: str | tuple[str, ...] | None = None
    split: str = "train"
    num_volumes: int = 4
    slices_per_volume: int = 8
    num_coils: int = 8
    shape: tuple[int, int] = (160, 160)
    matrix: tuple[int, int] | None = None
    oversample: bool = False
    snr_db: float | None = 25.0
    seed: int = 0
    lesions: int = 0

    def __post_init__(self) -> None:
        if self.anatomy not in ACQUISITIONS:
            raise ConfigError("anatomy", f"unknown {self.anatomy!r}; choose from {sorted(ACQUISITIONS)}")
        for name in self.acquisitions:
            if name not in ACQUISITIONS[self.anatomy]:
                raise ConfigError("acquisition", f"unknown {name!r} for {self.anatomy}; "
                                                 f"choose from {sorted(ACQUISITIONS[self.anatomy])}")
        if self.lesions < 0:
            raise ConfigError("lesions", f"must be >= 0, got {self.lesions}")
        if min(self.num_volumes, self.slices_per_volume, self.num_coils) < 1:
            raise ConfigError("num_volumes/slices_per_volume/num_coils", "must be positive")
        if self.matrix is not None and (self.matrix[0] < self.shape[0] or self.matrix[1] < self.shape[1]):
            raise ConfigError("matrix", f"{self.matrix} is smaller than the target shape {self.shape}")

    @property
    def acquisitions(self) -> tuple[str, ...]:
        if self.acquisition is None:
            return tuple(ACQUISITIONS[self.anatomy])
        return (self.acquisition,) if isinstance(self.acquisition, str) else tuple(self.acquisition)


def _demo(anatomy: str) -> list[SynthConfig]:
    # 2x readout oversampling as in fastMRI: without it the anatomy runs into the k-space FOV's
    # edge along the readout, which no smooth coil-map model (ESPIRiT, SENSE) represents.
    # The test split carries planted lesions (with a fastMRI+ style annotations.csv) for the
    # annotated small-feature experiment.
    return [SynthConfig(anatomy, split=split, num_volumes=n, oversample=True, lesions=3 if split == "test" else 0)
            for split, n in (("train", 4), ("val", 2), ("test", 2))]


PRESETS: dict[str, list[SynthConfig]] = {
    # 2 families x (4 train + 2 val + 2 test) volumes x 8 slices, 8 coils, 320 x 160 k-space,
    # 160 x 160 targets: CPU-sized.
    "demo": _demo("knee") + _demo("brain"),
    "fastmri-size": [
        SynthConfig("knee", split="val", num_volumes=2, slices_per_volume=8, num_coils=15,
                     shape=(320, 320), matrix=(320, 368), oversample=True),
        SynthConfig("brain", split="val", num_volumes=2, slices_per_volume=8, num_coils=16,
                     shape=(320, 320), matrix=(320, 320), oversample=True),
    ],
}
DEFAULT_PRESET = "demo"


class _Canvas:
    """Coordinates, random draws and soft masks for S slices of an (H, W) matrix.

    Positions are in units where the target's shorter side spans [-1, 1); a wider matrix sees
    more of the object. `t` (S, 1, 1) is the slice position within the organ, in [-1, 1].
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

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def soft(self, distance: torch.Tensor) -> torch.Tensor:
        """Anti-aliased inside-mask of a signed distance (positive inside), ~1 pixel edge."""
        return torch.sigmoid(distance / (0.6 * self.unit))

    def field(self, centre: float, width: float, *, stretch: float = 1.0, angle: float = 0.0,
              drift: float = 0.3, symmetric: float = 0.0) -> torch.Tensor:
        """A unit-variance Gaussian random field per slice (S, H, W), drifting smoothly over slices.

        Its spectrum is a ring of radius `centre` and width `width` (cycles per 2 units; centre 0
        is low-pass); `stretch` > 1 squeezes it along x at `angle` (structures elongated along x).
        Slice s mixes two fields as cos(phi_s) A + sin(phi_s) B with phi growing by `drift`.
        `symmetric` in [0, 1] blends in the mirror image about x = 0.
        """
        n = _SPECTRUM_HALF
        coefficients = torch.randn(2, 2 * n, 2 * n, generator=self.generator, dtype=torch.complex128)
        spectra = []
        for size in self.matrix:
            extent = size * self.unit / 2  # frequency index f is f / extent cycles per 2 units
            spectra.append(torch.arange(-(size // 2), size - size // 2, dtype=torch.float64) / extent)
        ky, kx = spectra[0][:, None], spectra[1][None, :]
        u = ky * math.cos(angle) + kx * math.sin(angle)
        v = kx * math.cos(angle) - ky * math.sin(angle)
        weight = torch.exp(-0.5 * ((torch.sqrt(u**2 + (stretch * v) ** 2) - centre) / width) ** 2)
        grid = torch.zeros(2, *self.matrix, dtype=torch.complex128)
        rows = _overlap(self.matrix[0], n)
        cols = _overlap(self.matrix[1], n)
        grid[:, rows[0], cols[0]] = coefficients[:, rows[1], cols[1]]
        spectrum = grid * weight
        pair = ifft2c(spectrum).real * math.sqrt(2 * self.matrix[0] * self.matrix[1] / (weight**2).sum())
        if symmetric:
            mirrored = torch.roll(torch.flip(pair, (-1,)), 1 - self.matrix[1] % 2, -1)
            pair = ((1 - symmetric) * pair + symmetric * (pair + mirrored) / math.sqrt(2))
        phi = self.uniform(0, 2 * math.pi) + drift * torch.arange(self.t.shape[0], dtype=torch.float64)
        return torch.cos(phi)[:, None, None] * pair[0] + torch.sin(phi)[:, None, None] * pair[1]


def _overlap(size: int, half: int) -> tuple[slice, slice]:
    """Slices of a size-`size` centred FFT grid and of the (2 half) coefficient grid that overlap."""
    low = max(-(size // 2), -half)
    high = min(size - size // 2, half)
    return slice(low + size // 2, high + size // 2), slice(low + half, high + half)


def _ellipse(y, x, cy, cx, ay, ax, angle=0.0):
    """Approximate signed distance to an ellipse (positive inside)."""
    dy, dx = y - cy, x - cx
    u = dy * math.cos(angle) + dx * math.sin(angle)
    v = dx * math.cos(angle) - dy * math.sin(angle)
    rho = torch.sqrt((u / ay) ** 2 + (v / ax) ** 2)
    return (1 - rho) * torch.minimum(torch.as_tensor(ay), torch.as_tensor(ax))


def _smoothstep(z: torch.Tensor) -> torch.Tensor:
    z = z.clamp(0, 1)
    return z * z * (3 - 2 * z)


def _knee(c: _Canvas) -> list[tuple[str, torch.Tensor]]:
    """Tissue layers of a coronal knee, painted in order."""
    y, t = c.y, c.t
    side = 1.0 if c.uniform(0, 1) < 0.5 else -1.0  # which side the fibula is on (left/right knee)
    cx = c.uniform(-0.1, 0.1)
    x = c.x - cx - c.uniform(-0.04, 0.04) * y  # the leg slightly tilted
    joint = c.uniform(-0.05, 0.12)
    cart = c.uniform(0.018, 0.026)  # cartilage thickness
    femur_end, tibia_top = joint - cart - 0.006, joint + cart + 0.006
    low = c.field(0, 3)

    leg = c.uniform(0.62, 0.74) - 0.06 * y + 0.02 * low - x.abs()
    fat_depth = c.uniform(0.05, 0.11)
    muscle = c.soft(leg - fat_depth - 0.02 * c.field(0, 4))
    streaks = c.soft((c.field(32, 8, stretch=6, angle=c.uniform(-0.35, 0.35)) - 1.6) * 0.05)

    # Femur: shaft widening into two condyles, the notch deepening towards posterior slices.
    spread = 0.2 + 0.04 * t
    ry, rx = c.uniform(0.14, 0.18), c.uniform(0.16, 0.2)
    width = 0.2 + 0.25 * _smoothstep((y - (femur_end - 0.6)) / 0.45)
    shaft = torch.minimum(width - x.abs(), femur_end - ry - y + 0.05)
    condyles = torch.maximum(_ellipse(y, x, femur_end - ry, -spread, ry, rx),
                             _ellipse(y, x, femur_end - ry, spread, ry, rx))
    notch = _ellipse(y, x, femur_end, 0.0, 0.05 + 0.13 * (0.4 + t).clamp(0, 1), 0.07)
    femur = torch.minimum(torch.maximum(shaft, condyles), -notch)

    # Tibia: plateau with the tibial spines, narrowing to the shaft; fibula head posteriorly.
    spines = 0.035 * (torch.exp(-((x - 0.03) / 0.03) ** 2) + torch.exp(-((x + 0.04) / 0.03) ** 2))
    plateau = y - tibia_top + spines - 0.01 * (x / 0.4) ** 2
    tibia = torch.minimum(plateau, 0.21 + 0.25 * (1 - _smoothstep((y - tibia_top) / 0.35)) - x.abs())
    fibula = _ellipse(y, x, tibia_top + 0.24, side * 0.43, 0.09, 0.055) - 0.3 * (1 - ((t - 0.1) * 3).clamp(0, 1))
    bones = torch.maximum(torch.maximum(femur, tibia), fibula)

    # Soft tissue around the joint: fluid, fat pad and ligament in the notch, menisci.
    fluid = c.soft(torch.minimum(0.45 - x.abs(), torch.minimum(y - femur_end + 0.12, tibia_top + 0.05 - y)))
    ligament = c.soft(0.022 - ((y - joint + 0.08) * math.cos(1.0) - x * math.sin(1.0)).abs()) \
        * c.soft(notch + 0.02) * (1 - (t.abs() / 0.5)).clamp(0, 1)
    s = x.abs() - 0.27
    meniscus = c.soft(torch.minimum(0.01 + 0.05 * (s / 0.17).clamp(0, 1) - (y - joint).abs(),
                                    torch.minimum(s, 0.2 - s)))
    cartilage = c.soft(torch.maximum(
        torch.minimum(femur + cart, y - (femur_end - 0.22)), torch.minimum(tibia + cart, tibia_top + 0.05 - y)))

    marrow = c.soft(bones - 0.016)
    trabeculae = 0.3 * c.soft((c.field(45, 10) - 1.0) * 0.04) * marrow
    scars = c.soft(0.006 - torch.minimum((y - femur_end + 0.33 - 0.02 * low).abs(),
                                         (y - tibia_top - 0.27 - 0.02 * low).abs())) * marrow
    inside = c.soft(leg)
    return [("fat", inside), ("muscle", muscle), ("fat", 0.8 * streaks * muscle),
            ("fluid", fluid * inside), ("fat", c.soft(notch) * inside), ("fibrous", ligament),
            ("fibrous", meniscus * inside), ("cartilage", cartilage * inside),
            ("fibrous", c.soft(bones)), ("marrow", marrow), ("fibrous", trabeculae), ("fibrous", scars)]


def _brain(c: _Canvas) -> list[tuple[str, torch.Tensor]]:
    """Tissue layers of an axial brain slice, painted in order."""
    t = c.t
    size = torch.sqrt((1 - (t / 1.2) ** 2).clamp_min(0.05))
    cy, cx = c.uniform(-0.05, 0.05), c.uniform(-0.03, 0.03)
    tilt = c.uniform(-0.08, 0.08)
    ay, ax = c.uniform(0.8, 0.88) * size, c.uniform(0.64, 0.72) * size
    y = (c.y - cy) * math.cos(tilt) + (c.x - cx) * math.sin(tilt)
    x = (c.x - cx) * math.cos(tilt) - (c.y - cy) * math.sin(tilt)
    head = _ellipse(y, x, 0.0, 0.0, ay, ax) + 0.01 * c.field(0, 3, symmetric=0.8)
    brain = head - 0.1  # depth below the brain surface

    folds = c.field(9, 3, symmetric=0.8, drift=0.5)
    sulci = c.soft((0.2 - folds.abs()) * 0.08) * c.soft(0.1 + 0.03 * c.field(0, 4) - brain)
    white = torch.maximum(brain - 0.13, torch.minimum(brain - 0.035, (folds.abs() - 0.75) * 0.1))
    middle = (1 - (t / 0.6) ** 2).clamp(0, 1)  # ventricles and nuclei live in the central slices
    ventricles = torch.maximum(_ellipse(y, x, -0.06, -0.07, 0.22, 0.05, angle=0.12),
                               _ellipse(y, x, -0.06, 0.07, 0.22, 0.05, angle=-0.12)) - 0.08 * (1 - middle)
    nuclei = torch.maximum(_ellipse(y, x, 0.05, -0.18, 0.13, 0.06), _ellipse(y, x, 0.05, 0.18, 0.13, 0.06)) \
        - 0.08 * (1 - middle)
    fissure = c.soft(0.008 - x.abs()) * c.soft((y / ay).abs() - 0.4)
    inside = c.soft(brain)
    return [("fat", c.soft(head)), ("fibrous", c.soft(head - 0.04)), ("csf", c.soft(head - 0.08)),
            ("gm", inside), ("csf", sulci * inside), ("wm", c.soft(white)), ("gm", c.soft(nuclei)),
            ("csf", c.soft(ventricles)), ("csf", fissure * inside)]


_ANATOMY = {"knee": (_knee, 0.06, 25.0), "brain": (_brain, 0.03, 8.0)}  # layers, texture amount, grain


def _paint(layers: list[tuple[str, torch.Tensor]], contrast: dict[str, float]) -> torch.Tensor:
    """Composite soft tissue masks in order: each layer covers what lies below by its opacity."""
    image = torch.zeros(())
    for tissue, opacity in layers:
        image = image + opacity * (contrast[tissue] - image)
    return image


def _volume_seed(config: SynthConfig, index: int) -> int:
    """A patient's seed: stable across runs and platforms, different per anatomy/split/index."""
    key = [config.seed, zlib.crc32(config.anatomy.encode()), zlib.crc32(config.split.encode()), index]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


LESION_LABELS = {"bright": "Synthetic lesion - bright", "dark": "Synthetic lesion - dark"}


def _lesions(config: SynthConfig, index: int, canvas: _Canvas, image: torch.Tensor, contrast: dict[str, float]
             ) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[int, str, int, int, int, int]]]:
    """`config.lesions` disc layers inside the anatomy of `image` (S, H, W) and their boxes
    (slice, label, top, left, height, width) in the target frame."""
    generator = torch.Generator().manual_seed(_volume_seed(config, index) ^ 0x1E5105)
    slices, height, width = image.shape
    h, w = config.shape
    offset = ((height - h) // 2, (width - w) // 2)  # the target is the centre crop of the matrix
    bright = max(contrast, key=contrast.get)
    layers, boxes = [], []
    for _ in range(config.lesions):
        radius = 1.0 + 1.5 * float(torch.rand((), generator=generator))
        reach = math.ceil(radius)
        middle = int(torch.randint(slices, (), generator=generator))
        chosen = list(range(max(0, middle - 1), min(slices, middle + 2)))
        inside = image[middle] > 0.3 * image[middle].max()
        border = torch.zeros_like(inside)  # keep the whole box inside the target
        border[offset[0] + reach + 1: offset[0] + h - reach - 1, offset[1] + reach + 1: offset[1] + w - reach - 1] = True
        candidates = (inside & border).nonzero()
        if not len(candidates):
            continue
        row, col = candidates[int(torch.randint(len(candidates), (), generator=generator))].tolist()
        kind = "bright" if float(torch.rand((), generator=generator)) < 0.5 else "dark"
        distance = torch.sqrt((canvas.y - (row - height // 2) * canvas.unit) ** 2
                              + (canvas.x - (col - width // 2) * canvas.unit) ** 2)
        on = torch.zeros(slices, 1, 1, dtype=torch.float64)
        on[chosen] = 1.0
        layers.append((bright if kind == "bright" else "fibrous", on * canvas.soft(radius * canvas.unit - distance)))
        boxes += [(s, LESION_LABELS[kind], row - offset[0] - reach, col - offset[1] - reach, 2 * reach + 1,
                   2 * reach + 1) for s in chosen]
    return layers, boxes


def _render(config: SynthConfig, index: int, acquisition: str | None = None
            ) -> tuple[torch.Tensor, list[tuple[int, str, int, int, int, int]]]:
    """Magnitude images (S, H, W) on the imaged matrix, float32, and the planted lesions' boxes."""
    layers_of, texture, grain = _ANATOMY[config.anatomy]
    generator = torch.Generator().manual_seed(_volume_seed(config, index))
    span = config.slices_per_volume / 16 * (0.8 + 0.4 * float(torch.rand((), generator=generator)))
    t = float(torch.rand((), generator=generator) - 0.5) * 0.3 \
        + span * torch.linspace(-0.5, 0.5, config.slices_per_volume, dtype=torch.float64)
    canvas = _Canvas(config.matrix or config.shape, config.shape, t, generator)
    layers = layers_of(canvas)
    modulation = 1 + texture * (canvas.field(0, 3) + canvas.field(grain, grain / 2)) / math.sqrt(2)
    acquisition = acquisition or config.acquisitions[index % len(config.acquisitions)]
    contrast = ACQUISITIONS[config.anatomy][acquisition]
    boxes: list[tuple[int, str, int, int, int, int]] = []
    if config.lesions:
        lesion_layers, boxes = _lesions(config, index, canvas, _paint(layers, contrast), contrast)
        layers = layers + lesion_layers
    image = _paint(layers, contrast) * modulation
    return image.clamp_min(0).to(torch.float32), boxes


def render_volume(config: SynthConfig, index: int, acquisition: str | None = None) -> torch.Tensor:
    """The magnitude images (S, H, W) of volume `index` on the imaged matrix, float32."""
    return _render(config, index, acquisition)[0]


def generate_volume(config: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Volume `index` of `config`: (kspace (S, C, H, W) complex64, target (S, h, w) float32, meta).

    meta["lesions"] lists the planted lesions' boxes (slice, label, top, left, height, width) in
    the target frame.
    """
    acquisition = config.acquisitions[index % len(config.acquisitions)]
    images, lesions = _render(config, index, acquisition)
    seed = _volume_seed(config, index)
    kspace, target, _ = simulate_kspace(images, num_coils=config.num_coils, seed=seed,
                                        snr_db=config.snr_db, oversample=config.oversample)
    target = center_crop(target, config.shape)
    meta = dict(anatomy=config.anatomy, acquisition=acquisition, seed=seed, lesions=lesions,
                patient_id=f"synth-{config.anatomy}-{config.split}-{config.seed}-{index:03d}")
    return kspace.numpy(), target.numpy(), meta


def synthesize(out_dir: str | Path, configs: str | SynthConfig | Sequence[SynthConfig] = DEFAULT_PRESET,
               *, seed: int | None = None) -> list[Path]:
    """Write fastMRI-layout files `out_dir/<anatomy>/<split>/file_<anatomy>_<index>.h5`; their paths.

    A config with lesions also writes `out_dir/<anatomy>/<split>/annotations.csv` (fastMRI+ format).

    `seed` replaces the configs' own seeds (another draw of patients with the same settings).
    """
    if isinstance(configs, str):
        if configs not in PRESETS:
            raise ConfigError("preset", f"unknown {configs!r}; choose from {sorted(PRESETS)}")
        configs = PRESETS[configs]
    elif isinstance(configs, SynthConfig):
        configs = [configs]
    if seed is not None:
        configs = [replace(c, seed=seed) for c in configs]
    folders = [(c.anatomy, c.split) for c in configs]
    if len(set(folders)) != len(folders):
        raise ConfigError("configs", "two configs write the same <anatomy>/<split> folder")
    paths = []
    for config in configs:
        boxes = []
        for index in range(config.num_volumes):
            kspace, target, meta = generate_volume(config, index)
            path = Path(out_dir) / config.anatomy / config.split / f"file_{config.anatomy}_{index:03d}.h5"
            boxes += [(path.stem, *box) for box in meta["lesions"]]
            paths.append(write_volume(
                path, kspace, target=target, acquisition=meta["acquisition"], patient_id=meta["patient_id"],
                recon_size=config.shape,
                attrs=dict(anatomy=config.anatomy, seed=meta["seed"], generator="mrirobust.data.synthetic",
                           snr_db=np.nan if config.snr_db is None else config.snr_db)))
        if config.lesions:
            write_fastmri_plus(boxes, Path(out_dir) / config.anatomy / config.split / "annotations.csv",
                               config.shape[0])
    return paths
