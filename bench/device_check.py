"""One prepared GPU check: CPU-vs-GPU agreement, fastMRI-size timings, and the demo on the device.

    bash bench/device_check.sh [--dry-run] [--out bench/results-gpu.json] [--device cuda]

Parts run in order, each failing soft (its exception is recorded and the next part runs), under
one time budget (450 s at full size, so the whole command ends inside 8 minutes; `--budget`): a
part whose reserve no longer fits is recorded as skipped, the demos get the time that is left. The JSON is rewritten
(atomically) after every part, so even a killed run leaves the parts done so far.

1. agreement: the same seeded inputs and weights on the CPU and the device, max |cpu - device| /
   max |cpu| against a stated tolerance, for the FFT, operator, ESPIRiT, l1, U-net, VarNet,
   ConvDecoder, the PGD gradient and torch SSIM (TF32 off, so float32 should agree to ~1e-6).
2. timings at fastMRI size (15 coils, 640 x 368; TF32 at torch's defaults): ESPIRiT slices/s
   batched, the operator, l1 slices/s at 100 iterations batched, VarNet forward and one PGD step,
   ConvDecoder iterations/s (B = 1 and batched), heat-map placements/s.
3. `mrirobust demo --quick` and `mrirobust demo` on the device (subprocesses with a timeout; the
   store's per-job seconds are recorded even when the timeout cuts the demo short).

`--dry-run` runs the same code on the CPU at tiny sizes in well under a minute (a test runs it);
there the demos are replaced by `mrirobust --help` through the same subprocess runner.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

import mrirobust
from mrirobust.atomic import atomic_path
from mrirobust.data.simulate import simulate_kspace
from mrirobust.data.synthetic import SynthConfig, render_volume
from mrirobust.methods.base import build, checked_reconstruct
from mrirobust.metrics import ssim
from mrirobust.physics.espirit import espirit_maps
from mrirobust.physics.fft import fft2c, ifft2c
from mrirobust.physics.masks import mask_spec
from mrirobust.physics.operator import MultiCoilOperator
from mrirobust.robustness.attack_settings import PgdSettings
from mrirobust.robustness.attacks import pgd
from mrirobust.robustness.features import heatmap_boxes, insert_features
from timing import median_time  # bench/timing.py


@dataclass(frozen=True)
class Sizes:
    """Problem sizes and budgets of one run (full: fastMRI knee size; tiny: the dry run)."""

    coils: int
    matrix: tuple[int, int]  # before the 2x readout oversampling: k-space is (2 h, w)
    batch: int
    l1_iters: int
    varnet: str
    convdecoder: str
    convdecoder_iters: int
    placements: int
    budget_s: float  # the whole run's; `--budget` overrides it
    reserve_scale: float  # of RESERVE_S, the time a part needs to be started


FULL = Sizes(15, (320, 368), batch=8, l1_iters=100, varnet="varnet", convdecoder="convdecoder",
             convdecoder_iters=20, placements=32, budget_s=450, reserve_scale=1.0)
TINY = Sizes(4, (32, 96), batch=2, l1_iters=3, varnet="varnet-small", convdecoder="convdecoder-small",
             convdecoder_iters=2, placements=2, budget_s=50, reserve_scale=0.1)
TOLERANCES = {"fft": 1e-5, "operator": 1e-5, "espirit": 1e-3, "l1": 1e-4, "unet": 1e-4, "varnet": 1e-4,
              "convdecoder": 1e-3, "pgd": 1e-3, "ssim": 1e-5}
RESERVE_S = {"agreement": 60, "timings": 150, "demo-quick": 60, "demo": 90}  # full size; the dry run scales them


@dataclass
class Data:
    """Seeded measurements on the CPU: fully sampled k-space (B, C, 2h, w), column mask, maps, targets."""

    full: torch.Tensor
    mask: torch.Tensor
    maps: torch.Tensor
    targets: torch.Tensor

    @property
    def measured(self) -> torch.Tensor:
        return self.full * self.mask


def make_data(sizes: Sizes, device: torch.device) -> Data:
    config = SynthConfig(anatomy="knee", shape=(sizes.matrix[0], sizes.matrix[0]), matrix=sizes.matrix,
                         slices_per_volume=sizes.batch)
    full, _, _ = simulate_kspace(render_volume(config, 0), num_coils=sizes.coils, seed=0, snr_db=25, oversample=True)
    mask, _ = mask_spec("random", 0.08, 4).sample(full.shape[-1], seed=0)
    maps = espirit_maps((full * mask).to(device)).cpu()  # on the device: the CPU is slow at full size
    targets = ifft2c(full).abs().square().sum(dim=1).sqrt()
    return Data(full, mask, maps, targets)


def seeded(name: str, **settings: Any) -> Any:
    """A method with weights drawn from torch's CPU generator at seed 0 (the same on every device)."""
    torch.manual_seed(0)
    return build(name, **settings)


