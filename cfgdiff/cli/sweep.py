"""`cfgdiff sweep`: FID / IS / precision / recall over guidance weights, samplers and steps (the paper's Fig. 1-3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgdiff import limits

from cfgdiff.cli import options as o
from cfgdiff.cli.methods import with_settings
from cfgdiff.config import parse_axis, parse_interval_axis, parse_steps_axis
from cfgdiff.metrics import registry  # standard library only: --help stays fast


def _sweep(
    checkpoint: o.Checkpoint = None,
    w: o.Grid = "0:5:0.1",
    n: o.N = 50000,
    sampler: Annotated[
        Optional[str], typer.Option("--sampler", metavar="NAMES", callback=o.rule(lambda t: parse_axis(t, "sampler")),
                                    show_default=False,
                                    help="Sampler, or a comma list of samplers to compare (ancestral, the default; "
                                         "ddim, dpmpp-2m, heun, dpmpp-2m-sde). A distilled student: ddim.")
    ] = None,
    steps: Annotated[
        Optional[str], typer.Option("--steps", "-T", metavar="T", callback=o.rule(parse_steps_axis),
                                    show_default=False,
                                    help="Steps T, or a comma list (NFE per sample = T, 2T where guided; heun 2T-1; "
                                         "a distilled student: T). Default 256 (a distilled student: its own).")
    ] = None,
    grid: Annotated[
        Optional[str], typer.Option("--grid", metavar="NAMES", callback=o.rule(lambda t: parse_axis(t, "grid")),
                                    show_default=False,
                                    help="λ grid (paper, the default; linear, edm), or a comma list. A distilled "
                                         "student: its own.")
    ] = None,
    guidance_interval: Annotated[
        Optional[str], typer.Option("--guidance-interval", metavar="LO:HI", callback=o.rule(parse_interval_axis),
                                    help="Guide only where λ ∈ [LO, HI]; a comma list compares several ('all': "
                                         "everywhere). Default: everywhere.")
    ] = None,
    guidance: o.GuidanceNames = "cfg",
    rescale: Annotated[float, typer.Option("--rescale", min=0.0, max=1.0, metavar="PHI",
                                           help="CFG-rescale φ (0 = off).")] = 0.0,
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, metavar="P",
                                             help="Dynamic thresholding percentile of |x̂| (0 = off).")] = 0.0,
    ref: Annotated[
        Optional[str],
        typer.Option("--ref", metavar="PATH",
                     help="Reference images or statistics (default: the checkpoint's training dataset)."),
    ] = None,
    out_dir: Annotated[
        Optional[Path], typer.Option("--out-dir", "-o", metavar="DIR",
                                     help="Sweep folder (default: sweeps/<run>-step<step>, one per checkpoint).")
    ] = None,
    seeds: o.Seeds = None,
    balanced: o.Balanced = False,
    batch_per_device: Annotated[
        int, typer.Option("--batch-per-device", min=1, max=limits.BATCH_PER_DEVICE[1], metavar="IMAGES", help="Images per sampling batch (per process).")
    ] = 64,
    inception: Annotated[Optional[str], typer.Option("--inception", metavar="FILE", help="Inception weights file.")] = None,
    metrics: Annotated[
        Optional[str], typer.Option("--metrics", metavar="LIST", callback=o.rule(lambda t: parse_axis(t, "metrics")),
                                    help=f"Comma-separated subset of {','.join(registry.names())} (default: every "
                                         "metric the inputs allow).")
    ] = None,
    keep_samples: Annotated[bool, typer.Option("--keep-samples", help="Keep each row's samples as npz.")] = False,
    no_clip: o.NoClip = False,
    guide_with: o.GuideWith = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (rows to compute, NFE, time, disk) and exit.")]
    = False,
    as_json: o.Json = False,
) -> None:
    """Sample and score every combination of w, sampler, steps (and grid, interval) with the same seeds and labels.

    Rerunning resumes; adding a value to any axis computes only the new rows; a finished sweep reruns at once.

    Writes table.md (Fig. 1), fid_vs_is.png (Fig. 2), fid_vs_w.png, fid_vs_nfe.png, grid.png (Fig. 3),
    sweep.jsonl/csv and sweep.json, then prints the table and the paths.

    Example:  cfgdiff sweep runs/in64-adm64 --w 0:4:0.5 --steps 256,32,16
    """
    from cfgdiff.cli.methods import given_samplers, sweep_choices
    from cfgdiff.config import SweepConfig

    req = SweepConfig(  # the options checked together, before torch and the checkpoint load
        checkpoint=checkpoint, w=w, n=n, samplers=tuple(parse_axis(sampler, "sampler")) if sampler else None,
        steps=tuple(parse_steps_axis(steps)) if steps else None, grids=tuple(parse_axis(grid, "grid")) if grid else None,
        intervals=tuple(parse_interval_axis(guidance_interval)) if guidance_interval else (None,), sampler_given=given_samplers(),
        rescale=rescale, threshold=threshold, ref=ref, out_dir=out_dir, seeds=seeds, balanced=balanced,
        batch=batch_per_device, inception=inception, metrics=_metrics(metrics), keep_samples=keep_samples,
        clip=not no_clip, dry_run=dry_run, guide=guide_with,
        guidances=tuple((c.name, c.settings) for c in sweep_choices(parse_axis(guidance, "guidance"))),
    )
    import dataclasses

    from cfgdiff.launch import launched_rank

    from cfgdiff.sampling.sweep_files import finished_sweep, format_plan

    result = finished_sweep(req)  # a finished sweep: found without importing torch
    if result is None:
        from cfgdiff.sampling.sweep import run_sweep

        result = run_sweep(req)
    if launched_rank() != 0:  # under torchrun, rank 0 alone reports: one document
        return
    settings = {**dataclasses.asdict(req), "out_dir": str(result.out_dir)}
    if as_json:
        from cfgdiff.cli import envelope

        meta = result.meta
        envelope.emit(
            "sweep",
            inputs={"checkpoint": meta["checkpoint"]["path"], "ref": meta["reference"]["path"],
                    "inception": (meta.get("inception") or {}).get("path", inception)},
            outputs={} if dry_run else result.outputs(),
            settings=settings,
            results={"plan": result.plan} if dry_run else {"rows": result.rows, "computed": result.computed},
            provenance={k: meta.get(k) for k in ("checkpoint", "reference", "inception")},
        )
    elif dry_run:
        typer.echo(format_plan(result.plan, result.out_dir))
    else:
        table = result.out_dir / "table.md"
        typer.echo(table.read_text().rstrip())
        typer.echo("")
        for name, path in result.outputs().items():
            typer.echo(f"{name}: {path}")


def _metrics(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    unknown = [m for m in parse_axis(text, "metrics") if m not in registry.METRICS]
    if unknown:
        raise typer.BadParameter(f"unknown metric(s) {', '.join(unknown)}; choose from {','.join(registry.names())}",
                                 param_hint="'--metrics'")
    return tuple(parse_axis(text, "metrics"))


# every guidance method's settings as flags, derived from their declarations
sweep = with_settings(_sweep, sweep=True)
