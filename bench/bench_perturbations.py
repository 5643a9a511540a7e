"""Perturbations per second at fastMRI size next to one reconstruction, measured in the same run.

Run: python bench/bench_perturbations.py [--repeats 5] [--device cpu] [--batch 1]
Prints one line per kind: median seconds per call, calls per second, and the cost in units of one
multi-coil FFT pair (fft2c + ifft2c of all coils) and of one zero-filled reconstruction.
"""

from __future__ import annotations

import argparse

import torch
from bench_operator import median_time  # bench/bench_operator.py

from mrirobust.methods.baselines import ZeroFilled
from mrirobust.physics import perturbations as P
from mrirobust.physics.coils import birdcage_maps
from mrirobust.physics.fft import fft2c, ifft2c
from mrirobust.physics.masks import mask_spec

COILS, H, W = 15, 640, 368
SPECS = [P.make(kind, 0.5, seed=1) for kind in P.KINDS if kind != "sampling"] + [
    P.make("coils", 0.5, seed=1, mode="gain"),
]
MASK_SPECS = [P.make("sampling", 0.5, seed=1, mask_kind=kind) for kind in P.SAMPLING_KINDS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    y = torch.linspace(-1, 1, H, device=device)[:, None]
    x = torch.linspace(-1, 1, W, device=device)[None, :]
    image = (torch.exp(-(y**2 / 0.3 + x**2 / 0.2)) * torch.exp(1j * (x + y))).to(torch.complex64)
    maps = birdcage_maps(COILS, (H, W), device=device)[None].expand(args.batch, -1, -1, -1)
    kspace = fft2c(maps * image)
    mask, _ = mask_spec("random", 0.08, 4).sample(W, seed=0, device=device)
    method = ZeroFilled()

    fft_pair = median_time(lambda: ifft2c(fft2c(kspace)), args.repeats, sync)
    recon = median_time(lambda: method.reconstruct(kspace * mask, mask), args.repeats, sync)
    print(f"{args.batch}x{COILS}x{H}x{W} complex64 on {device}, median of {args.repeats}: "
          f"FFT pair {fft_pair * 1e3:.1f} ms, zero-filled {recon * 1e3:.1f} ms")
    for spec in SPECS:
        seconds = median_time(lambda: P.perturb(kspace, spec, maps=maps, mask=mask), args.repeats, sync)
        label = spec.kind + (f"[{spec.mode}]" if isinstance(spec, P.CoilFault) else "")
        print(f"  {label:12s} {seconds * 1e3:8.1f} ms  {args.batch / seconds:7.2f} slices/s  "
              f"{seconds / fft_pair:5.2f} FFT pairs  {seconds / recon:5.2f} zero-filled")
    for spec in MASK_SPECS:
        seconds = median_time(lambda: P.perturb_mask(mask, spec, shape=(H, W)), args.repeats, sync)
        print(f"  sampling[{spec.mask_kind}] mask {seconds * 1e3:8.1f} ms ({seconds / recon:5.2f} zero-filled)")


if __name__ == "__main__":
    main()