def relative_difference(reference: torch.Tensor, other: torch.Tensor) -> float:
    reference, other = reference.detach().cpu(), other.detach().cpu()
    return float((reference - other).abs().max() / reference.abs().max().clamp_min(1e-30))


def agreement_checks(data: Data) -> dict[str, Callable[[torch.device], torch.Tensor]]:
    """name -> f(device): the same computation from the same CPU inputs, output on that device."""
    one = Data(data.full[:1], data.mask, data.maps[:1], data.targets[:1])
    y, mask = one.measured, one.mask
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(y.shape, generator=generator, dtype=y.dtype) * mask * (0.05 * y.abs().max())

    def operator(d: torch.device) -> torch.Tensor:
        op = MultiCoilOperator(one.maps.to(d), mask.to(d))
        return torch.cat([op.forward(op.adjoint(y.to(d))).flatten(), op.adjoint(y.to(d)).flatten()])

    def espirit(d: torch.device) -> torch.Tensor:  # the combined image: free of the maps' phase ambiguity
        return (espirit_maps(y.to(d)).conj() * ifft2c(one.full.to(d))).sum(dim=1).abs()

    def network(name: str, d: torch.device) -> torch.Tensor:
        return checked_reconstruct(seeded(name), y.to(d), mask.to(d))

    def pgd_gradient(d: torch.device) -> torch.Tensor:  # the gradient one PGD step follows
        method, measured = seeded("unet-small"), y.to(d)
        clean = checked_reconstruct(method, measured, mask.to(d)).detach()
        perturbation = z.to(d).requires_grad_()
        change = checked_reconstruct(method, measured + perturbation, mask.to(d)) - clean
        (grad,) = torch.autograd.grad(0.5 * change.square().sum(), perturbation)
        return grad

    def structural(d: torch.device) -> torch.Tensor:
        target = one.targets.to(d)
        noisy = target + 0.05 * target.max() * torch.rand(target.shape, generator=generator.manual_seed(2)).to(d)
        return ssim(target, noisy, target.max())

    return {
        "fft": lambda d: fft2c(y.to(d)),
        "operator": operator,
        "espirit": espirit,
        "l1": lambda d: seeded("l1", iters=20).reconstruct(y.to(d), mask.to(d), maps=one.maps.to(d)),
        "unet": lambda d: network("unet-small", d),
        "varnet": lambda d: network("varnet-small", d),  # the architecture's code; the full size is timed
        "convdecoder": lambda d: seeded("convdecoder-small", iters=3).reconstruct(y.to(d), mask.to(d)),
        "pgd": pgd_gradient,
        "ssim": structural,
    }


def run_agreement(data: Data, device: torch.device) -> dict[str, Any]:
    precision = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    results: dict[str, Any] = {}
    try:
        for name, compute in agreement_checks(data).items():
            try:
                difference = relative_difference(compute(torch.device("cpu")), compute(device))
                results[name] = {"relative_max_difference": difference, "tolerance": TOLERANCES[name],
                                 "status": "ok" if difference <= TOLERANCES[name] else "mismatch"}
            except Exception as error:  # fail soft per check
                results[name] = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = precision
    return {"status": "ok" if all(r["status"] == "ok" for r in results.values()) else "mismatch", "checks": results}


