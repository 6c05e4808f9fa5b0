"""`cfgdiff sweep`: FID / IS / precision / recall over a grid of guidance weights (the paper's Fig. 1-3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgdiff.cli import options as o


def sweep(
    checkpoint: o.Checkpoint = None,
    w: o.Grid = "0:5:0.1",
    n: o.N = 50000,
    steps: o.Steps = 256,
    v: o.V = 0.3,
    ref: Annotated[
        Optional[str],
        typer.Option("--ref", help="Reference images or statistics (default: the checkpoint's training dataset)."),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Sweep folder (default: sweeps/<dataset>-T<T>-n<n>).")
    ] = None,
    seeds: o.Seeds = None,
    balanced: o.Balanced = False,
    batch: o.Batch = 64,
    inception: Annotated[Optional[str], typer.Option("--inception", help="Inception weights file.")] = None,
    keep_samples: Annotated[bool, typer.Option("--keep-samples", help="Keep each w's samples as npz.")] = False,
    no_clip: o.NoClip = False,
    as_json: o.Json = False,
) -> None:
    """Sample and score every w of the grid with the same seeds and labels; rerunning resumes.

    Writes sweep.jsonl, sweep.csv, table.md (Fig. 1), fid_vs_is.png (Fig. 2) and grid.png (Fig. 3).

    Example:  cfgdiff sweep runs/imagenet64-adm64 --w 0:5:0.1 --n 50000 --ref VIRTUAL_imagenet64_labeled.npz
    """
    from cfgdiff.config import SweepConfig

    req = SweepConfig(  # the options checked together, before torch and the checkpoint load
        checkpoint=checkpoint, grid=w, n=n, steps=steps, v=v, ref=ref, out_dir=out, seeds=seeds,
        balanced=balanced, batch=batch, inception=inception, keep_samples=keep_samples, clip=not no_clip,
    )
    from cfgdiff import dist
    from cfgdiff.sampling.sweep import run_sweep

    rows = run_sweep(req)
    if as_json and dist.is_main():  # under torchrun, rank 0 alone reports: one JSON document
        typer.echo(json.dumps([rows[k] for k in sorted(rows)], indent=1))
