"""The `mrirobust` command line.

Every user-causable error (a MriRobustError) is printed as one line without a traceback and
exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from mrirobust.errors import ConfigError, MriRobustError
from mrirobust.study import EXECUTORS


def _methods(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--methods", "name at least one method")
    return names


def cmd_data_synth(args: argparse.Namespace) -> None:
    from mrirobust.data.synthetic import synthesize

    paths = synthesize(args.out, args.preset, seed=args.seed)
    print(f"wrote {len(paths)} files to {args.out}")


def cmd_data_info(args: argparse.Namespace) -> None:
    from mrirobust.data.dataset import describe

    print(json.dumps(describe(args.path), indent=2, default=str))


def cmd_data_from_images(args: argparse.Namespace) -> None:
    from mrirobust.data.images import ImageSimulation, images_to_fastmri

    paths = images_to_fastmri(args.src, args.out, ImageSimulation(
        num_coils=args.coils, snr_db=args.snr_db, oversample=args.oversample, seed=args.seed,
        shading=not args.no_shading, acquisition=args.acquisition, anatomy=args.anatomy))
    print(f"wrote {len(paths)} files to {args.out}")


def cmd_data_import(args: argparse.Namespace) -> None:
    from mrirobust.data.importer import import_kspace

    paths = import_kspace(args.src, args.out, mask=args.mask, acquisition=args.acquisition, anatomy=args.anatomy)
    print(f"wrote {len(paths)} files to {args.out}")


def cmd_recon(args: argparse.Namespace) -> None:
    from mrirobust.evaluate import run_recon

    run_recon(
        args.data, _methods(args.methods), out=args.out, mask_type=args.mask_type,
        acceleration=args.acceleration, center_fraction=args.center_fraction, slices=args.slices,
        device=args.device, batch_size=args.batch_size, limit=args.limit,
    )


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from mrirobust.data.dataset import SliceDataset
    from mrirobust.methods.base import build, parse_spec
    from mrirobust.methods.train import TrainConfig, train

    torch.manual_seed(args.seed)  # the initial weights: a training run depends only on its settings
    method = build(parse_spec(args.method))
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, loss=args.loss,
        acceleration=args.acceleration, center_fraction=args.center_fraction, mask_type=args.mask_type,
        seed=args.seed, device=args.device, amp=args.amp, num_workers=args.workers,
        max_train_slices=args.max_slices, max_val_slices=args.max_slices,
    )
    val = SliceDataset(args.val, slices=args.slices) if args.val else None
    result = train(method, SliceDataset(args.data, slices=args.slices), val, args.out, config)
    print(f"checkpoints: {result.last} (last), {result.best} (best); "
          f"use it with --methods {method.name}={result.best}")


def cmd_tune(args: argparse.Namespace) -> None:
    from mrirobust.data.dataset import SliceDataset
    from mrirobust.methods.base import parse_spec
    from mrirobust.methods.tune import default_grid, parse_grid, save_config, tune
    from mrirobust.physics.masks import MaskSpec

    dataset = SliceDataset(args.data, slices=args.slices)
    samples = [dataset[i] for i in range(min(len(dataset), args.limit or len(dataset)))]
    spec = MaskSpec(args.mask_type, (args.center_fraction,), (args.acceleration,))
    base = parse_spec(args.method)
    grid = parse_grid(args.grid) if args.grid else default_grid(base)
    result = tune(base, grid, samples, spec, device=args.device, batch_size=args.batch_size)
    path = save_config(result.best, args.out, note=(
        f"tuned by `mrirobust tune` on {args.data} ({len(samples)} slices, {spec.describe()}): "
        f"mean SSIM {result.best_ssim:.4f}"))
    print(f"best mean SSIM {result.best_ssim:.4f} with {result.best}; wrote {path}")


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--attack-setting", f"{text!r} is not KEY=VALUE")
    return key.strip(), yaml.safe_load(value)


def cmd_attack(args: argparse.Namespace) -> None:
    from mrirobust.robustness.adversarial import run_attack_experiment

    run_attack_experiment(
        args.data, _methods(args.methods), eps=args.eps, images=args.images, out=args.out,
        mask_type=args.mask_type, acceleration=args.acceleration, center_fraction=args.center_fraction,
        evaluate_only=[n.strip() for n in args.evaluate_only.split(",") if n.strip()],
        device=args.device, seed=args.seed, norm=args.norm, batch_size=args.batch_size,
        attack_settings=dict(_setting(s) for s in args.attack_setting),
    )


def _ints(text: str, field: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(field, f"expected comma-separated integers, got {text!r}") from None


def _feature_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(mask_type=args.mask_type, acceleration=args.acceleration, center_fraction=args.center_fraction,
                device=args.device, batch_size=args.batch_size, out=args.out)


def cmd_features_heatmap(args: argparse.Namespace) -> None:
    from mrirobust.robustness.features import run_heatmap

    run_heatmap(args.data, _methods(args.methods), stride=args.stride, window=args.window, images=args.images,
                value=args.value, reference=args.reference, normalize=args.normalize, maps_crop=args.maps_crop,
                **_feature_options(args))


def cmd_features_sizes(args: argparse.Namespace) -> None:
    from mrirobust.robustness.features import run_feature_sizes

    run_feature_sizes(args.data, _methods(args.methods), windows=_ints(args.windows, "--windows"),
                      placements=args.placements, images=args.images, seed=args.seed, value=args.value,
                      reference=args.reference, normalize=args.normalize, maps_crop=args.maps_crop,
                      **_feature_options(args))


def cmd_features_annotated(args: argparse.Namespace) -> None:
    from mrirobust.robustness.features import run_annotated

    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels else None
    run_annotated(args.data, args.annotations, _methods(args.methods), labels=labels, min_size=args.min_size,
                  max_size=args.max_size, **_feature_options(args))


def _groups(path: Path | None) -> dict[str, list[Any]] | None:
    """`--groups groups.yaml`: a mapping from group name to a list of method specs."""
    if path is None:
        return None
    try:
        groups = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError("--groups", f"cannot read {path}: {error}") from None
    if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
        raise ConfigError("--groups", f"{path} must map group names to lists of methods")
    return groups


def cmd_shift(args: argparse.Namespace) -> None:
    from mrirobust.methods.base import parse_spec
    from mrirobust.methods.train import TrainConfig
    from mrirobust.robustness.shifts import run_shift

    train_config = TrainConfig(epochs=args.epochs, batch_size=args.train_batch_size,
                               max_train_slices=args.max_train_slices, seed=args.seed, device=args.device)
    run_shift(args.kind, args.source, args.target, groups=_groups(args.groups), out=args.out, cache=args.cache,
              train_config=train_config, tune_images=args.tune_images, mask_type=args.mask_type,
              acceleration=args.acceleration, center_fraction=args.center_fraction, images=args.images,
              eval_split=args.eval_split, filter_method=parse_spec(args.filter), hard_slices=args.hard_slices,
              hard_fraction=args.hard_fraction, device=args.device, batch_size=args.batch_size)


def cmd_demo(args: argparse.Namespace) -> None:
    from mrirobust.demo import run_demo

    run_demo(args.out, quick=args.quick, device=args.device, executor=args.executor)


def cmd_study(args: argparse.Namespace) -> None:
    from mrirobust.study.config import load_study
    from mrirobust.study.runner import describe_plan, run_with_report

    study = load_study(args.config)
    if args.check:
        print(describe_plan(study, args.out))
        return
    run_with_report(study, args.out, executor=args.executor, workers=args.workers, address=args.address,
                    device=args.device)


def cmd_report(args: argparse.Namespace) -> None:
    from mrirobust.report.html import write_report

    print(f"report: {write_report(args.results, args.out)}")


def _add_recon_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask-type", default="random",
                   help="random | equispaced | equispaced_fraction | magic | magic_fraction")
    p.add_argument("--acceleration", type=int, default=4)
    p.add_argument("--center-fraction", type=float, default=0.08)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--batch-size", type=int, default=4)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mrirobust", description=__doc__.splitlines()[0])
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
    p.add_argument("--coils", type=int, default=8, help="number of simulated coils")
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

    p = sub.add_parser("recon", help="reconstruct a dataset with several methods and score them")
    p.add_argument("data", type=Path, help="a fastMRI-layout .h5 file or folder")
    p.add_argument("--methods", default="zero-filled,sense",
                   help="comma-separated: NAME, NAME=CHECKPOINT, a method YAML, or package.module:attr")
    p.add_argument("--out", type=Path, default=Path("out/recon"))
    p.add_argument("--slices", default=None, help="e.g. middle:5 or 10:20 (default: all)")
    p.add_argument("--limit", type=int, default=None, help="score at most this many slices")
    _add_recon_options(p)
    p.set_defaults(run=cmd_recon)

    p = sub.add_parser("train", help="train a trainable method (U-net, VarNet, plug-ins) on a data folder")
    p.add_argument("method", help="a method name or YAML config, e.g. unet-small")
    p.add_argument("data", type=Path, help="training folder of fastMRI-layout files")
    p.add_argument("--val", type=Path, default=None, help="validation folder (SSIM after every epoch)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder (an interrupted run resumes)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=None, help="default: the method's (fastMRI's)")
    p.add_argument("--optimizer", default=None, help="adam | rmsprop (default: the method's)")
    p.add_argument("--loss", default=None, help="l1 | ssim (default: the method's)")
    p.add_argument("--amp", action="store_true", help="mixed precision")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--slices", default=None)
    p.add_argument("--max-slices", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    _add_recon_options(p)
    p.set_defaults(run=cmd_train, batch_size=1)

    p = sub.add_parser("tune", help="grid-search a method's settings for the best mean SSIM")
    p.add_argument("method", help="a method name or YAML config, e.g. l1")
    p.add_argument("data", type=Path, help="tuning folder of fastMRI-layout files")
    p.add_argument("--grid", action="append", default=[],
                   help="KEY=V1,V2,... (repeatable); default: the family's grid (l1: lam and iters; "
                        "un-trained: iters and channels)")
    p.add_argument("--out", type=Path, required=True, help="where to write the tuned method config (.yaml)")
    p.add_argument("--slices", default=None)
    p.add_argument("--limit", type=int, default=None, help="use at most this many slices")
    _add_recon_options(p)
    p.set_defaults(run=cmd_tune)

    p = sub.add_parser("attack", help="adversarial k-space perturbations: transfer matrix, Figures 3, 9, 10")
    p.add_argument("data", type=Path, help="a fastMRI-layout .h5 file or folder (its first --images slices)")
    p.add_argument("--methods", default="zero-filled,sense",
                   help="methods to attack; every perturbation is applied to each of them")
    p.add_argument("--evaluate-only", default="", help="methods evaluated under the attacks but not attacked")
    p.add_argument("--eps", default="0,0.01,0.02,0.03,0.04,0.05,0.06,0.07,0.08",
                   help="budgets ||z|| / ||reference||, comma-separated")
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--norm", default="measured", choices=("measured", "full"),
                   help="budget relative to the measured k-space y (paper) or the full k-space (authors' code)")
    p.add_argument("--attack-setting", action="append", default=[],
                   help="KEY=VALUE passed to the attack (repeatable), e.g. steps=50")
    p.add_argument("--out", type=Path, default=Path("out/attack"), help="results folder; a re-run resumes")
    p.add_argument("--seed", type=int, default=0)
    _add_recon_options(p)
    p.set_defaults(run=cmd_attack)

    features = sub.add_parser("features", help="small-feature recovery: heat maps, window sizes, pathologies"
                              ).add_subparsers(dest="features_command", required=True)
    for name, run, help_text in (
        ("heatmap", cmd_features_heatmap, "MSE of a k x k feature at every location on a grid (Figures 7, 16)"),
        ("sizes", cmd_features_sizes, "random placements of windows 2..5 over many images (Figure 17)"),
        ("annotated", cmd_features_annotated, "MSE inside annotated pathology boxes vs SSIM (Figures 8, 18)"),
    ):
        p = features.add_parser(name, help=help_text)
        p.add_argument("data", type=Path, help="a fastMRI-layout .h5 file or folder")
        if name == "annotated":
            p.add_argument("annotations", type=Path, help="fastMRI+ or Caliva et al. CSV")
            p.add_argument("--labels", default=None, help="comma-separated label filters (substring, any case)")
            p.add_argument("--min-size", type=int, default=1, help="smallest box side in pixels")
            p.add_argument("--max-size", type=int, default=None, help="largest box side in pixels")
        else:
            p.add_argument("--images", type=int, default=1 if name == "heatmap" else 200)
            p.add_argument("--value", type=float, default=None, help="feature value (default: the image maximum)")
            p.add_argument("--reference", default="rss", choices=("rss", "added"),
                           help="rss: RSS of the coil images with the feature; added: target + value in the window")
            p.add_argument("--normalize", default="none" if name == "heatmap" else "value", choices=("none", "value"))
            p.add_argument("--maps-crop", type=float, default=0.0,
                           help="ESPIRiT crop for the maps the feature goes through (0 keeps the background)")
        if name == "heatmap":
            p.add_argument("--stride", type=int, default=4)
            p.add_argument("--window", type=int, default=3)
        if name == "sizes":
            p.add_argument("--windows", default="2,3,4,5")
            p.add_argument("--placements", type=int, default=100)
            p.add_argument("--seed", type=int, default=0)
        p.add_argument("--methods", default="zero-filled,sense")
        p.add_argument("--out", type=Path, default=Path(f"out/features-{name}"))
        _add_recon_options(p)
        p.set_defaults(run=run)

    p = sub.add_parser("shift", help="distribution shifts over model groups (Figures 2, 4, 6, 13, 14)")
    p.add_argument("kind", choices=("dataset", "anatomy", "hard"))
    p.add_argument("source", help="source folder with train/ val/ (test/); PATH@ACQ1,ACQ2 filters acquisitions")
    p.add_argument("target", nargs="?", default=None,
                   help="shifted folder (dataset/anatomy); PATH@ACQ filters, mridata:PATH for Stanford knees")
    p.add_argument("--groups", type=Path, default=None,
                   help="YAML: group name -> list of methods (default: the demo-sized groups)")
    p.add_argument("--out", type=Path, default=Path("out/shift"))
    p.add_argument("--cache", type=Path, default=None, help="trained/tuned artefacts (default OUT/cache)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-batch-size", type=int, default=1)
    p.add_argument("--max-train-slices", type=int, default=None)
    p.add_argument("--tune-images", type=int, default=4)
    p.add_argument("--images", type=int, default=None, help="evaluate at most this many slices per domain")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--filter", default="sense", help="the hard set's filter method (not one of the groups)")
    p.add_argument("--hard-slices", default="middle:5")
    p.add_argument("--hard-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    _add_recon_options(p)
    p.set_defaults(run=cmd_shift)

    p = sub.add_parser("study", help="the whole study from a YAML config: train, tune, attack, shift, features, "
                                     "report (resumable; docs/study.md)")
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, default=None, help="study folder (default out/NAME)")
    p.add_argument("--executor", choices=EXECUTORS, default=None, help="default: the config's (inline)")
    p.add_argument("--workers", type=int, default=None, help="processes/Ray tasks at once (default: GPUs or 1)")
    p.add_argument("--address", default=None, help="Ray cluster address, e.g. ray://head:10001")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's)")
    p.add_argument("--check", action="store_true", help="validate the config, list the jobs, run nothing")
    p.set_defaults(run=cmd_study)

    p = sub.add_parser("report", help="the static HTML report of a study folder")
    p.add_argument("results", type=Path, help="the study folder (its --out)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default RESULTS/report)")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("demo", help="the whole study at demo scale on the embedded synthetic dataset")
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--device", default="auto", help="auto (GPU when present) | cpu | cuda")
    p.add_argument("--quick", action="store_true", help="a smoke-sized study (under 2 minutes on a CPU)")
    p.add_argument("--executor", choices=EXECUTORS, default=None)
    p.set_defaults(run=cmd_demo)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except MriRobustError as error:
        print(f"mrirobust: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
