"""The training loop: resume, steps, statistics, snapshots, sample grids, stops.

    for each step s (global batch B = rounds × world × b):
        each rank backpropagates its `rounds` micro-batches of b images (cfgdiff.train.data)
        the mean loss over the global batch is checked (non-finite → stop, checkpoints intact)
        AdamW step at lr(s), EMA update                                    (cfgdiff.train.step)
        every tick_kimg: a progress line and a stats.jsonl row; every snapshot_kimg: a checkpoint;
        every grid_kimg: a sample grid PNG.

Stops (cfgdiff.stops): a signal lands where the loop is, between or inside micro-batches; the partial
accumulation is dropped and the last completed step is checkpointed (the optimiser step and its EMA
update are a critical section, never half applied). A second signal exits at once.

Rank 0 alone writes; every rank reads the same checkpoint on resume.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from cfgdiff import dist, layout, stops
from cfgdiff.config import TrainConfig, to_dict
from cfgdiff.console import Progress, _duration
from cfgdiff.errors import CfgdiffError, Interrupted, NumericalError
from cfgdiff.runs import checkpoint_files, dataset_record, save_checkpoint
from cfgdiff.train import estimate
from cfgdiff.train.data import StepSampler, chunk_seed
from cfgdiff.train.grid import write_sample_grid
from cfgdiff.train.resume import load_state
from cfgdiff.train.start import check_creatable, header, with_micro_batch
from cfgdiff.train.step import StepModel, accumulate_gradients, apply_gradients, setup_model
from cfgdiff.train.tracking import RunLog, check_loggers
from cfgdiff.train.workers import usable_cores, usable_workers, worker_init


def total_steps(cfg: TrainConfig) -> int:
    """Optimiser steps for cfg.kimg (the last step may overshoot by less than one batch)."""
    return max(1, math.ceil(cfg.kimg * 1000 / cfg.batch - 1e-9))


def crossed(interval_kimg: float, batch: int, step: int) -> bool:
    """Whether the images seen after step `step` (0-based) crossed a multiple of interval_kimg."""
    every = interval_kimg * 1000
    return (step + 1) * batch // every > step * batch // every


def train(cfg: TrainConfig, loggers: list[str] | None = None, refuse_slow: bool = False) -> dict[str, Any]:
    """Train the run `cfg.run_dir` up to cfg.kimg, resuming from its newest checkpoint; returns a
    summary (steps, kimg, last loss, files written, throughput). The micro-batch, when not set, is
    resolved from the device (cfgdiff.train.start); the run folder appears after the first step.
    Stops follow cfgdiff.stops; the run folder is claimed as train's and locked while it trains.
    Before the first step one micro-batch is timed (cfgdiff.train.estimate): the plan's step time,
    img/s and ETA are printed, and a far too slow plan is refused (`refuse_slow`: zero-flag `train`)
    or warned about."""
    old_handlers = stops.install()
    try:  # the handlers go back however this ends, a refused run folder included
        run_dir = Path(cfg.run_dir)
        check_creatable(run_dir)
        log = RunLog(run_dir, loggers)
        try:
            log.hold_lock()  # an existing folder now; a new one once the first step has made it
            return _train(cfg, loggers, log, refuse_slow)
        finally:
            log.close()
    finally:
        stops.restore(old_handlers)


def _train(cfg: TrainConfig, loggers: list[str] | None, log: RunLog, refuse_slow: bool) -> dict[str, Any]:
    from cfgdiff.data.dataset import ImageDataset
    from cfgdiff.nn import build_unet, count_params

    run_dir = Path(cfg.run_dir)
    check_loggers(loggers or [])
    dataset = ImageDataset(cfg.dataset, flip=False)  # flips are drawn per micro-batch (exact resume)
    dist.init()
    device, world, rank = dist.device(), dist.world_size(), dist.rank()
    cfg, why = with_micro_batch(cfg, run_dir, device, world)
    micro = cfg.batch_per_device or cfg.batch // world
    if micro < 1 or cfg.batch % (micro * world):
        from cfgdiff.errors import ConfigError

        raise ConfigError(f"batch {cfg.batch} is not a multiple of {world} processes × batch_per_device {micro}")
    rounds = cfg.batch // (micro * world)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
    net, teacher = build_unet(cfg.model), None
    if cfg.distill is not None:  # a student starts as its teacher (cfgdiff.train.distill)
        from cfgdiff.train.distill import init_student, load_teacher

        teacher = load_teacher(cfg.distill, device)
        init_student(net, teacher)
    m = setup_model(cfg, net, device)
    m.teacher = teacher
    info = dataset_record(cfg.dataset, dataset.info.size, dataset.info.num_classes, dataset.info.class_names)
    start = load_state(run_dir, cfg, m, info)
    stop = total_steps(cfg)
    ctx = _Loop(cfg, m, run_dir, info, log)
    if start >= stop:  # trained to this duration already (or further): nothing to train
        ctx.log.begin(cfg, start)
        ctx.last_loss = _recorded_loss(run_dir / "stats.jsonl")
        if start == stop:  # a kill after the last checkpoint may have cost the final grid
            ctx.grid(stop - 1, missing_only=True)
        ctx.log.close()
        return _summary(cfg, run_dir, start, start, ctx, None)
    sampler = StepSampler(len(dataset), cfg.seed, cfg.batch, micro, rank, world, start, stop)
    workers = usable_workers(cfg.workers)  # the data order does not depend on it
    if workers < cfg.workers:
        ctx.log.line(f"train: {workers} data-loading workers, not {cfg.workers}: {usable_cores()} usable cores",
                     echo=False)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         pin_memory=device.type == "cuda", worker_init_fn=worker_init())
    ctx.log.line(header(cfg, count_params(m.net), device, m.autocast, world, why, {**info, "count": len(dataset)},
                        start))
    ctx.estimate = plan_check(cfg, m, dataset, micro, rounds, stop - start, device, world, refuse_slow, ctx.log)
    t0 = time.monotonic()
    done = start  # optimiser steps applied so far
    try:
        with Progress("train", total=stop * cfg.batch, unit="img", start=start * cfg.batch) as progress:
            batches = iter(loader)  # workers fork with the stop handler in place, then ignore stops
            for step in range(start, stop):
                chunks = ((*next(batches), chunk_seed(cfg.seed, step, j)) for j in sampler.chunks(step))
                loss = accumulate_gradients(m, cfg, chunks, rounds)
                loss = float(dist.all_reduce_sum(loss).item()) / (rounds * world)
                if not math.isfinite(loss):
                    raise NumericalError(ctx.nonfinite_message(loss, step))
                with stops.critical():
                    grad_norm = apply_gradients(m, cfg, step)
                    done = step + 1
                    if step == start:  # the run folder appears once a step has succeeded
                        ctx.log.begin(cfg, start)
                    ctx.record(step, loss, grad_norm)
                progress.advance(cfg.batch, loss=loss)
                last = step == stop - 1
                if last or crossed(cfg.snapshot_kimg, cfg.batch, step):
                    ctx.snapshot(step)
                if last or crossed(cfg.grid_kimg, cfg.batch, step):
                    ctx.grid(step)
    except stops.Stopped as e:
        batches = None  # shut the workers down before saving
        m.opt.zero_grad(set_to_none=True)  # the partial accumulation
        raise Interrupted(ctx.stopped(done, start), signum=e.signum) from None
    seconds = time.monotonic() - t0
    ctx.log.line(f"done: {stop} steps, {stop * cfg.batch / 1000:g} kimg, loss {ctx.last_loss:.4g}", echo=False)
    ctx.log.close()
    return _summary(cfg, run_dir, start, stop, ctx, (stop - start) * cfg.batch / seconds if seconds > 0 else None)


def plan_check(cfg: TrainConfig, m: StepModel, dataset: Any, micro: int, rounds: int, steps_left: int,
               device: torch.device, world: int, refuse_slow: bool, log: RunLog) -> estimate.Estimate:
    """Time one micro-batch here and print the plan; refuse (`refuse_slow`) or warn when it is far too slow."""
    est, x, labels = estimate.measure(m, cfg, dataset, micro, rounds, steps_left)
    log.line(estimate.line(est, device, steps_left * cfg.batch / 1000))
    if est.too_slow():
        hint = (estimate.suggestion(cfg, estimate.tiny_img_per_s(cfg, x, labels, device)) if world == 1
                else "a smaller --preset or --kimg, or more GPUs")
        message = (f"this plan is far too slow here: one optimiser step takes {estimate.duration(est.step_seconds)} "
                   f"and the run {estimate.duration(est.eta_seconds)}; to start now, run {hint}")
        if refuse_slow:
            raise CfgdiffError(message)
        log.line(f"cfgdiff: warning: {message} (starting, as the flags ask)")
    return est


def _summary(cfg: TrainConfig, run_dir: Path, start: int, stop: int, ctx: _Loop,
             img_per_s: float | None) -> dict[str, Any]:
    """What `train` returns (and `--json` prints): strict JSON values, None where there is none (a
    finished run rerun trains nothing: no throughput, and the loss is the last one recorded)."""
    return {
        "run_dir": str(run_dir), "steps": stop, "kimg": stop * cfg.batch / 1000, "resumed_from_step": start,
        "loss": ctx.last_loss, "checkpoint": str(ctx.last_checkpoint) if ctx.last_checkpoint else None,
        "img_per_s": img_per_s, "config": to_dict(cfg),
    }


class _Loop:
    """The loop's bookkeeping: tick statistics, snapshots and grids (rank 0 writes)."""

    def __init__(self, cfg: TrainConfig, m: StepModel, run_dir: Path, info: dict[str, Any], log: RunLog):
        self.cfg, self.m, self.run_dir, self.info, self.log = cfg, m, run_dir, info, log
        self.ticks = 0
        self.tick_losses: list[float] = []
        self.last_loss: float | None = None
        self.tick_start = time.monotonic()
        files = checkpoint_files(run_dir)
        self.last_checkpoint: Path | None = files[-1] if files else None
        self.estimate: estimate.Estimate | None = None  # the plan measured before the first step

    def nonfinite_message(self, loss: float, step: int) -> str:
        last = self.last_checkpoint or "none (no checkpoint was written yet)"
        return f"loss is {loss} at step {step + 1} ({(step + 1) * self.cfg.batch / 1000:g} kimg); " \
               f"training stopped; the last good checkpoint is {last}"

    def stopped(self, done: int, start: int) -> str:
        """After a stop signal: checkpoint the last completed step if it is not saved yet (rank 0, no
        collective: the other ranks are stopping too), close the log; the message to report."""
        saved = self.last_checkpoint is not None and self.last_checkpoint.name == layout.step_file("checkpoint", done)
        if done > start and not saved and dist.is_main():
            with stops.critical():
                self.last_checkpoint = save_checkpoint(self.run_dir, self.cfg, self.info, done, done * self.cfg.batch,
                                                       self.m.net, self.m.ema, self.m.opt, self.cfg.keep)
        message = (f"interrupted after step {done} ({done * self.cfg.batch / 1000:g} kimg); "
                   f"saved {self.last_checkpoint or 'nothing yet (no step had completed)'}; "
                   "rerun the same command to resume")
        if self.log.started:
            self.log.line(f"stopped: {message}", echo=False)
        self.log.close()
        return message

    def record(self, step: int, loss: float, grad_norm: float) -> None:
        cfg = self.cfg
        self.tick_losses.append(loss)
        if not (crossed(cfg.tick_kimg, cfg.batch, step) or step == total_steps(cfg) - 1):
            return
        now = time.monotonic()
        self.last_loss = sum(self.tick_losses) / len(self.tick_losses)
        seconds, kimg = max(now - self.tick_start, 1e-9), len(self.tick_losses) * cfg.batch / 1000
        row = {"step": step + 1, "kimg": (step + 1) * cfg.batch / 1000, "loss": self.last_loss,
               "grad_norm": grad_norm, "lr": self.m.opt.param_groups[0]["lr"],
               "img_per_s": kimg * 1000 / seconds, "time": time.time(), "elapsed_s": self.log.elapsed(),
               "s_per_kimg": seconds / kimg}
        if self.m.device.type == "cuda":
            row["max_mem_gib"] = torch.cuda.max_memory_allocated(self.m.device) / 2**30
        self.tick_losses, self.tick_start = [], now
        self.log.row(row)
        left = max(0.0, total_steps(cfg) * cfg.batch / 1000 - row["kimg"])
        self.log.line(f"tick: step {row['step']} kimg {row['kimg']:g} loss {row['loss']:.4g} "
                      f"{row['img_per_s']:.1f} img/s {row['s_per_kimg']:.3g} s/kimg elapsed {_duration(row['elapsed_s'])}"
                      f" ETA {estimate.duration(left * row['s_per_kimg'])}", echo=False)  # the bar shows its own
        self.ticks += 1

    def snapshot(self, step: int) -> None:
        if dist.is_main():
            self.last_checkpoint = save_checkpoint(self.run_dir, self.cfg, self.info, step + 1,
                                                   (step + 1) * self.cfg.batch, self.m.net, self.m.ema, self.m.opt,
                                                   self.cfg.keep)
            self.log.line(f"checkpoint: {self.last_checkpoint}", echo=False)
        dist.barrier()

    def grid(self, step: int, missing_only: bool = False) -> None:
        path = self.run_dir / layout.grid_file(step + 1)
        if dist.is_main() and not (missing_only and path.exists()):
            kimg = (step + 1) * self.cfg.batch / 1000
            write_sample_grid(self.m.ema, self.cfg, path, self.m.autocast, kimg)
            self.log.line(f"grid: {path} ({kimg:g} kimg)", echo=False)


def _recorded_loss(stats: Path) -> float | None:
    """The loss of the last stats.jsonl row (already trimmed to the checkpoint), or None."""
    from cfgdiff.train.resume import stats_rows

    rows = stats_rows(stats)
    loss = rows[-1].get("loss") if rows else None
    return float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else None