def seconds(step: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    """Median wall time of `step` after one warm-up, synchronising the device around each run."""
    return median_time(step, repeats, torch.cuda.synchronize if device.type == "cuda" else (lambda: None))


def run_timings(data: Data, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Throughput at `sizes`; every entry names its batch and unit."""
    batch = data.full.shape[0]
    y, mask, maps = data.measured.to(device), data.mask.to(device), data.maps.to(device)
    op = MultiCoilOperator(maps, mask)
    out: dict[str, Any] = {"shape": list(data.full.shape), "batch": batch}
    with torch.no_grad():
        t = seconds(lambda: espirit_maps(y), device, repeats=1)
        out["espirit"] = {"slices_per_s": batch / t, "ms_per_slice": 1e3 * t / batch}
        image = op.adjoint(y)
        t = seconds(lambda: op.adjoint(op.forward(image)), device, repeats=10)
        out["operator_forward_adjoint"] = {"ms_per_slice": 1e3 * t / batch}
        l1 = build("l1", iters=sizes.l1_iters)
        t = seconds(lambda: l1.reconstruct(y, mask, maps=maps), device, repeats=1)
        out["l1"] = {"iters": sizes.l1_iters, "slices_per_s": batch / t}
        varnet = seeded(sizes.varnet)
        t = seconds(lambda: checked_reconstruct(varnet, y[:1], mask), device)
        out["varnet_forward"] = {"name": sizes.varnet, "s_per_slice": t}
        shape = (sizes.matrix[0], sizes.matrix[0])  # the target frame (the centre crop)
        boxes = heatmap_boxes(shape, 3, 4)[:sizes.placements].to(device)
        for name in ("unet-small", sizes.varnet):
            method = seeded(name)
            featured = insert_features(data.full[0].to(device), maps[:1], boxes, 1.0, shape) * mask
            t = seconds(lambda: checked_reconstruct(method, featured, mask, target_shape=shape), device, repeats=1)
            out[f"heatmap_{name}"] = {"placements": len(boxes), "placements_per_s": len(boxes) / t}
    steps = {k: seconds(lambda k=k: pgd(varnet, y[:1], mask, 0.05, PgdSettings(steps=k)), device, repeats=1)
             for k in (1, 2)}
    out["varnet_pgd_step"] = {"name": sizes.varnet, "s_per_step": steps[2] - steps[1], "s_pgd_1_step": steps[1]}
    decoder = seeded(sizes.convdecoder)
    for fit_batch in (1, min(4, batch)):
        decoder.fit(y[:fit_batch], mask, iters=1)  # warm-up
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        decoder.fit(y[:fit_batch], mask, iters=sizes.convdecoder_iters)
        sync()
        rate = sizes.convdecoder_iters / (time.perf_counter() - start)
        out[f"convdecoder_b{fit_batch}"] = {"name": sizes.convdecoder, "iterations_per_s": rate,
                                            "slice_iterations_per_s": rate * fit_batch}
    return out


def run_command(args: list[str], timeout_s: float, store: Path | None = None) -> dict[str, Any]:
    """A subprocess with a timeout: its seconds, exit code, output tail and the store's per-job seconds."""
    start = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=max(timeout_s, 1))
        result: dict[str, Any] = {"status": "ok" if done.returncode == 0 else "failed", "returncode": done.returncode,
                                  "tail": (done.stdout + done.stderr)[-400:]}
    except subprocess.TimeoutExpired:
        result = {"status": "timeout", "timeout_s": timeout_s}
    result["seconds"] = time.perf_counter() - start
    if store is not None and (store / "jobs").is_dir():
        records = [json.loads(p.read_text()) for p in sorted((store / "jobs").glob("*.json"))]
        result["jobs"] = {f"{r.get('kind', '?')}:{r.get('name', p)}": r.get("seconds") for p, r in
                          zip(sorted((store / "jobs").glob("*.json")), records)}
    return result


def run_demo(quick: bool, device: torch.device, timeout_s: float, dry_run: bool) -> dict[str, Any]:
    cli = [sys.executable, "-m", "mrirobust.cli"]
    if dry_run:
        return run_command(cli + ["--help"], timeout_s)
    out = Path(tempfile.mkdtemp(prefix="device-check-demo-"))
    return run_command(cli + ["demo", "--out", str(out), "--device", str(device)] + (["--quick"] if quick else []),
                       timeout_s, store=out / "store")


class Report:
    """The JSON record: environment, then one entry per part, rewritten after every part."""

    def __init__(self, path: Path, sizes: Sizes, device: torch.device, dry_run: bool) -> None:
        self.path, self.start, self.deadline = path, time.perf_counter(), time.perf_counter() + sizes.budget_s
        self.scale = sizes.reserve_scale
        if device.type != "cuda":
            name = platform.processor() or "cpu"
        else:  # no GPU: every part then fails soft and says why
            name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA NOT AVAILABLE"
        self.data: dict[str, Any] = {
            "dry_run": dry_run, "device": str(device), "device_name": name, "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "mrirobust": mrirobust.__version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sizes": asdict(sizes),
            "budget_s": sizes.budget_s, "parts": {},
        }

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def part(self, name: str, compute: Callable[[float], dict[str, Any]]) -> None:
        """Run one part if its reserve fits the time left; record its result or its error."""
        reserve = RESERVE_S[name] * self.scale
        start = time.perf_counter()
        if self.left() < reserve:
            entry: dict[str, Any] = {"status": "skipped", "reason": f"{self.left():.0f} s left, {reserve:.0f} s needed"}
        else:
            try:
                entry = {"status": "ok", **compute(self.left())}
            except Exception as error:  # fail soft: record and go on
                entry = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                         "traceback": traceback.format_exc()[-1500:]}
        entry["part_seconds"] = time.perf_counter() - start
        self.data["parts"][name] = entry
        self.data["total_s"] = time.perf_counter() - self.start
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        print(f"[{self.data['total_s']:6.1f} s] {name}: {entry['status']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, under a minute")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results-gpu.json"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole run (default {FULL.budget_s:.0f}; a short rerun: e.g. 200)")
    args = parser.parse_args(argv)
    sizes = TINY if args.dry_run else FULL
    if args.budget is not None:
        sizes = replace(sizes, budget_s=args.budget)
    device = torch.device("cpu" if args.dry_run else args.device)
    report = Report(args.out, sizes, device, args.dry_run)
    data = make_data(sizes, device)
    report.part("agreement", lambda left: run_agreement(data, device))
    report.part("timings", lambda left: run_timings(data, sizes, device))
    quick_share = RESERVE_S["demo-quick"] / (RESERVE_S["demo-quick"] + RESERVE_S["demo"])
    report.part("demo-quick", lambda left: run_demo(True, device, left * quick_share, args.dry_run))
    report.part("demo", lambda left: run_demo(False, device, left - 5, args.dry_run))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
