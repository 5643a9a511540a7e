"""`mrirobust demo`: the whole study at demo scale on the embedded synthetic dataset.

It generates the data (once), runs the study in `mrirobust/study/demo.yaml` (or the smoke-sized
`quick.yaml`) into the same folder — train, tune, reconstruct, attack, shift, small features —
and writes the HTML report. A second run finds everything in the store and only rewrites the
report; the store's lock is held from before the data are generated, so a second demo started
while one runs is refused without touching the first one's data or report.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from mrirobust.atomic import check_output
from mrirobust.data.synthetic import synthesize
from mrirobust.devices import resolve_device


def ensure_demo_data(out: Path) -> Path:
    """Generate the embedded dataset under `out/data` unless a complete copy is already there."""
    data = out / "data"
    stamp = data / ".complete"
    if not stamp.exists():
        paths = synthesize(data, "demo")
        print(f"generated the embedded dataset: {len(paths)} volumes in {data}")
        stamp.write_text("\n".join(str(p.relative_to(data)) for p in paths) + "\n")
    return data


def demo_config(quick: bool = False) -> dict:
    """The packaged demo study (data paths relative to the demo folder; method checkpoints, the
    weights shipped with the package, relative to the study's package folder)."""
    name = "quick.yaml" if quick else "demo.yaml"
    from mrirobust.study.config import weights_relative_to

    folder = resources.files("mrirobust.study")
    config = yaml.safe_load(folder.joinpath(name).read_text())
    config["methods"] = {label: weights_relative_to(entry, Path(str(folder)))
                         for label, entry in config["methods"].items()}
    return config


def run_demo(out: str | Path = "out/demo", *, quick: bool = False, device: str = "auto",
             executor: str | None = None, progress: bool = True) -> Path:
    """Data, study and report in `out`; returns the report's path."""
    from mrirobust.study.config import validate
    from mrirobust.study.runner import run_with_report
    from mrirobust.study.store import Store

    out = Path(out).resolve()
    check_output(out, folder=True)
    resolve_device(device, "--device")
    with Store(out / "store").lock():  # a second demo on this folder is refused before touching the data
        ensure_demo_data(out)
        return run_with_report(validate(demo_config(quick), base=out), out, executor=executor, device=device,
                               progress=progress)
