"""`cfgdiff train`: train (or resume) a class-conditional ADM U-Net with label dropout (Eq. 5)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from cfgdiff import limits

from cfgdiff.cli import options as o
from cfgdiff.config import train_preset

def train(
    data: Annotated[
        Optional[str],
        typer.Option("--data", metavar="FILE", help="Dataset file from `cfgdiff prepare` (default: the only one under data/)."),
    ] = None,
    preset: Annotated[
        Optional[str],
        typer.Option("--preset", metavar="NAME", callback=o.rule(train_preset),
                     help="Network and recipe: adm64 (the paper's), cifar32 or tiny (default: by the data's resolution: 64 px adm64, 32 px cifar32)."),
    ] = None,
    run_dir: Annotated[
        Optional[str],
        typer.Option("--run-dir", metavar="DIR", help="Run directory (default: runs/<dataset>-<preset>)."),
    ] = None,
    kimg: Annotated[
        Optional[float],
        typer.Option("--kimg", min=limits.KIMG[0], max=limits.KIMG[1], metavar="KIMG", help="Training duration in thousands of images (default: the preset's; adm64: the paper's 540K steps of 2048)."),
    ] = None,
    batch: Annotated[
        Optional[int],
        typer.Option("--batch", min=limits.BATCH[0], max=limits.BATCH[1], metavar="IMAGES", help="Global batch, all processes and accumulation rounds together (default: the preset's; adm64: 2048 as the paper)."),
    ] = None,
    batch_per_device: Annotated[
        Optional[int],
        typer.Option("--batch-per-device", min=1, max=limits.BATCH_PER_DEVICE[1], metavar="IMAGES",
                     help="Micro-batch per process; below batch/processes, gradients accumulate (default: the largest that fits the device)."),
    ] = None,
    lr: Annotated[
        Optional[float],
        typer.Option("--lr", min=limits.LR[0], max=limits.LR[1], metavar="RATE", help="AdamW learning rate (default: the preset's; adm64: 3e-4 as ADM)."),
    ] = None,
    lr_warmup_kimg: Annotated[
        Optional[float],
        typer.Option("--lr-warmup", min=0.0, max=limits.KIMG[1], metavar="KIMG", help="Linear learning-rate warm-up (default: the preset's; ADM uses none)."),
    ] = None,
    ema_decay: Annotated[
        Optional[float],
        typer.Option("--ema", min=0.0, max=0.999999, metavar="DECAY", help="EMA decay per optimiser step (default: the preset's; adm64: 0.9999 as ADM)."),
    ] = None,
    ema_warmup: Annotated[
        Optional[bool],
        typer.Option("--ema-warmup/--no-ema-warmup", help="EMA decay min(decay, (1+t)/(10+t)), for short runs (default: the preset's)."),
    ] = None,
    dropout: Annotated[
        Optional[float],
        typer.Option("--dropout", min=0.0, max=0.99, metavar="P", help="Dropout in the residual blocks (default: the preset's; adm64: 0.1 as ADM)."),
    ] = None,
    grad_clip: Annotated[
        Optional[float],
        typer.Option("--grad-clip", min=limits.GRAD_CLIP[0], max=limits.GRAD_CLIP[1], metavar="NORM", help="Max gradient norm; 0: no clipping (default: 0, as ADM)."),
    ] = None,
    seed: Annotated[
        Optional[int],
        typer.Option("--seed", min=limits.SEED[0], max=limits.SEED[1], metavar="INT", help="Seed of weights, data order and noise (default: 0)."),
    ] = None,
    tick_kimg: Annotated[
        Optional[float],
        typer.Option("--tick", min=limits.KIMG[0], max=limits.KIMG[1], metavar="KIMG", help="Interval of the progress line and stats.jsonl rows (default: the preset's)."),
    ] = None,
    snapshot_kimg: Annotated[
        Optional[float],
        typer.Option("--snapshot", min=limits.KIMG[0], max=limits.KIMG[1], metavar="KIMG", help="Interval of checkpoints, the resume points (default: the preset's)."),
    ] = None,
    grid_kimg: Annotated[
        Optional[float],
        typer.Option("--preview-every", min=limits.KIMG[0], max=limits.KIMG[1], metavar="KIMG",
                     help="Interval of the preview PNGs (fixed seeds at w = 0 and at the preset's grid_w, --set grid_w=W) "
                     "(default: the preset's)."),
    ] = None,
    grid_sampler: o.SamplerName = None,  # None: the preset's (the config checks names from the flags and --set)
    grid_schedule: o.GridName = None,
    keep: Annotated[
        Optional[int],
        typer.Option("--keep", min=limits.KEEP[0], max=limits.KEEP[1], metavar="COUNT", help="Checkpoints kept, the oldest removed first (default: 3)."),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", min=limits.WORKERS[0], max=limits.WORKERS[1], metavar="COUNT", help="Data-loading processes per rank (default: the preset's)."),
    ] = None,
    compile_: Annotated[
        Optional[bool],
        typer.Option("--compile/--no-compile", help="torch.compile the network (default: off; compiling takes minutes)."),
    ] = None,
    amp: Annotated[
        Optional[bool],
        typer.Option("--amp/--no-amp", help="bf16 autocast where the device has native bf16 (default: on)."),
    ] = None,
    sets: o.Sets = None,
    log: Annotated[
        Optional[list[str]],
        typer.Option("--log", metavar="NAME",
                     help="Also log scalars to tensorboard (under RUN/tb; pip install 'cfgdiff[tensorboard]'); log.txt and stats.jsonl are always written."),
    ] = None,
    hours: Annotated[
        float,
        typer.Option("--hours", min=limits.HOURS[0], max=limits.HOURS[1], metavar="HOURS", help="With --dry-run: the wall time to plan for."),
    ] = 24.0,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan on stdout (resolved config, size, FLOPs, the img/s needed); train nothing."),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON document (docs/json.md) on stdout."),
    ] = False,
) -> None:
    """Train on a prepared dataset; rerunning the same command resumes from the newest checkpoint.

    --sampler and --grid set how the preview PNGs (every --preview-every kimg) are drawn.

    Example:  cfgdiff train --dry-run
    Example:  cfgdiff train --data data/cifar10.h5 --preset tiny --kimg 200
    Example:  torchrun --nproc_per_node 8 -m cfgdiff train --data data/in64.h5
    """
    from cfgdiff.config import TrainConfig, check_sets, merge_overrides

    flags = {
        "kimg": kimg, "batch": batch, "batch_per_device": batch_per_device, "lr": lr,
        "lr_warmup_kimg": lr_warmup_kimg, "ema_decay": ema_decay, "ema_warmup": ema_warmup, "model.dropout": dropout,
        "grad_clip": grad_clip, "seed": seed, "tick_kimg": tick_kimg, "snapshot_kimg": snapshot_kimg,
        "grid_kimg": grid_kimg, "grid_sampler": grid_sampler, "grid_schedule": grid_schedule, "keep": keep,
        "workers": workers, "compile": compile_, "amp": amp,
    }
    overrides = merge_overrides(check_sets(sets or [], TrainConfig), flags)  # before torch and the data
    from cfgdiff import dist
    from cfgdiff.train.loop import train as run_training
    from cfgdiff.train.setup import plan, resolve_config

    cfg = resolve_config(data, preset, run_dir, overrides)
    # zero-flag: the preset's plan was not asked for by the user, so a plan far too slow for this device
    # is refused with a command that fits (cfgdiff.train.estimate); explicit sizing flags are obeyed
    zero_flag = preset is None and kimg is None and batch is None and batch_per_device is None and not sets
    result = plan(cfg, hours) if dry_run else run_training(cfg, log or [], refuse_slow=zero_flag)
    if not dist.is_main():  # under torchrun, rank 0 alone reports
        return
    if as_json:
        _emit(cfg, result, dry_run, log or [])
    elif dry_run:
        typer.echo(json.dumps(result["config"], indent=1))
        typer.echo(
            f"params {result['params'] / 1e6:.2f}M, {result['flops_per_image_forward'] / 1e9:.3g} GFLOP/image forward "
            f"(training ≈ 3×), {result['steps']} steps × {cfg.batch} images; "
            f"{result['img_per_s_needed']:.1f} img/s ({result['tflops_needed']:.3g} TFLOP/s) to finish in {hours:g} h"
        )
        if result.get("estimate"):
            typer.echo(result["estimate"]["line"])
    else:
        loss = "n/a" if result["loss"] is None else f"{result['loss']:.4g}"
        typer.echo(f"trained {result['kimg']:g} kimg in {cfg.run_dir} (loss {loss})", err=True)


def _emit(cfg, result: dict, dry_run: bool, loggers: list[str]) -> None:
    """The `--json` envelope of a run or of its plan (docs/json.md)."""
    import torch

    from cfgdiff import dist
    from cfgdiff.cli import envelope

    numbers = {k: v for k, v in result.items() if k not in ("config", "run_dir", "checkpoint")}
    envelope.emit(
        "train",
        inputs={"data": cfg.dataset},
        outputs={"run_dir": cfg.run_dir, "checkpoint": result.get("checkpoint")},
        settings=result["config"],
        results={"dry_run": dry_run, "log": loggers, **numbers},
        provenance={"torch": torch.__version__, "world_size": dist.world_size()},
    )
