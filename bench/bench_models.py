"""Forward time of our U-net and VarNet against fastmri's models, same weights and input, one run.

Run: python bench/bench_models.py [--repeats 3] [--device cpu] [--threads N]
Full-size configs: U-net chans 32, 4 pools on one 320x320 image; VarNet 12 cascades, chans 18,
4 pools, sens_chans 8, sens_pools 4 on one slice of 15 coils x 640 x 368 with a 4x random mask.
Prints the median seconds under torch.no_grad, the max abs difference and fastmri/ours per model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from fastmri.models import Unet as FastmriUnet
from fastmri.models import VarNet as FastmriVarNet

from mrirobust.methods.unet import Unet
from mrirobust.methods.varnet import VarNet
from mrirobust.physics.masks import mask_spec

COILS, H, W = 15, 640, 368


def median_time(step: Callable[[], torch.Tensor], repeats: int, sync: Callable[[], None]) -> tuple[float, torch.Tensor]:
    out = step()  # warm-up: allocations, kernel selection
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def compare(label: str, ours: Callable[[], torch.Tensor], theirs: Callable[[], torch.Tensor], repeats: int,
            sync: Callable[[], None]) -> None:
    with torch.no_grad():
        t_ours, out_ours = median_time(ours, repeats, sync)
        t_theirs, out_theirs = median_time(theirs, repeats, sync)
    diff = (out_ours - out_theirs).abs().max().item()
    print(f"{label}: ours {t_ours:.3f} s, fastmri {t_theirs:.3f} s, fastmri/ours {t_theirs / t_ours:.2f}x, "
          f"max |diff| {diff:.2e} (output max {out_theirs.abs().max().item():.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, median of {args.repeats} after a warm-up")

    torch.manual_seed(0)
    unet_ref = FastmriUnet(1, 1, chans=32, num_pool_layers=4).to(device).eval()
    unet = Unet(1, 1, chans=32, num_pool_layers=4).to(device).eval()
    unet.load_state_dict(unet_ref.state_dict())
    image = torch.randn(1, 1, 320, 320, generator=generator).to(device)
    compare("U-net 320x320", lambda: unet(image), lambda: unet_ref(image), args.repeats, sync)

    torch.manual_seed(0)
    varnet_ref = FastmriVarNet().to(device).eval()
    varnet = VarNet().to(device).eval()
    varnet.load_state_dict(varnet_ref.state_dict())
    column, low = mask_spec("random", 0.08, 4).sample(W, seed=(0,))
    mask = column.reshape(1, 1, 1, W).to(device)
    kspace = (torch.randn(1, COILS, H, W, dtype=torch.complex64, generator=generator) * 1e-4).to(device) * mask
    real_kspace, real_mask = torch.view_as_real(kspace), mask[..., None]
    compare(f"VarNet {COILS}x{H}x{W}", lambda: varnet(kspace, mask, low),
            lambda: varnet_ref(real_kspace, real_mask, low), args.repeats, sync)


if __name__ == "__main__":
    main()
