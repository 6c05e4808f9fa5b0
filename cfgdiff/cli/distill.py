"""`cfgdiff distill`: guided distillation (Meng et al. 2023): a w-conditioned student, then progressive rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgdiff import limits
from cfgdiff.cli import options as o
from cfgdiff.config import check_grid_name
from cfgdiff.parse import parse_w_range


def distill(
    run: Annotated[Optional[Path], typer.Argument(
        metavar="RUN", show_default=False,
        help="The teacher: a trained run folder (its newest EMA file) or weights file (default: the newest run "
             "under runs/); with --stage progressive, a distilled student.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", metavar="DIR", show_default=False,
        help="Folder of the stages' runs: DIR/guided, DIR/steps-<T>, ... (default: <RUN>-distill beside RUN).")] = None,
    stage: Annotated[str, typer.Option(
        "--stage", metavar="STAGE", help="all: stage 1 then the rounds; guided: stage 1 only (the w-conditioned "
                                         "student); progressive: rounds only, from a student RUN.")] = "all",
    steps: Annotated[int, typer.Option(
        "--steps", "-T", min=2, max=limits.STEPS[1],
        help="The last student's steps (network evaluations per sample).")] = 4,
    rounds: Annotated[int, typer.Option(
        "--rounds", min=0, max=16,
        help="Progressive rounds, each halving the steps (2T − 1 → T): with --steps 4, 4 rounds start from a "
             "49-step teacher.")] = 4,
    kimg: Annotated[Optional[float], typer.Option(
        "--kimg", min=limits.KIMG[0], max=limits.KIMG[1], metavar="KIMG", show_default=False,
        help="Training images per stage and per round, in thousands (default: a tenth of the teacher's).")] = None,
    w_range: Annotated[Optional[str], typer.Option(
        "--w-range", metavar="LO:HI", callback=o.rule(parse_w_range), show_default=False,
        help="The guidance weights the student learns (w ~ U[LO, HI]); sampling refuses others (default: 0:4; "
             "--stage progressive: the teacher student's).")] = None,
    grid: Annotated[Optional[str], typer.Option(
        "--grid", metavar="NAME", callback=o.rule(check_grid_name),
        show_default=False, help="The students' λ grid family: paper (default), linear, edm.")] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", metavar="FILE", show_default=False,
        help="Dataset file (default: the teacher's, as recorded).")] = None,
    batch: Annotated[Optional[int], typer.Option(
        "--batch", min=limits.BATCH[0], max=limits.BATCH[1], metavar="IMAGES", show_default=False,
        help="Global batch (default: the teacher's recipe).")] = None,
    batch_per_device: Annotated[Optional[int], typer.Option(
        "--batch-per-device", min=limits.BATCH_PER_DEVICE[0], max=limits.BATCH_PER_DEVICE[1], metavar="IMAGES",
        show_default=False,
        help="Micro-batch per process (default: the largest that fits).")] = None,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", min=limits.LR[0], max=limits.LR[1], metavar="RATE", show_default=False,
        help="AdamW learning rate (default: the teacher's recipe).")] = None,
    amp: Annotated[Optional[bool], typer.Option(
        "--amp/--no-amp", help="bf16 autocast where the device has native bf16 (default: on).")] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=limits.WORKERS[0], max=limits.WORKERS[1], metavar="COUNT",
        help="Data-loading processes per rank (default: the teacher's).")] = None,
    sets: o.Sets = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document (docs/json.md) on stdout.")] = False,
) -> None:
    """Distil a guided teacher into a few-step student; rerunning the same command resumes.

    Stage 1 trains one network that takes w and matches the teacher's Eq. 6 (one forward a step instead of
    two); each progressive round halves its steps. `sample` and `sweep` take every folder it writes.

    Example:  cfgdiff distill runs/cifar10-tiny --steps 4 --rounds 4 --kimg 20

    Then:     cfgdiff sample runs/cifar10-tiny-distill/steps-4 --w 2 --out student.npz
    """
    from cfgdiff.config import TrainConfig, check_sets, merge_overrides

    lo, hi = parse_w_range(w_range) if w_range else (None, None)
    flags = {"batch": batch, "batch_per_device": batch_per_device, "lr": lr, "amp": amp, "workers": workers}
    overrides = merge_overrides(check_sets(sets or [], TrainConfig), flags)
    from cfgdiff import dist
    from cfgdiff.train.distill_chain import DistillRequest, run_distill

    from cfgdiff.runs import newest_run

    req = DistillRequest(teacher=run if run is not None else newest_run(), out=out, stage=stage, steps=steps, rounds=rounds, kimg=kimg, w_min=lo, w_max=hi,
                         grid=grid, data=data, overrides=overrides)
    results = run_distill(req)
    if not dist.is_main():
        return
    if as_json:
        import torch

        from cfgdiff.cli import envelope

        first = results[0]["config"]["distill"]
        envelope.emit("distill", inputs={"teacher": first["teacher"]},
                      outputs={"runs": [r["run_dir"] for r in results]},
                      settings={"stage": stage, "steps": steps, "rounds": rounds,
                                "w_range": [first["w_min"], first["w_max"]], "kimg": kimg},
                      results={"stages": [{k: r[k] for k in ("stage", "run_dir", "kimg", "loss", "img_per_s")}
                                          for r in results]},
                      provenance={"torch": torch.__version__, "teacher_sha256": first["teacher_sha256"]})
    else:
        last = results[-1]
        dc = last["config"]["distill"]
        typer.echo(f"distilled into {last['run_dir']} (w {dc['w_min']:g}:{dc['w_max']:g}); sample it with `cfgdiff "
                   f"sample {last['run_dir']} --w W`", err=True)
