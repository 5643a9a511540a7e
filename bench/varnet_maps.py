"""Are a trained VarNet's coil maps and cascades any good? (the diagnosis behind `residual`)

    python bench/varnet_maps.py CHECKPOINT [--spec '{"name": "varnet-small"}'] [--data DIR]
                                [--real FILE] [--images 6]

On the sets `bench/realism.py` scores (knee-test and brain-test of the demo data in DIR, which
`bench/realism.py --out OUT` writes to OUT/data, and `--real` images through the images ->
k-space path), at 4x (random mask, centre 0.08), prints per set the mean over slices of

- the fraction of the fully sampled coil images' energy outside the span of the coil maps,
  ||x_c - S_c sum_c' conj(S_c') x_c'||^2 / ||x||^2 over the target crop, for the network's maps,
  the ACS coil images over their RSS (what a `residual` network starts from) and ESPIRiT;
- SSIM (fastMRI's volume-max variant) of the RSS image after each cascade (0: the input).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from realism import SPEC, _real_set, _spread

from mrirobust.data.dataset import SliceDataset
from mrirobust.data.sample import Sample, draw_mask
from mrirobust.methods.base import build
from mrirobust.methods.varnet import VarnetRecon
from mrirobust.metrics import ssim
from mrirobust.physics.combine import rss
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.fft import center_crop, ifft2c


def outside_span(maps: torch.Tensor, coils: torch.Tensor) -> float:
    """Share of the coil images' energy that the maps cannot represent."""
    residual = coils - maps * (coils * maps.conj()).sum(1, keepdim=True)
    return float(residual.abs().square().sum() / coils.abs().square().sum())


@torch.no_grad()
def diagnose(method: VarnetRecon, sample: Sample) -> tuple[list[float], list[float]]:
    """([outside_span of network, ACS and ESPIRiT maps], [SSIM after each cascade]) for one slice."""
    mask, _ = draw_mask(sample, SPEC)
    masked, mask, _ = method._inputs(sample.kspace[None], mask)
    model = method.model.eval()
    maps = model.sens_net(masked, mask)
    acs = ifft2c(model.sens_net.calibration(masked, mask))

    def crop(x: torch.Tensor) -> torch.Tensor:
        return center_crop(x, sample.target.shape)

    coils = crop(ifft2c(sample.kspace[None]))
    spans = [outside_span(crop(m), coils) for m in (maps, acs / rss(acs, dim=1)[:, None], espirit_maps(masked))]
    kspace, scores = masked, []
    for cascade in [None, *model.cascades]:
        kspace = kspace if cascade is None else cascade(kspace, masked, mask, maps)
        image = crop(rss(ifft2c(kspace), dim=1))
        scores.append(float(ssim(sample.target[None], image, torch.tensor([sample.meta.max_value]))))
    return spans, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--spec", default='{"name": "varnet-small"}', help="the method spec (JSON)")
    parser.add_argument("--data", type=Path, default=Path("out/bench-realism/data"))
    parser.add_argument("--real", type=Path, help="real magnitude images: a folder or one file")
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args()
    method = build({**json.loads(args.spec), "checkpoint": args.checkpoint})
    with tempfile.TemporaryDirectory() as tmp:
        sets = {name: SliceDataset(args.data / family / "test") for name, family in
                (("knee-test", "knee"), ("brain-test", "brain"))}
        sets = {name: [d[i] for i in _spread(args.images, len(d))] for name, d in sets.items()}
        if args.real:
            real = _real_set(args.real, args.images, Path(tmp))
            sets[f"real:{args.real.name}"] = [real[i] for i in range(len(real))]
        for name, samples in sets.items():
            spans, scores = (np.array(x) for x in zip(*(diagnose(method, s) for s in samples)))
            network, acs, espirit = spans.mean(0)
            print(f"{name:>20} outside span: network {network:.3f} ACS {acs:.3f} ESPIRiT {espirit:.3f} | "
                  f"SSIM by cascade " + " ".join(f"{v:.3f}" for v in scores.mean(0)) + f" n={len(samples)}",
                  flush=True)


if __name__ == "__main__":
    main()
