"""The `mrirobust` command line.

Every user-causable error is printed as one line without a traceback and exits with status 2
(130 after Ctrl-C): `clean_errors.run_cleanly` wraps every command.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from mrirobust.atomic import check_output
from mrirobust.clean_errors import EXIT_ERROR, report, run_cleanly
from mrirobust.devices import resolve_device
from mrirobust.errors import ConfigError
from mrirobust.study import EXECUTORS


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (a flag's type, a missing argument) as the project's one line."""

    def error(self, message: str) -> NoReturn:
        report(f"error: {self.prog}: {message} (see {self.prog} --help)")
        sys.exit(EXIT_ERROR)


def _number(kind: type, low: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a finite int/float, >= low, checked at parse time."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low:g}")
        return value
    return parse


COUNT, FINITE = _number(int, 1), _number(float)


def _mask_for(dataset: Any, args: argparse.Namespace) -> Any:
    """The --mask-type/--acceleration/--center-fraction mask, checked against the data's width."""
    from mrirobust.experiments.base import check_data
    from mrirobust.physics.masks import MaskSpec

    try:
        spec = MaskSpec(args.mask_type, (args.center_fraction,), (args.acceleration,))
        check_data(dataset, spec)
    except ConfigError as error:
        flag = {"accelerations": "--acceleration", "mask.acceleration": "--acceleration",
                "center_fractions": "--center-fraction"}.get(error.field)
        raise ConfigError(flag or f"--{error.field.replace('_', '-')}", error.problem) from None
    return spec


