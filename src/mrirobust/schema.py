"""The result-row schema: the one place that names result columns.

Every experiment writes rows (flat dicts) whose column names come from here, and everything that
reads rows (report, tuning, training validation, summaries) finds its columns through here, so a
renamed column is one edit. Metric columns name their variant (`ssim[fastmri,volume-max]`, see
`metrics.ssim_name`); the other metrics are plain (`psnr`, `nmse`, `mse`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mrirobust.errors import DataError
from mrirobust.metrics import MSE_NAME, NMSE_NAME

# Provenance columns shared by every kind.
METHOD = "method"  # the label of the method a row scores
CONFIG_HASH = "config_hash"  # the digest of that method's config (the only hash name in rows)
FILE, SLICE, IMAGE = "file", "slice", "image"
MASK, MASK_SEED = "mask", "mask_seed"
VERSION = "mrirobust_version"
STATUS, REASON = "status", "reason"  # "ok" or "failed", and why
SSIM_VARIANT = "ssim_variant"
SWEEP, WORST, SAMPLES = "sweep", "worst_case", "samples"  # the perturb kind's `part`: sweep, worst case, check

PSNR, NMSE, MSE = "psnr", NMSE_NAME, MSE_NAME
METRICS = ("ssim", PSNR, NMSE, MSE)
LOSS_SUFFIX, CLEAN_SUFFIX = "_loss", "_clean"
HIGHER_IS_BETTER = ("ssim", PSNR)


def metric_family(column: str) -> str:
    """`ssim[fastmri,volume-max]_loss` -> `ssim`; `psnr` -> `psnr`; a non-metric column -> ""."""
    for suffix in (LOSS_SUFFIX, CLEAN_SUFFIX):
        column = column.removesuffix(suffix)
    family = column.split("[")[0]
    return family if family in METRICS else ""


def metric_columns(columns: Sequence[str]) -> list[str]:
    """The plain metric columns (no _loss/_clean suffix) among `columns`, in order."""
    return [c for c in columns if metric_family(c) and not c.endswith((LOSS_SUFFIX, CLEAN_SUFFIX))]


def ssim_column(rows: Sequence[Mapping[str, Any]], *, where: Any = None) -> str:
    """The SSIM column of rows (its name records the variant); DataError naming `where` if none."""
    columns = list(dict.fromkeys(k for row in rows[:1] for k in row))
    found = [c for c in metric_columns(columns) if metric_family(c) == "ssim"]
    if not found:
        raise DataError(where, f"the rows have no SSIM column among {columns}")
    return found[0]


def loss_column(metric: str) -> str:
    """The column of the loss in `metric` under a perturbation (positive: worse)."""
    return metric + LOSS_SUFFIX


def clean_column(metric: str) -> str:
    return metric + CLEAN_SUFFIX


def loss(metric: str, clean: float, perturbed: float) -> float:
    """clean - perturbed for metrics where higher is better, perturbed - clean otherwise."""
    difference = clean - perturbed
    return difference if metric_family(metric) in HIGHER_IS_BETTER else -difference
