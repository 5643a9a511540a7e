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

from mrirobust.data.anatomy import brain, knee
from mrirobust.data.annotations import write_fastmri_plus
from mrirobust.data.fastmri import write_volume
from mrirobust.data.phantoms import Canvas, Leaves, paint, paint_leaves
from mrirobust.data.simulate import simulate_kspace
from mrirobust.errors import ConfigError
from mrirobust.physics.fft import center_crop

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


@dataclass(frozen=True)
class SynthConfig:
    """One split of one anatomy family: `num_volumes` patients of `slices_per_volume` slices.

    `shape` is the target (h, w); `matrix` the imaged matrix before readout oversampling
    (default `shape`; fastMRI knee: 320 x 368 for a 320 x 320 target). k-space is
    (2 * matrix[0] if oversample else matrix[0], matrix[1]). `acquisition`: one name or a tuple
    cycled over the volumes (None: all of the family's). `snr_db` as in `simulate_kspace`, plus
    the acquisition's offset (`SNR_OFFSET_DB`: fat-suppressed and FLAIR images are noisier) and a
    per-volume uniform draw in +-`snr_spread_db`; None: no noise.
    `lesions`: small planted lesions per volume (0: none, the files are as without the option).
    `detail` scales the random structure (dead leaves, 1/f texture, bias field): 1 gives the
    realistic images, 0 the smooth anatomy alone (a sparse image, for solver tests).
    `folder`: the dataset's folder under the output (default: the anatomy), e.g. a second "scanner".
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
    snr_spread_db: float = 0.0
    seed: int = 0
    lesions: int = 0
    detail: float = 1.0
    folder: str | None = None

    def __post_init__(self) -> None:
        if self.anatomy not in ACQUISITIONS:
            raise ConfigError("anatomy", f"unknown {self.anatomy!r}; choose from {sorted(ACQUISITIONS)}")
        for name in self.acquisitions:
            if name not in ACQUISITIONS[self.anatomy]:
                raise ConfigError("acquisition", f"unknown {name!r} for {self.anatomy}; "
                                                 f"choose from {sorted(ACQUISITIONS[self.anatomy])}")
        if self.lesions < 0:
            raise ConfigError("lesions", f"must be >= 0, got {self.lesions}")
        if not 0 <= self.detail <= 1:
            raise ConfigError("detail", f"must be in [0, 1], got {self.detail}")
        if min(self.num_volumes, self.slices_per_volume, self.num_coils) < 1:
            raise ConfigError("num_volumes/slices_per_volume/num_coils", "must be positive")
        if self.matrix is not None and (self.matrix[0] < self.shape[0] or self.matrix[1] < self.shape[1]):
            raise ConfigError("matrix", f"{self.matrix} is smaller than the target shape {self.shape}")

    @property
    def acquisitions(self) -> tuple[str, ...]:
        if self.acquisition is None:
            return tuple(ACQUISITIONS[self.anatomy])
        return (self.acquisition,) if isinstance(self.acquisition, str) else tuple(self.acquisition)


def _demo(anatomy: str, train: int, train_slices: int = 8) -> list[SynthConfig]:
    # 2x readout oversampling as in fastMRI: without it the anatomy runs into the k-space FOV's
    # edge along the readout, which no smooth coil-map model (ESPIRiT, SENSE) represents.
    # The test split carries planted lesions (with a fastMRI+ style annotations.csv) for the
    # annotated small-feature experiment. Val and test volumes have 8 slices each.
    return [SynthConfig(anatomy, split=split, num_volumes=n, slices_per_volume=slices, oversample=True,
                        snr_db=27.0, snr_spread_db=5.0, lesions=3 if split == "test" else 0)
            for split, n, slices in (("train", train, train_slices), ("val", 2, 8), ("test", 2, 8))]


PRESETS: dict[str, list[SynthConfig]] = {
    # Knees: 32 train volumes of 2 slices + 2 val + 2 test volumes of 8, brains 4 + 2 + 2 of 8 slices,
    # 8 coils, 320 x 160 k-space, 160 x 160 targets: CPU-sized. The demo trains its networks on
    # the 64 knee train slices (half as many gave networks too under-trained to beat zero-filling
    # on other anatomy); 32 patients of 2 slices instead of 8 of 8 train better at the same cost
    # (neighbouring slices are near copies). Val and test are unchanged by that.
    "demo": _demo("knee", 32, train_slices=2) + _demo("brain", 4) + [
        # A second knee "scanner" for the dataset shift: other patients, 4 coils, 5 dB less SNR.
        SynthConfig("knee", split="test", num_volumes=2, num_coils=4, oversample=True, snr_db=22.0,
                    snr_spread_db=5.0, seed=1, folder="knee-scanner2")],
    "fastmri-size": [
        SynthConfig("knee", split="val", num_volumes=2, slices_per_volume=8, num_coils=15,
                     shape=(320, 320), matrix=(320, 368), oversample=True),
        SynthConfig("brain", split="val", num_volumes=2, slices_per_volume=8, num_coils=16,
                     shape=(320, 320), matrix=(320, 320), oversample=True),
    ],
}
DEFAULT_PRESET = "demo"


# Dead-leaves populations per family (radii in units: the target's shorter side spans 2).
_LEAVES = {
    "knee": Leaves(candidates=3000, r_min=0.015, r_max=0.25, aspect=6.0, depth=2.5, spread=0.12,
                   tissues=(("", 0.93), ("fat", 0.025), ("fibrous", 0.025), ("fluid", 0.01), ("muscle", 0.01)),
                   tissue_radius=0.06),
    "brain": Leaves(candidates=2500, r_min=0.015, r_max=0.35, aspect=4.0, depth=2.0, spread=0.12,
                    tissues=(("", 0.95), ("csf", 0.02), ("wm", 0.015), ("gm", 0.015)), tissue_radius=0.04),
}
_SHAPES = {"knee": knee, "brain": brain}
# Per-acquisition SNR relative to `SynthConfig.snr_db` (suppressing a bright tissue costs signal).
SNR_OFFSET_DB = {"CORPD_FBK": 0.0, "CORPDFS_FBK": -5.0, "AXT2": 0.0, "AXFLAIR": -4.0, "AXT1": -2.0}


def _contrast(acquisition: str, anatomy: str, generator: torch.Generator) -> dict[str, float]:
    """The acquisition's tissue intensities with this volume's jitter (relaxation times and
    sequence parameters differ between patients and scanners)."""
    table = ACQUISITIONS[anatomy][acquisition]
    jitter = torch.exp(0.12 * torch.randn(len(table), generator=generator, dtype=torch.float64))
    return {tissue: value * float(j) for (tissue, value), j in zip(sorted(table.items()), jitter)}


def _volume_seed(config: SynthConfig, index: int) -> int:
    """A patient's seed: stable across runs and platforms, different per anatomy/split/index."""
    key = [config.seed, zlib.crc32(config.anatomy.encode()), zlib.crc32(config.split.encode()), index]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


