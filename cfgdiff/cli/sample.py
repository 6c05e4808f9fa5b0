"""`cfgdiff sample`: guided sampling (Eq. 6) with a sampler from the registry to an ADM-compatible npz."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgdiff import limits

from cfgdiff.cli import options as o
from cfgdiff.cli.methods import with_settings


def _sample(
    checkpoint: o.Checkpoint = None,
    w: Annotated[float, typer.Option(
        "--w", callback=o.rule(o.check_w),
        help="Guidance weight w of Eq. 6; 0 = the conditional model; other tools' scale s = 1 + w. Default 0.3: "
             "mild guidance (paper Fig. 1: FID 3.03, IS 92.8; best FID at w = 0.1, best IS at w ≥ 4).")] = 0.3,
    n: o.N = 50000,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", "-T", min=limits.STEPS[0], max=limits.STEPS[1], show_default=False,
        help="T: sampling steps (λ grid points). NFE per sample: T, 2T when guided (heun: 2T−1, doubled when "
             "guided), less with --guidance-interval; a distilled student: T; --dry-run prints it. Default 256: "
             "the paper's (a distilled student: the steps it was distilled for).")] = None,
    sampler: o.SamplerName = None,
    grid: o.GridName = None,
    guidance_interval: o.LambdaInterval = None,
    guidance: o.GuidanceName = "cfg",
    guide_with: o.GuideWith = None,
    rescale: o.Rescale = 0.0,
    threshold: o.Threshold = 0.0,
    out: Annotated[str, typer.Option(
        "--out", "-o", metavar="FILE.npz|DIR/",
        help="Output npz (arr_0 images, arr_1 labels) with its provenance FILE.npz.json; a folder (trailing / "
             "or existing) gets DIR/samples.npz and the PNG folder DIR/png/000000.png, 000001.png, ... (row i of arr_0).")
    ] = "samples.npz",
    seeds: o.Seeds = None,
    balanced: o.Balanced = False,
    classes: o.Classes = None,
    batch_per_device: o.BatchPerDevice = 64,
    shard_size: Annotated[
        int, typer.Option("--shard-size", min=limits.SHARD[0], max=limits.SHARD[1], metavar="IMAGES", help="Images per part file (the unit of resume).")
    ] = 1000,
    preview: Annotated[Optional[Path], typer.Option(
        "--preview", metavar="FILE.png", help="Also write a PNG grid of the first 64 samples.")] = None,
    no_clip: o.NoClip = False,
    force: o.Force = False,
    dry_run: o.DryRun = False,
    as_json: o.Json = False,
) -> None:
    """Draw N samples with guidance weight w; rerunning the same command resumes.

    Example:  cfgdiff sample RUN --w 0.3 --n 50000 --balanced --out w0.3.npz

    Fast:     cfgdiff sample RUN --sampler dpmpp-2m --steps 20 --out fast/

    torchrun splits the seeds:  torchrun --nproc_per_node 8 -m cfgdiff sample ...
    """
    from cfgdiff.cli.methods import given_samplers, sample_choice
    from cfgdiff.config import SampleConfig

    method = sample_choice(guidance)
    req = SampleConfig(  # the options checked together, before torch and the checkpoint load
        checkpoint=checkpoint, w=w, n=n, steps=steps, out=Path(out), seeds=seeds, balanced=balanced,
        classes=classes, batch=batch_per_device, shard_size=shard_size, preview=preview, clip=not no_clip,
        force=force, dry_run=dry_run, sampler=sampler, grid=grid, sampler_given=given_samplers(), guidance_interval=guidance_interval,
        guide=guide_with, rescale=rescale, threshold=threshold, guidance=method.name,
        guidance_settings=method.settings, out_is_folder=out.endswith(("/", os.sep)),
    )
    from cfgdiff import dist
    from cfgdiff.sampling.command import plan_line, run_sample_command

    parts = run_sample_command(req)
    if not dist.is_main():  # under torchrun, rank 0 alone reports: one JSON document
        return
    if as_json:
        from cfgdiff.cli import envelope

        envelope.emit("sample", **parts)
    elif dry_run:
        typer.echo(plan_line(parts["results"]))


# every sampler's and guidance method's settings as flags (--v, --eta, --apg-eta, ...), derived from their declarations
sample = with_settings(_sample, sweep=False)