def _methods(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--methods", "name at least one method")
    return names


def cmd_data_synth(args: argparse.Namespace) -> None:
    from mrirobust.data.synthetic import synthesize

    check_output(args.out, folder=True)
    paths = synthesize(args.out, args.preset, seed=args.seed)
    print(f"wrote {len(paths)} files to {args.out}")


def cmd_data_info(args: argparse.Namespace) -> None:
    from mrirobust.data.dataset import describe

    print(json.dumps(describe(args.path), indent=2, default=str))


def cmd_data_from_images(args: argparse.Namespace) -> None:
    from mrirobust.data.images import ImageSimulation, images_to_fastmri

    check_output(args.out, folder=True)
    paths = images_to_fastmri(args.src, args.out, ImageSimulation(
        num_coils=args.coils, snr_db=args.snr_db, oversample=args.oversample, seed=args.seed,
        shading=not args.no_shading, acquisition=args.acquisition, anatomy=args.anatomy))
    print(f"wrote {len(paths)} files to {args.out}")


def cmd_data_import(args: argparse.Namespace) -> None:
    from mrirobust.data.importer import import_kspace

    check_output(args.out, folder=True)
    paths = import_kspace(args.src, args.out, mask=args.mask, acquisition=args.acquisition, anatomy=args.anatomy)
    print(f"wrote {len(paths)} files to {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from mrirobust.data.dataset import SliceDataset
    from mrirobust.methods.base import describe, parse_spec
    from mrirobust.workflows.train import TrainConfig, train

    spec = parse_spec(args.method)
    method = describe(spec)  # checked before any data is read; train() builds it under the seed
    check_output(args.out, folder=True)
    resolve_device(args.device, "--device")
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, loss=args.loss,
        acceleration=args.acceleration, center_fraction=args.center_fraction, mask_type=args.mask_type,
        seed=args.seed, device=args.device, amp=args.amp, num_workers=args.workers,
        max_train_slices=args.max_slices, max_val_slices=args.max_slices, jitter=args.jitter,
        adversarial=args.adversarial, adversarial_steps=args.adversarial_steps, augment=args.augment,
    )
    data = SliceDataset(args.data, slices=args.slices)
    val = SliceDataset(args.val, slices=args.slices) if args.val else None
    for dataset in (data, val) if val is not None else (data,):
        _mask_for(dataset, args)
    result = train(spec, data, val, args.out, config)
    print(f"checkpoints: {result.last} (last), {result.best} (best); "
          f"use it with --methods {method.name}={result.best}")


def cmd_tune(args: argparse.Namespace) -> None:
    from mrirobust.data.dataset import SliceDataset
    from mrirobust.methods.base import parse_spec
    from mrirobust.workflows.tune import default_grid, parse_grid, save_config, tune

    base = parse_spec(args.method)
    grid = parse_grid(args.grid) if args.grid else default_grid(base)
    check_output(args.out)
    resolve_device(args.device, "--device")
    dataset = SliceDataset(args.data, slices=args.slices)
    spec = _mask_for(dataset, args)
    samples = [dataset[i] for i in range(min(len(dataset), args.limit or len(dataset)))]
    result = tune(base, grid, samples, spec, device=args.device, batch_size=args.batch_size)
    path = save_config(result.best, args.out, note=(
        f"tuned by `mrirobust tune` on {args.data} ({len(samples)} slices, {spec.describe()}): "
        f"mean SSIM {result.best_ssim:.4f}"))
    print(f"best mean SSIM {result.best_ssim:.4f} with {result.best}; wrote {path}")
    for warning in result.on_edge:
        print(f"warning: {warning}", file=sys.stderr)


# Experiment commands: (command, sub-command) -> experiment kind. Their flags are the spec's fields.
EXPERIMENT_COMMANDS = {
    ("recon", None): "recon", ("attack", None): "attack",
    ("features", "heatmap"): "heatmap", ("features", "sizes"): "feature_sizes",
    ("features", "annotated"): "annotated",
    ("shift", "dataset"): "dataset_shift", ("shift", "anatomy"): "anatomy_shift", ("shift", "hard"): "hard_shift",
    ("perturb", None): "perturb",
}


def cmd_experiment(args: argparse.Namespace) -> None:
    """Run one experiment through the study runner (same resume, store and report as `study`)."""
    from mrirobust.experiments.base import experiment_type
    from mrirobust.findings import CLAIMS
    from mrirobust.report.registry import kind_report
    from mrirobust.study.runner import run_with_report, study_findings
    from mrirobust.study.store import Store
    from mrirobust.study.wrap import one_experiment_study

    resolve_device(args.device, "--device")
    cls = experiment_type(args.kind)
    study = one_experiment_study(cls, args)
    try:
        report = run_with_report(study, args.out, device=args.device, progress=True)
    except ConfigError as error:  # a spec field named by the study's path: the command's flag
        field = error.field.removeprefix(f"experiments.{args.kind}.")
        raise ConfigError(field if field == error.field else "--" + field.replace("_", "-"), error.problem) from None
    store = Store(Path(args.out) / "store")
    (entry,) = [j for j in store.plan()["jobs"] if j["kind"] == args.kind]
    summary = kind_report(args.kind)
    rows = store.rows(entry["key"])
    if summary is not None and rows:
        print(summary.text(rows, store.artefacts(entry["key"])))
    for verdict in study_findings(args.out):  # the paper's claims this kind decides
        if CLAIMS[verdict.claim][0] == args.kind:
            print(verdict.line())
    print(f"rows: {Path(args.out) / 'results.csv'}; figures: {report}")


def cmd_demo(args: argparse.Namespace) -> None:
    from mrirobust.demo import run_demo

    run_demo(args.out, quick=args.quick, device=args.device, executor=args.executor)


def cmd_card(args: argparse.Namespace) -> None:
    from mrirobust.card import CardRequest, run_card

    resolve_device(args.device, "--device")
    card = run_card(CardRequest(args.method, args.data, args.data2, args.unet_checkpoint, args.preset), args.out,
                    device=args.device)
    print("\n".join(v["line"] for v in json.loads((card.parent / "card.json").read_text())["verdicts"]))
    print(f"card: {card} and {card.parent / 'card.json'}")


def cmd_study(args: argparse.Namespace) -> None:
    from mrirobust.study.config import load_study
    from mrirobust.study.runner import describe_plan, run_with_report

    study = load_study(args.config)
    if args.device is not None:
        resolve_device(args.device, "--device")
    if args.check:
        print(describe_plan(study, args.out))
        return
    run_with_report(study, args.out, executor=args.executor, workers=args.workers, address=args.address,
                    device=args.device)


def cmd_report(args: argparse.Namespace) -> None:
    from mrirobust.study.runner import write_study_report

    print(f"report: {write_study_report(args.results, args.out)}")


def cmd_findings(args: argparse.Namespace) -> None:
    from mrirobust.study.runner import study_findings

    print("\n".join(v.line() for v in study_findings(args.results)))


def _add_recon_options(p: argparse.ArgumentParser, count: Callable[[str], int] = COUNT) -> None:
    """The mask, device and batch flags of train and tune (train's counts are TrainConfig's to check)."""
    p.add_argument("--mask-type", default="random",
                   help="random | equispaced | equispaced_fraction | magic | magic_fraction")
    p.add_argument("--acceleration", type=COUNT, default=4)
    p.add_argument("--center-fraction", type=FINITE, default=0.08)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--batch-size", type=count, default=4)


def _experiment_parsers(sub: Any) -> None:
    """`recon`, `attack`, `features KIND`, `shift KIND`: flags from each kind's spec."""
    from mrirobust.experiments.base import experiment_type
    from mrirobust.experiments.spec import add_arguments

    groups: dict[str, Any] = {}
    for (command, sub_command), kind in EXPERIMENT_COMMANDS.items():
        cls = experiment_type(kind)
        if sub_command is None:
            p = sub.add_parser(command, help=cls.summary)
        else:
            if command not in groups:
                helps = {"features": "small-feature recovery: heat maps, window sizes, pathologies",
                         "shift": "distribution shifts over model groups (Figures 2, 4, 6, 13, 14)"}
                groups[command] = sub.add_parser(command, help=helps[command]).add_subparsers(
                    dest=f"{command}_command", required=True)
            p = groups[command].add_parser(sub_command, help=cls.summary)
        add_arguments(p, cls.spec_type, skip=("split", "eval_split"))
        p.add_argument("--out", type=Path, default=Path(f"out/{kind}"),
                       help="results folder (store, results.csv, report); a re-run resumes")
        p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
        p.set_defaults(run=cmd_experiment, kind=kind)


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog="mrirobust", description=__doc__.splitlines()[0])
    sub = root.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="create and inspect data").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="write the embedded synthetic dataset as fastMRI-layout files")
    p.add_argument("out", type=Path)
    p.add_argument("--preset", default="demo", help="demo | fastmri-size")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_data_synth)
    p = data.add_parser("info", help="summarise a fastMRI-layout file or folder")
    p.add_argument("path", type=Path)
    p.set_defaults(run=cmd_data_info)
    p = data.add_parser("from-images", help="simulate multi-coil k-space from magnitude images")
    p.add_argument("src", type=Path, help="an image file or folder (.npy, .png/.jpg/.tif, NIfTI, DICOM)")
    p.add_argument("out", type=Path, help="output folder: one fastMRI-layout .h5 per image file")
    p.add_argument("--coils", type=COUNT, default=8, help="number of simulated coils")
    p.add_argument("--snr-db", type=float, default=30.0,
                   help="k-space noise: mean coil-image power over noise variance in dB; inf: no noise")
    p.add_argument("--oversample", action="store_true", help="fastMRI-like 2x readout oversampling")
    p.add_argument("--no-shading", action="store_true",
                   help="normalised coil maps: do not add coil shading (for images that already carry it)")
    p.add_argument("--acquisition", default="", help="acquisition attribute, e.g. CORPD_FBK or AXT2 (for filters)")
    p.add_argument("--anatomy", default="", help="anatomy attribute, e.g. knee or brain (for filters)")
    p.add_argument("--seed", type=int, default=0, help="file i is simulated with seed SEED + i")
    p.set_defaults(run=cmd_data_from_images)
    p = data.add_parser("import", help="import multi-coil k-space (.npy/.npz, BART .cfl, ISMRMRD, fastMRI)")
    p.add_argument("src", type=Path, help="a k-space file or folder of them")
    p.add_argument("out", type=Path, help="output folder: one fastMRI-layout .h5 per source file")
    p.add_argument("--mask", type=Path, help="a .npy mask (W,) or (H, W); default: the file's own or its nonzero samples")
    p.add_argument("--acquisition", default="", help="acquisition attribute, e.g. CORPD_FBK or AXT2 (for filters)")
    p.add_argument("--anatomy", default="", help="anatomy attribute, e.g. knee or brain (for filters)")
    p.set_defaults(run=cmd_data_import)

    p = sub.add_parser("train", help="train a trainable method (U-net, VarNet, plug-ins) on a data folder")
    p.add_argument("method", help="a method name or YAML config, e.g. unet-small")
    p.add_argument("data", type=Path, help="training folder of fastMRI-layout files")
    p.add_argument("--val", type=Path, default=None, help="validation folder (SSIM after every epoch)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder (an interrupted run resumes)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=FINITE, default=None, help="default: the method's (fastMRI's)")
    p.add_argument("--optimizer", default=None, help="adam | rmsprop (default: the method's)")
    p.add_argument("--loss", default=None, help="l1 | ssim (default: the method's)")
    p.add_argument("--amp", action="store_true", help="mixed precision")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--slices", default=None)
    p.add_argument("--max-slices", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jitter", type=FINITE, default=0.0, metavar="SIGMA",
                   help="Gaussian noise z on the measurements, E||z||^2 = (SIGMA ||y||)^2 per slice (0: off)")
    p.add_argument("--adversarial", type=FINITE, default=0.0, metavar="EPS",
                   help="train on PGD perturbations ||z|| <= EPS ||y|| of the loss (0: off)")
    p.add_argument("--adversarial-steps", type=int, default=3, metavar="N", help="PGD steps per batch (with --adversarial)")
    p.add_argument("--augment", default="none", help="none | flips (random up-down/left-right mirroring of the "
                                                     "training slices) | dihedral (flips and transposes)")
    _add_recon_options(p, count=int)
    p.set_defaults(run=cmd_train, batch_size=1)

    p = sub.add_parser("tune", help="grid-search a method's settings for the best mean SSIM")
    p.add_argument("method", help="a method name or YAML config, e.g. l1")
    p.add_argument("data", type=Path, help="tuning folder of fastMRI-layout files")
    p.add_argument("--grid", action="append", default=[],
                   help="KEY=V1,V2,... (repeatable); default: the family's grid (l1: lam and iters; "
                        "un-trained: iters and channels)")
    p.add_argument("--out", type=Path, required=True, help="where to write the tuned method config (.yaml)")
    p.add_argument("--slices", default=None)
    p.add_argument("--limit", type=COUNT, default=None, help="use at most this many slices")
    _add_recon_options(p)
    p.set_defaults(run=cmd_tune)

    _experiment_parsers(sub)

    p = sub.add_parser("study", help="the whole study from a YAML config: train, tune, attack, shift, features, "
                                     "report (resumable; docs/study.md)")
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, default=None, help="study folder (default out/NAME)")
    p.add_argument("--executor", choices=EXECUTORS, default=None, help="default: the config's (inline)")
    p.add_argument("--workers", type=COUNT, default=None, help="processes/Ray tasks at once (default: GPUs or 1)")
    p.add_argument("--address", default=None, help="Ray cluster address, e.g. ray://head:10001")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's)")
    p.add_argument("--check", action="store_true", help="validate the config, list the jobs, run nothing")
    p.set_defaults(run=cmd_study)

    p = sub.add_parser("report", help="the static HTML report of a study folder")
    p.add_argument("results", type=Path, help="the study folder (its --out)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default RESULTS/report)")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("findings", help="the verdicts on the paper's claims (A1-F2) from a study folder's rows")
    p.add_argument("results", type=Path, help="the study folder (its --out)")
    p.set_defaults(run=cmd_findings)

    p = sub.add_parser("card", help="a robustness card: METHOD against zero-filled, l1 and a U-net "
                                    "(recon, attack, perturb; anatomy shift with --data2)")
    p.add_argument("method", help="a method name, NAME=CHECKPOINT, a method YAML or package.module:attr")
    p.add_argument("--data", type=Path, required=True, help="data folder with train/ val/ test/ splits")
    p.add_argument("--data2", type=Path, default=None, help="a second anatomy's folder (adds the anatomy shift)")
    p.add_argument("--unet-checkpoint", type=Path, default=None, help="unet-small weights (default: train on --data)")
    p.add_argument("--preset", choices=("demo", "quick"), default="demo", help="quick: a smoke-sized card")
    p.add_argument("--out", type=Path, default=Path("out/card"), help="study folder (a re-run resumes)")
    p.add_argument("--device", default="auto", help="auto (GPU when present) | cpu | cuda")
    p.set_defaults(run=cmd_card)

    p = sub.add_parser("demo", help="the whole study at demo scale on the embedded synthetic dataset")
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--device", default="auto", help="auto (GPU when present) | cpu | cuda")
    p.add_argument("--quick", action="store_true", help="a smoke-sized study (under 2 minutes on a CPU)")
    p.add_argument("--executor", choices=EXECUTORS, default=None)
    p.set_defaults(run=cmd_demo)
    return root


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as done:  # --help, or argparse's one-line error (already printed)
        return done.code if isinstance(done.code, int) else EXIT_ERROR
    return run_cleanly(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