LESION_LABELS = {"bright": "Synthetic lesion - bright", "dark": "Synthetic lesion - dark"}


def _lesions(config: SynthConfig, index: int, canvas: Canvas, image: torch.Tensor, contrast: dict[str, float]
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
    generator = torch.Generator().manual_seed(_volume_seed(config, index))
    spacing = 0.05 + 0.06 * float(torch.rand((), generator=generator))  # slice spacing in organ units
    middle = 0.75 * float(2 * torch.rand((), generator=generator) - 1)
    t = middle + spacing * (torch.arange(config.slices_per_volume, dtype=torch.float64)
                            - (config.slices_per_volume - 1) / 2)
    canvas = Canvas(config.matrix or config.shape, config.shape, t, generator)
    layers, body = _SHAPES[config.anatomy](canvas)
    acquisition = acquisition or config.acquisitions[index % len(config.acquisitions)]
    contrast = _contrast(acquisition, config.anatomy, torch.Generator().manual_seed(_volume_seed(config, index) ^ 7))
    image = paint(layers, contrast).expand(len(t), *canvas.matrix).clone()
    if config.detail:
        leaves = _LEAVES[config.anatomy]
        image = paint_leaves(canvas, image, body, replace(leaves, spread=leaves.spread * config.detail), contrast)
    symmetric = 0.8 if config.anatomy == "brain" else 0.0
    texture = config.detail * canvas.uniform(0.03, 0.1) * canvas.fractal(canvas.uniform(2.0, 3.0), symmetric=symmetric)
    bias = config.detail * canvas.uniform(0.05, 0.25) * canvas.field(0, 1.5)
    boxes: list[tuple[int, str, int, int, int, int]] = []
    if config.lesions:
        lesion_layers, boxes = _lesions(config, index, canvas, image, contrast)
        for tissue, opacity in lesion_layers:
            image = image + opacity * (contrast[tissue] - image)
    image = image * (1 + texture) * torch.exp(bias)
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
    draws = torch.rand(2, generator=torch.Generator().manual_seed(seed ^ 0x5A1), dtype=torch.float64).tolist()
    snr_db = None if config.snr_db is None else \
        config.snr_db + SNR_OFFSET_DB[acquisition] + config.snr_spread_db * (2 * draws[0] - 1)
    kspace, target, _ = simulate_kspace(images, num_coils=config.num_coils, seed=seed, snr_db=snr_db,
                                        oversample=config.oversample, coil_radius=1.25 + 0.75 * draws[1])
    target = center_crop(target, config.shape)
    meta = dict(anatomy=config.anatomy, acquisition=acquisition, seed=seed, lesions=lesions, snr_db=snr_db,
                patient_id=f"synth-{config.anatomy}-{config.split}-{config.seed}-{index:03d}")
    return kspace.numpy(), target.numpy(), meta


def synthesize(out_dir: str | Path, configs: str | SynthConfig | Sequence[SynthConfig] = DEFAULT_PRESET,
               *, seed: int | None = None) -> list[Path]:
    """Write fastMRI-layout files `out_dir/<folder>/<split>/file_<anatomy>_<index>.h5`; their paths.

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
    folders = [(c.folder or c.anatomy, c.split) for c in configs]
    if len(set(folders)) != len(folders):
        raise ConfigError("configs", "two configs write the same <folder>/<split> folder")
    paths = []
    for config in configs:
        boxes = []
        for index in range(config.num_volumes):
            kspace, target, meta = generate_volume(config, index)
            folder = Path(out_dir) / (config.folder or config.anatomy) / config.split
            path = folder / f"file_{config.anatomy}_{index:03d}.h5"
            boxes += [(path.stem, *box) for box in meta["lesions"]]
            paths.append(write_volume(
                path, kspace, target=target, acquisition=meta["acquisition"], patient_id=meta["patient_id"],
                recon_size=config.shape,
                attrs=dict(anatomy=config.anatomy, seed=meta["seed"], generator="mrirobust.data.synthetic",
                           snr_db=np.nan if meta["snr_db"] is None else meta["snr_db"])))
        if config.lesions:
            write_fastmri_plus(boxes, folder / "annotations.csv", config.shape[0])
    return paths
