"""`cfgdiff sample`: guided ancestral sampling (Eq. 4 with Eq. 6) to an ADM-compatible npz."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgdiff.cli import options as o


def sample(
    checkpoint: o.Checkpoint = None,
    w: o.W = 0.3,
    n: o.N = 50000,
    steps: o.Steps = 256,
    v: o.V = 0.3,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output npz (arr_0 images, arr_1 labels).")] = Path(
        "samples.npz"
    ),
    seeds: o.Seeds = None,
    balanced: o.Balanced = False,
    classes: o.Classes = None,
    batch: o.Batch = 64,
    shard_size: Annotated[
        int, typer.Option("--shard-size", min=1, metavar="IMAGES", help="Images per part file (the unit of resume).")
    ] = 1000,
    grid: Annotated[Optional[Path], typer.Option("--grid", help="Also write a PNG grid of the first samples.")] = None,
    no_clip: o.NoClip = False,
    force: o.Force = False,
    dry_run: o.DryRun = False,
    as_json: o.Json = False,
) -> None:
    """Draw N samples with guidance weight w; rerunning the same command resumes.

    Example:  cfgdiff sample runs/imagenet64-adm64 --w 0.3 --n 50000 --balanced --out w0.3.npz
    Under torchrun the processes split the seeds:  torchrun --nproc_per_node 8 -m cfgdiff sample ...
    """
    from cfgdiff.config import SampleConfig

    req = SampleConfig(  # the options checked together, before torch and the checkpoint load
        checkpoint=checkpoint, w=w, n=n, steps=steps, v=v, out=out, seeds=seeds, balanced=balanced,
        classes=classes, batch=batch, shard_size=shard_size, grid=grid, clip=not no_clip, force=force, dry_run=dry_run,
    )
    from cfgdiff import dist
    from cfgdiff.sampling.command import run_sample_command

    result = run_sample_command(req)
    if as_json and dist.is_main():  # under torchrun, rank 0 alone reports: one JSON document
        typer.echo(json.dumps(result, indent=1))
