"""A catalogue of bad inputs over every command (issue 15): each must fail before any compute with
exit 2 (130 after Ctrl-C), exactly one line on stderr naming the file or field, no traceback, and
no new file anywhere under the test folder (the data index caches aside).

The fixtures are generated here, once per module: a tiny fastMRI-layout dataset (32 columns),
source/target domains with splits, an all-zero volume, corrupt files, bad YAMLs and checkpoints,
an output path that is a file and a read-only folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mrirobust import cli
from mrirobust.data.fastmri import write_volume
from tests.clean_error import files, the_line

MISSING_GPU = "cuda:99" if torch.cuda.is_available() else "cuda"


def _volume(path: Path, seed: int = 0, zero: bool = False) -> None:
    rng = np.random.default_rng(seed)
    shape = (2, 2, 32, 32)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    target = rng.random((2, 16, 16), dtype=np.float32)
    if zero:
        kspace, target = np.zeros_like(kspace), np.zeros_like(target)
    write_volume(path, kspace, target=target)


STUDY = """name: bad
data:
  d: {data}
methods:
  zero-filled: zero-filled
experiments:
  recon: {{data: d, methods: [zero-filled], limit: 1}}
"""


def _study(src: Path, name: str, text: str) -> None:
    (src / name).write_text(text.replace("DATA", str(src / "one.h5")))


def _make_inputs(root: Path) -> None:
    src = root / "in"
    src.mkdir()
    _volume(src / "one.h5")
    _volume(src / "zero.h5", zero=True)
    for domain in ("knee", "brain"):
        for split in ("train", "val", "test"):
            (src / domain / split).mkdir(parents=True)
            _volume(src / domain / split / "v.h5", seed=len(split))
    (src / "notes.h5").write_text("not HDF5\n")
    (src / "file").write_text("a file where a folder is needed\n")
    (src / "readonly").mkdir()
    os.chmod(src / "readonly", 0o555)
    np.save(src / "img.npy", np.random.default_rng(2).random((16, 16)).astype(np.float32))
    (src / "images").mkdir()
    np.save(src / "images" / "a.npy", np.random.default_rng(3).random((16, 16)).astype(np.float32))
    (src / "ckpt.txt").write_text("not a checkpoint\n")
    (src / "ckptdir").mkdir()
    torch.save({"model": {"weight": torch.zeros(3)}}, src / "wrong.ckpt")
    from mrirobust.methods.unet import (
        Unet,  # weights of another architecture (4 channels, not 16)
    )
    torch.save(Unet(1, 1, chans=4, num_pool_layers=3).state_dict(), src / "arch.ckpt")
    (src / "bad-method.yaml").write_text("name: l1\nlam: [0.1,\n  iters: 3\n")
    (src / "unknown-method.yaml").write_text("name: l1\nbogus: 3\n")
    (src / "bad-groups.yaml").write_text("U-net: [unet\nbaseline: zero-filled]\n: :\n")
    (src / "groups-list.yaml").write_text("- zero-filled\n- sense\n")
    (src / "groups.yaml").write_text("baseline: [zero-filled]\n")
    (src / "boxes.csv").write_text("file,slice,study_level,x,y,width,height,label\none,0,No,1,1,2,2,lesion\n")
    (src / "empty.yaml").write_text("")
    (src / "latin1.yaml").write_bytes("name: l\xe9sion\n".encode("latin-1"))
    good = STUDY.format(data=src / "one.h5")
    (src / "study.yaml").write_text(good)
    studies = {
        "syntax.yaml": "name: bad\ndata: {d: x\nexperiments:\n  - [\n",
        "tabs.yaml": "name: bad\n\tdata: x\n",
        "scalar.yaml": "just a string\n",
        "list.yaml": "- a\n- b\n",
        "unknown-top.yaml": good + "colour: red\n",
        "no-data.yaml": "name: bad\nexperiments: {recon: {data: d}}\n",
        "no-experiments.yaml": good.split("experiments:")[0],
        "empty-experiments.yaml": good.split("experiments:")[0] + "experiments: {}\n",
        "missing-root.yaml": good.replace(str(src / "one.h5"), str(src / "nowhere")),
        "bad-format.yaml": good.replace(f"d: {src / 'one.h5'}", f"d: {{root: {src / 'one.h5'}, format: dicom}}"),
        "device-typo.yaml": "device: gpu7\n" + good,
        "device-missing.yaml": f"device: {MISSING_GPU}\n" + good,
        "executor.yaml": "executor: {kind: slurm}\n" + good,
        "executor-workers.yaml": "executor: {workers: 0}\n" + good,
        "mask-type.yaml": "mask: {type: spiral}\n" + good,
        "mask-accel.yaml": "mask: {acceleration: 0}\n" + good,
        "mask-accel-big.yaml": "mask: {acceleration: 1000}\n" + good,
        "mask-cf.yaml": "mask: {center_fraction: 1.5}\n" + good,
        "mask-key.yaml": "mask: {kind: random}\n" + good,
        "method-unknown.yaml": good.replace("zero-filled: zero-filled", "zf: no-such-method"),
        "method-setting.yaml": good.replace("zero-filled: zero-filled", "zero-filled: {name: l1, lam: -1}"),
        "method-trainable.yaml": good.replace("zero-filled: zero-filled", "zero-filled: unet-small"),
        "method-train-key.yaml": good.replace("zero-filled: zero-filled",
                                              "zero-filled: {name: unet-small, train: {data: d, epochz: 1}}"),
        "method-train-data.yaml": good.replace("zero-filled: zero-filled",
                                               "zero-filled: {name: unet-small, train: {data: nope}}"),
        "tune-grid.yaml": good.replace("zero-filled: zero-filled",
                                       "zero-filled: {name: l1, tune: {data: d, grid: {lam: []}}}"),
        "tune-images.yaml": good.replace("zero-filled: zero-filled",
                                         "zero-filled: {name: l1, tune: {data: d, grid: {lam: [0.1]}, images: 0}}"),
        "exp-kind.yaml": good.replace("recon: {", "recon: {kind: denoise, "),
        "exp-shift.yaml": good.replace("recon: {", "recon: {kind: shift, "),
        "exp-key.yaml": good.replace("limit: 1", "limit: 1, colour: red"),
        "exp-limit0.yaml": good.replace("limit: 1", "limit: 0"),
        "exp-limit-neg.yaml": good.replace("limit: 1", "limit: -1"),
        "exp-limit-str.yaml": good.replace("limit: 1", "limit: many"),
        "exp-batch0.yaml": good.replace("limit: 1", "batch_size: 0"),
        "exp-data-ref.yaml": good.replace("data: d, methods", "data: e, methods"),
        "exp-method-ref.yaml": good.replace("methods: [zero-filled]", "methods: [sense]"),
        "exp-dup-methods.yaml": good.replace("methods: [zero-filled]", "methods: [zero-filled, zero-filled]"),
        "exp-mask.yaml": good.replace("limit: 1", "limit: 1, mask: {acceleration: 1000}"),
        "attack-eps-big.yaml": good.replace("recon: {data: d, methods: [zero-filled], limit: 1}",
                                            "attack: {data: d, methods: [zero-filled], eps: [2]}"),
        "attack-eps-neg.yaml": good.replace("recon: {data: d, methods: [zero-filled], limit: 1}",
                                            "attack: {data: d, methods: [zero-filled], eps: -0.1}"),
        "attack-setting.yaml": good.replace("recon: {data: d, methods: [zero-filled], limit: 1}",
                                            "attack: {data: d, methods: [zero-filled], attack: {bogus: 1}}"),
        "attack-steps.yaml": good.replace("recon: {data: d, methods: [zero-filled], limit: 1}",
                                          "attack: {data: d, methods: [zero-filled], attack: {steps: abc}}"),
        "heatmap-crop.yaml": good.replace("recon: {data: d, methods: [zero-filled], limit: 1}",
                                          "heatmap: {data: d, methods: [zero-filled], maps_crop: -5}"),
        "hard-fraction.yaml": good.replace("recon: {data: d, methods: [zero-filled], limit: 1}",
                                           "hard: {kind: hard_shift, source: d, hard_fraction: 1.5}"),
    }
    for name, text in studies.items():
        (src / name).write_text(text)
    (src / "not-utf8.yaml").write_bytes(b"name: \xff\xfe\n")


@dataclass(frozen=True)
class Case:
    name: str
    argv: str  # "{in}": the input folder; "{out}": a fresh output folder
    named: str  # what the line must name
    code: int = 2


D = "{in}/one.h5"
ZF = "--methods zero-filled"
RECON = f"recon {D} {ZF} --out {{out}}"
ATTACK = f"attack {D} {ZF} --out {{out}}"
HEATMAP = f"features heatmap {D} {ZF} --out {{out}}"
SIZES = f"features sizes {D} {ZF} --out {{out}}"
ANNOTATED = f"features annotated {D} {{in}}/boxes.csv {ZF} --out {{out}}"
SHIFT_DATA = "shift dataset {in}/knee {in}/brain --groups {in}/groups.yaml --out {out}"
SHIFT_ANAT = "shift anatomy {in}/knee {in}/brain --groups {in}/groups.yaml --out {out}"
SHIFT_HARD = "shift hard {in}/knee --groups {in}/groups.yaml --out {out}"
TRAIN = "train unet-small {in}/knee/train --out {out} --epochs 1"
TUNE = "tune l1 {in}/one.h5 --out {out}/l1.yaml --grid lam=0.1 --center-fraction 0.25"
FROM = "data from-images {in}/images {out} --coils 2"

EXPERIMENTS = {"recon": RECON, "attack": ATTACK, "heatmap": HEATMAP, "sizes": SIZES, "annotated": ANNOTATED,
               "shift-dataset": SHIFT_DATA, "shift-anatomy": SHIFT_ANAT, "shift-hard": SHIFT_HARD}

CASES = [
    # data synth / info / from-images
    Case("synth-preset", "data synth {out} --preset huge", "huge"),
    Case("synth-out-file", "data synth {in}/file", "file"),
    Case("synth-out-below-file", "data synth {in}/file/x", "file"),
    Case("synth-out-readonly", "data synth {in}/readonly/x", "readonly"),
    Case("info-missing", "data info {in}/missing.h5", "missing.h5"),
    Case("info-not-hdf5", "data info {in}/notes.h5", "notes.h5"),
    Case("info-empty-folder", "data info {in}/readonly", "readonly"),
    Case("from-missing", "data from-images {in}/nothing {out}", "nothing"),
    Case("from-coils0", FROM.replace("--coils 2", "--coils 0"), "--coils"),
    Case("from-coils-neg", FROM.replace("--coils 2", "--coils -3"), "--coils"),
    Case("from-snr-nan", FROM + " --snr-db nan", "--snr-db"),
    Case("from-out-file", "data from-images {in}/images {in}/file --coils 2", "file"),
    Case("from-out-readonly", "data from-images {in}/images {in}/readonly/x --coils 2", "readonly"),
    Case("from-not-images", "data from-images {in}/notes.h5 {out}", "notes.h5"),
    # recon
    Case("recon-missing-data", f"recon {{in}}/nothing.h5 {ZF} --out {{out}}", "nothing.h5"),
    Case("recon-not-hdf5", f"recon {{in}}/notes.h5 {ZF} --out {{out}}", "notes.h5"),
    Case("recon-unknown-method", f"recon {D} --methods nope --out {{out}}", "nope"),
    Case("recon-empty-methods", f"recon {D} --methods , --out {{out}}", "--methods"),
    Case("recon-dup-methods", f"recon {D} --methods zero-filled,zero-filled --out {{out}}", "--methods"),
    Case("recon-method-setting", f"recon {D} --methods l1 --out {{out}}".replace("l1", "{in}/unknown-method.yaml"),
         "bogus"),
    Case("recon-method-yaml-syntax", f"recon {D} --methods {{in}}/bad-method.yaml --out {{out}}", "bad-method.yaml"),
    Case("recon-method-yaml-missing", f"recon {D} --methods {{in}}/none.yaml --out {{out}}", "none.yaml"),
    Case("recon-trainable-no-ckpt", f"recon {D} --methods unet-small --out {{out}}", "unet-small"),
    Case("recon-ckpt-text", f"recon {D} --methods unet-small={{in}}/ckpt.txt --out {{out}}", "ckpt.txt"),
    Case("recon-ckpt-dir", f"recon {D} --methods unet-small={{in}}/ckptdir --out {{out}}", "ckptdir"),
    Case("recon-ckpt-missing", f"recon {D} --methods unet-small={{in}}/none.ckpt --out {{out}}", "none.ckpt"),
    Case("recon-ckpt-wrong", f"recon {D} --methods unet-small={{in}}/wrong.ckpt --out {{out}}", "wrong.ckpt"),
    Case("recon-ckpt-arch", f"recon {D} --methods unet-small={{in}}/arch.ckpt --out {{out}}", "arch.ckpt"),
    Case("recon-plugin-missing", f"recon {D} --methods nosuchmodule:thing --out {{out}}", "nosuchmodule"),
    Case("recon-limit0", RECON + " --limit 0", "--limit"),
    Case("recon-limit-neg", RECON + " --limit -1", "--limit"),
    Case("recon-limit-float", RECON + " --limit 1.5", "--limit"),
    Case("recon-limit-text", RECON + " --limit many", "--limit"),
    Case("recon-batch0", RECON + " --batch-size 0", "--batch-size"),
    Case("recon-batch-neg", RECON + " --batch-size -1", "--batch-size"),
    Case("recon-accel0", RECON + " --acceleration 0", "acceleration"),
    Case("recon-accel-huge", RECON + " --acceleration 1000", "acceleration"),
    Case("recon-accel-too-high", RECON + " --acceleration 20", "acceleration"),
    Case("recon-accel-text", RECON + " --acceleration fast", "acceleration"),
    Case("recon-cf0", RECON + " --center-fraction 0", "center_fraction"),
    Case("recon-cf1", RECON + " --center-fraction 1.2", "center_fraction"),
    Case("recon-cf-pairs", RECON + " --acceleration 4,8 --center-fraction 0.08,0.04,0.02", "mask"),
    Case("recon-mask-type", RECON + " --mask-type spiral", "spiral"),
    Case("recon-slices", RECON + " --slices every:3", "every:3"),
    Case("recon-unknown-flag", f"recon {{in}}/knee {ZF} --out {{out}} --split nope", "--split"),
    Case("recon-device-typo", RECON + " --device gpu7", "device"),
    Case("recon-device-missing", RECON + f" --device {MISSING_GPU}", "device"),
    Case("recon-device-empty", RECON + " --device ''", "device"),
    Case("recon-out-file", f"recon {D} {ZF} --out {{in}}/file", "file"),
    Case("recon-out-below-file", f"recon {D} {ZF} --out {{in}}/file/sub", "file"),
    Case("recon-out-readonly", f"recon {D} {ZF} --out {{in}}/readonly/r", "readonly"),
    Case("recon-zero-image", f"recon {{in}}/zero.h5 {ZF} --out {{out}}", "zero.h5"),
    # attack
    Case("attack-eps-big", ATTACK + " --eps 2", "--eps"),
    Case("attack-eps-neg", ATTACK + " --eps -0.1", "--eps"),
    Case("attack-eps-nan", ATTACK + " --eps nan", "--eps"),
    Case("attack-eps-text", ATTACK + " --eps small", "--eps"),
    Case("attack-eps-empty", ATTACK + " --eps ,", "--eps"),
    Case("attack-images0", ATTACK + " --images 0", "--images"),
    Case("attack-images-neg", ATTACK + " --images -2", "--images"),
    Case("attack-norm", ATTACK + " --norm half", "--norm"),
    Case("attack-setting-bogus", ATTACK + " --attack-setting bogus=1", "bogus"),
    Case("attack-setting-steps", ATTACK + " --attack-setting steps=abc", "steps"),
    Case("attack-setting-steps0", ATTACK + " --attack-setting steps=0", "steps"),
    Case("attack-setting-novalue", ATTACK + " --attack-setting steps", "--attack-setting"),
    Case("attack-setting-optimizer", ATTACK + " --attack-setting optimizer=sgd", "optimizer"),
    Case("attack-seed-neg", ATTACK + " --seed -1", "--seed"),
    Case("attack-batch0", ATTACK + " --batch-size 0", "--batch-size"),
    Case("attack-dup-methods", f"attack {D} --methods zero-filled,zero-filled --out {{out}}", "--methods"),
    Case("attack-eval-overlap", ATTACK + " --evaluate-only zero-filled", "zero-filled"),
    Case("attack-accel-huge", ATTACK + " --acceleration 1000", "acceleration"),
    Case("attack-device", ATTACK + " --device gpu7", "device"),
    Case("attack-out-file", f"attack {D} {ZF} --out {{in}}/file", "file"),
    Case("attack-out-readonly", f"attack {D} {ZF} --out {{in}}/readonly/a", "readonly"),
    Case("attack-missing-data", f"attack {{in}}/nothing.h5 {ZF} --out {{out}}", "nothing.h5"),
    Case("attack-zero-image", f"attack {{in}}/zero.h5 {ZF} --out {{out}}", "zero.h5"),
    # features
    Case("heatmap-stride0", HEATMAP + " --stride 0", "--stride"),
    Case("heatmap-window0", HEATMAP + " --window 0", "--window"),
    Case("heatmap-window-huge", HEATMAP + " --window 100", "--window"),
    Case("heatmap-images0", HEATMAP + " --images 0", "--images"),
    Case("heatmap-crop-neg", HEATMAP + " --maps-crop -5", "--maps-crop"),
    Case("heatmap-crop-big", HEATMAP + " --maps-crop 1.5", "--maps-crop"),
    Case("heatmap-reference", HEATMAP + " --reference nope", "--reference"),
    Case("heatmap-normalize", HEATMAP + " --normalize all", "--normalize"),
    Case("heatmap-value-nan", HEATMAP + " --value nan", "--value"),
    Case("heatmap-batch0", HEATMAP + " --batch-size 0", "--batch-size"),
    Case("heatmap-dup", f"features heatmap {D} --methods zero-filled,zero-filled --out {{out}}", "--methods"),
    Case("heatmap-out-file", f"features heatmap {D} {ZF} --out {{in}}/file", "file"),
    Case("heatmap-device", HEATMAP + " --device gpu7", "device"),
    Case("heatmap-zero-image", f"features heatmap {{in}}/zero.h5 {ZF} --out {{out}}", "zero.h5"),
    Case("sizes-windows0", SIZES + " --windows 0,2", "--windows"),
    Case("sizes-windows-huge", SIZES + " --windows 2,100", "--windows"),
    Case("sizes-placements0", SIZES + " --placements 0", "--placements"),
    Case("sizes-images-neg", SIZES + " --images -1", "--images"),
    Case("sizes-crop-neg", SIZES + " --maps-crop -5", "--maps-crop"),
    Case("sizes-out-readonly", f"features sizes {D} {ZF} --out {{in}}/readonly/s", "readonly"),
    Case("annotated-missing-csv", f"features annotated {D} {{in}}/none.csv {ZF} --out {{out}}", "none.csv"),
    Case("annotated-not-csv", f"features annotated {D} {{in}}/notes.h5 {ZF} --out {{out}}", "notes.h5"),
    Case("annotated-min-size0", ANNOTATED + " --min-size 0", "--min-size"),
    Case("annotated-max-size0", ANNOTATED + " --max-size 0", "--max-size"),
    Case("annotated-max-below-min", ANNOTATED + " --min-size 5 --max-size 2", "size"),
    Case("annotated-out-file", f"features annotated {D} {{in}}/boxes.csv {ZF} --out {{in}}/file", "file"),
    # shift
    Case("shift-groups-missing", SHIFT_DATA.replace("groups.yaml", "none.yaml"), "none.yaml"),
    Case("shift-groups-syntax", SHIFT_DATA.replace("groups.yaml", "bad-groups.yaml"), "bad-groups.yaml"),
    Case("shift-groups-list", SHIFT_DATA.replace("groups.yaml", "groups-list.yaml"), "--groups"),
    Case("shift-groups-empty", SHIFT_DATA.replace("groups.yaml", "empty.yaml"), "--groups"),
    Case("shift-groups-unknown-method", SHIFT_DATA.replace("groups.yaml", "unknown-method.yaml"), "--groups"),
    Case("shift-source-missing", SHIFT_DATA.replace("{in}/knee", "{in}/nowhere"), "nowhere"),
    Case("shift-target-missing", SHIFT_ANAT.replace("{in}/brain", "{in}/nowhere"), "nowhere"),
    Case("shift-images0", SHIFT_DATA + " --images 0", "--images"),
    Case("shift-tune-images0", SHIFT_DATA + " --tune-images 0", "--tune-images"),
    Case("shift-train-key", SHIFT_DATA + " --train epochz=1", "epochz"),
    Case("shift-train-epochs0", SHIFT_DATA + " --train epochs=0", "epochs"),
    Case("shift-batch0", SHIFT_ANAT + " --batch-size 0", "--batch-size"),
    Case("shift-accel-huge", SHIFT_ANAT + " --acceleration 1000", "acceleration"),
    Case("shift-device", SHIFT_ANAT + " --device gpu7", "device"),
    Case("shift-out-file", SHIFT_ANAT.replace("{out}", "{in}/file"), "file"),
    Case("shift-out-readonly", SHIFT_ANAT.replace("{out}", "{in}/readonly/s"), "readonly"),
    Case("hard-fraction-big", SHIFT_HARD + " --hard-fraction 1.5", "--hard-fraction"),
    Case("hard-fraction-zero", SHIFT_HARD + " --hard-fraction 0", "--hard-fraction"),
    Case("hard-filter", SHIFT_HARD + " --filter nope", "nope"),
    Case("hard-slices", SHIFT_HARD + " --hard-slices every:3", "every:3"),
    # train
    Case("train-unknown", "train nope {in}/knee/train --out {out}", "nope"),
    Case("train-not-trainable", "train zero-filled {in}/knee/train --out {out}", "zero-filled"),
    Case("train-data-missing", "train unet-small {in}/nowhere --out {out}", "nowhere"),
    Case("train-epochs0", TRAIN.replace("--epochs 1", "--epochs 0"), "epochs"),
    Case("train-lr-neg", TRAIN + " --lr -1", "lr"),
    Case("train-lr-nan", TRAIN + " --lr nan", "lr"),
    Case("train-optimizer", TRAIN + " --optimizer sgd", "optimizer"),
    Case("train-loss", TRAIN + " --loss l3", "loss"),
    Case("train-workers-neg", TRAIN + " --workers -3", "workers"),
    Case("train-max-slices0", TRAIN + " --max-slices 0", "max"),
    Case("train-batch0", TRAIN + " --batch-size 0", "batch"),
    Case("train-accel0", TRAIN + " --acceleration 0", "acceleration"),
    Case("train-accel-huge", TRAIN + " --acceleration 1000", "acceleration"),
    Case("train-cf", TRAIN + " --center-fraction 1.5", "center"),
    Case("train-mask", TRAIN + " --mask-type spiral", "spiral"),
    Case("train-device", TRAIN + " --device gpu7", "device"),
    Case("train-device-missing", TRAIN + f" --device {MISSING_GPU}", "device"),
    Case("train-out-file", "train unet-small {in}/knee/train --out {in}/file --epochs 1", "file"),
    Case("train-out-readonly", "train unet-small {in}/knee/train --out {in}/readonly/t --epochs 1", "readonly"),
    Case("train-val-missing", TRAIN + " --val {in}/nowhere", "nowhere"),
    Case("train-slices", TRAIN + " --slices every:3", "every:3"),
    # tune
    Case("tune-limit0", TUNE + " --limit 0", "--limit"),
    Case("tune-limit-neg", TUNE + " --limit -2", "--limit"),
    Case("tune-grid-syntax", TUNE + " --grid lam", "--grid"),
    Case("tune-grid-key", TUNE + " --grid bogus=1,2", "bogus"),
    Case("tune-grid-value", TUNE + " --grid lam=-1", "lam"),
    Case("tune-not-tunable", "tune unet-small {in}/one.h5 --out {out}/u.yaml", "unet-small"),
    Case("tune-data-missing", "tune l1 {in}/nowhere --out {out}/l1.yaml", "nowhere"),
    Case("tune-batch0", TUNE + " --batch-size 0", "batch"),
    Case("tune-accel-huge", TUNE + " --acceleration 1000", "acceleration"),
    Case("tune-device", TUNE + " --device gpu7", "device"),
    Case("tune-out-folder", "tune l1 {in}/one.h5 --out {in}/readonly --grid lam=0.1", "readonly"),
    Case("tune-out-below-file", "tune l1 {in}/one.h5 --out {in}/file/l1.yaml --grid lam=0.1", "file"),
    Case("tune-out-readonly", "tune l1 {in}/one.h5 --out {in}/readonly/l1.yaml --grid lam=0.1", "readonly"),
    Case("tune-zero-image", "tune l1 {in}/zero.h5 --out {out}/l1.yaml --grid lam=0.1", "zero.h5"),
    # study
    Case("study-missing", "study {in}/none.yaml --out {out}", "none.yaml"),
    Case("study-empty", "study {in}/empty.yaml --out {out}", "empty.yaml"),
    Case("study-not-utf8", "study {in}/not-utf8.yaml --out {out}", "not-utf8.yaml"),
    Case("study-folder", "study {in}/readonly --out {out}", "readonly"),
    Case("study-workers0", "study {in}/study.yaml --out {out} --workers 0", "--workers"),
    Case("study-workers-neg", "study {in}/study.yaml --out {out} --workers -3", "--workers"),
    Case("study-device-flag", "study {in}/study.yaml --out {out} --device gpu7", "device"),
    Case("study-device-flag-missing", f"study {{in}}/study.yaml --out {{out}} --device {MISSING_GPU}", "device"),
    Case("study-out-file", "study {in}/study.yaml --out {in}/file", "file"),
    Case("study-out-readonly", "study {in}/study.yaml --out {in}/readonly/s", "readonly"),
    Case("study-check-out-file", "study {in}/study.yaml --out {in}/file --check", "file"),
    Case("syntax", "study {in}/syntax.yaml --out {out}", "syntax.yaml"),
    Case("tabs", "study {in}/tabs.yaml --out {out}", "tabs.yaml"),
    Case("scalar", "study {in}/scalar.yaml --out {out}", "study"),
    Case("list", "study {in}/list.yaml --out {out}", "study"),
    Case("unknown-top", "study {in}/unknown-top.yaml --out {out}", "colour"),
    Case("no-data", "study {in}/no-data.yaml --out {out}", "data"),
    Case("no-experiments", "study {in}/no-experiments.yaml --out {out}", "experiments"),
    Case("empty-experiments", "study {in}/empty-experiments.yaml --out {out}", "experiments"),
    Case("missing-root", "study {in}/missing-root.yaml --out {out}", "data.d.root"),
    Case("bad-format", "study {in}/bad-format.yaml --out {out}", "data.d.format"),
    Case("device-typo", "study {in}/device-typo.yaml --out {out}", "device"),
    Case("device-missing", "study {in}/device-missing.yaml --out {out}", "device"),
    Case("executor", "study {in}/executor.yaml --out {out}", "executor.kind"),
    Case("executor-workers", "study {in}/executor-workers.yaml --out {out}", "executor.workers"),
    Case("mask-type", "study {in}/mask-type.yaml --out {out}", "mask.type"),
    Case("mask-accel", "study {in}/mask-accel.yaml --out {out}", "mask.acceleration"),
    Case("mask-accel-big", "study {in}/mask-accel-big.yaml --out {out}", "acceleration"),
    Case("mask-cf", "study {in}/mask-cf.yaml --out {out}", "mask.center_fraction"),
    Case("mask-key", "study {in}/mask-key.yaml --out {out}", "mask.kind"),
    Case("method-unknown", "study {in}/method-unknown.yaml --out {out}", "methods.zf"),
    Case("method-setting", "study {in}/method-setting.yaml --out {out}", "methods.zero-filled"),
    Case("method-trainable", "study {in}/method-trainable.yaml --out {out}", "methods.zero-filled"),
    Case("method-train-key", "study {in}/method-train-key.yaml --out {out}", "epochz"),
    Case("method-train-data", "study {in}/method-train-data.yaml --out {out}", "train.data"),
    Case("tune-grid", "study {in}/tune-grid.yaml --out {out}", "tune.grid.lam"),
    Case("tune-images", "study {in}/tune-images.yaml --out {out}", "tune.images"),
    Case("exp-kind", "study {in}/exp-kind.yaml --out {out}", "experiments.recon.kind"),
    Case("exp-shift", "study {in}/exp-shift.yaml --out {out}", "experiments.recon.kind"),
    Case("exp-key", "study {in}/exp-key.yaml --out {out}", "experiments.recon.colour"),
    Case("exp-limit0", "study {in}/exp-limit0.yaml --out {out}", "experiments.recon.limit"),
    Case("exp-limit-neg", "study {in}/exp-limit-neg.yaml --out {out}", "experiments.recon.limit"),
    Case("exp-limit-str", "study {in}/exp-limit-str.yaml --out {out}", "experiments.recon.limit"),
    Case("exp-batch0", "study {in}/exp-batch0.yaml --out {out}", "experiments.recon.batch_size"),
    Case("exp-data-ref", "study {in}/exp-data-ref.yaml --out {out}", "experiments.recon.data"),
    Case("exp-method-ref", "study {in}/exp-method-ref.yaml --out {out}", "experiments.recon.methods"),
    Case("exp-dup-methods", "study {in}/exp-dup-methods.yaml --out {out}", "experiments.recon.methods"),
    Case("exp-mask", "study {in}/exp-mask.yaml --out {out}", "acceleration"),
    Case("attack-eps-big-yaml", "study {in}/attack-eps-big.yaml --out {out}", "experiments.attack.eps"),
    Case("attack-eps-neg-yaml", "study {in}/attack-eps-neg.yaml --out {out}", "experiments.attack.eps"),
    Case("attack-setting-yaml", "study {in}/attack-setting.yaml --out {out}", "experiments.attack.attack.bogus"),
    Case("attack-steps-yaml", "study {in}/attack-steps.yaml --out {out}", "experiments.attack.attack.steps"),
    Case("heatmap-crop-yaml", "study {in}/heatmap-crop.yaml --out {out}", "experiments.heatmap.maps_crop"),
    Case("hard-fraction-yaml", "study {in}/hard-fraction.yaml --out {out}", "experiments.hard.hard_fraction"),
    # report
    Case("report-not-study", "report {in}/knee", "knee"),
    Case("report-missing", "report {in}/nowhere", "nowhere"),
    Case("report-out-file", "report {in}/study-done --out {in}/file", "file"),
    Case("report-out-readonly", "report {in}/study-done --out {in}/readonly/r", "readonly"),
    # demo
    Case("demo-out-file", "demo --out {in}/file --quick", "file"),
    Case("demo-out-below-file", "demo --out {in}/file/d --quick", "file"),
    Case("demo-out-readonly", "demo --out {in}/readonly/d --quick", "readonly"),
    Case("demo-device", "demo --out {out} --quick --device gpu7", "device"),
    Case("demo-device-missing", f"demo --out {{out}} --quick --device {MISSING_GPU}", "device"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    _make_inputs(root)
    done = root / "in" / "study-done"  # a study folder for the report cases (a plan, no jobs)
    done.mkdir()
    (done / "study.yaml").write_text((root / "in" / "study.yaml").read_text())
    yield root
    os.chmod(root / "in" / "readonly", 0o755)


@pytest.fixture(autouse=True)
def _no_root_bypass(monkeypatch) -> None:
    """Tests may run as root, for whom every folder is writable: honour the mode bits instead."""
    real = os.access

    def access(path, mode, *args, **kwargs) -> bool:
        if os.geteuid() == 0 and mode & os.W_OK and os.path.exists(path) and not os.stat(path).st_mode & 0o200:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clean_line(case: Case, inputs: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(inputs / "cache"))
    monkeypatch.chdir(inputs)
    out = inputs / "out" / case.name
    before = files(inputs)
    argv = case.argv.replace("{in}", str(inputs / "in")).replace("{out}", str(out)).split()
    argv = [a.replace("''", "") for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse rejects a flag's type itself
        code = exit_.code
    err = capsys.readouterr().err
    if code == 2 and err.startswith("usage:"):  # argparse's own message: usage line + one error line
        err = err.splitlines()[-1]
    line = the_line(err)
    assert code == case.code, line
    assert case.named in line, line
    short = len(line.replace(str(inputs), ""))  # the length a user sees, less our temporary folder
    assert short <= 400 and (case.name != "recon-ckpt-arch" or short < 200), line
    assert files(inputs) == before, sorted(map(str, files(inputs) - before))
    assert not out.exists() or not any(out.rglob("*")), sorted(map(str, out.rglob("*")))


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 120
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.fixture
def held_store(tmp_path: Path):
    """A study folder whose store another run holds (an flock on another open file, as a second
    process would; the store's lock is re-entrant only within the process that took it)."""
    import fcntl
    import json

    out = tmp_path / "running"
    (out / "store").mkdir(parents=True)
    (out / "store" / "plan.json").write_text(json.dumps({"study": "running", "layout": 2, "jobs": []}))
    (out / "study.yaml").write_text("name: running\n")
    with open(out / "store" / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("pid 999999\n")
        handle.flush()
        yield out


@pytest.mark.parametrize("argv", [["demo", "--quick", "--device", "cpu", "--out"], ["report"]], ids=["demo", "report"])
def test_a_refused_second_run_touches_nothing(argv: list[str], held_store: Path, capsys) -> None:
    """The lock comes before any side effect: no data generated under, no report over a running run."""
    before = files(held_store)
    assert cli.main([*argv, str(held_store)]) == 2
    line = the_line(capsys.readouterr().err)
    assert "store is in use by pid 999999" in line, line
    assert files(held_store) == before
    assert not (held_store / "data").exists() and not (held_store / "report").exists()
