"""`cfgdiff sweep`: the paper's FID/IS trade-off over guidance weights (Fig. 1, Fig. 2, Fig. 3), across samplers.

Every combination of the axes (sampler, steps T, λ grid, guidance interval, w) is one row, sampled with
the same seeds and labels (common random numbers, as the paper's Fig. 3). Each batch goes straight into
the Inception statistics (no 50k images per row on disk unless `keep_samples`), and each row is written
to `sweep.jsonl` and `sweep.csv` atomically. A row's key holds every axis, so a rerun with one more value
on any axis computes only the new rows. `settings.json` keeps the settings shared by every row
(checkpoint, n, seeds, labels, v, reference, Inception weights) and must match on a rerun; `sweep.json`
records the finished sweep, so that rerunning a finished sweep loads neither the model nor Inception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from cfgdiff import __version__, dist
from cfgdiff.config import SweepConfig
from cfgdiff.console import Progress
from cfgdiff.diffusion.sampler_registry import get_sampler
from cfgdiff.errors import ConfigError, DataError, OutputError
from cfgdiff.files import check_outputs, claim_folder, is_ours, output_lock, run_inputs, write_json, write_text
from cfgdiff.runs import SamplingModel, newest_run, resolve_weights_file, run_config
from cfgdiff.sampling.command import run_sampler, seeds_and_labels, smaller_plan
from cfgdiff.sampling.generate import nfe, sample_batch
from cfgdiff.sampling.shards import SampleJob, _compact_seeds, provenance, run_sample
from cfgdiff.sampling.sweep_files import (
    FORMAT,
    OWNER,
    OUTPUTS,
    SHARED,
    Key,
    SweepResult,
    _f,
    _ordered,
    _recorded_settings,
    sweep_writes,
    columns,
    default_out_dir,
    describe,
    fingerprint,
    finished_sweep,
    key_of,
    legacy_sampler_settings,
    line_label,
    line_of,
    markdown_table,
    read_rows,
    row_key,
    write_rows,
)

def _shared_settings(model: SamplingModel, job: SampleJob, ref_hash: str | None, weights: str | None,
                     metrics: tuple[str, ...] | None) -> dict[str, Any]:
    prov = provenance(model, job)
    keys = ["checkpoint_sha256", "n", "seeds_sha256", "labels_sha256", "diffusion", "resolution"]
    sampler = {k: v for k, v in prov["sampler"].items() if k in SHARED}
    guide = {} if job.guide is None else {"guide_sha256": job.guide.sha256}  # absent unguided, as before guides
    return {"format": FORMAT, **{k: prov[k] for k in keys}, "sampler": sampler, "reference_sha256": ref_hash,
            "inception_sha256": weights, "metrics": list(metrics) if metrics else None, **guide}


def _check_settings(out_dir: Path, settings: dict[str, Any], write: bool = True) -> None:
    """Refuse a folder whose settings.json differs from `settings`; keys whose value is None in
    `settings` are not compared (an early check, before the reference and Inception load).
    `write`: record `settings` when the folder has none yet."""
    path = out_dir / "settings.json"
    if path.exists():
        old = _recorded_settings(out_dir)
        unknown = [k for k in ("reference_sha256", "inception_sha256") if settings.get(k) is None]
        if legacy_sampler_settings(old):  # format 2: v and η were shared; its rows keep them (`row_key`)
            old = {**old, "format": FORMAT, "sampler": {k: v for k, v in old["sampler"].items() if k in SHARED}}
        if isinstance(old, dict):
            old = {k: v for k, v in old.items() if k not in unknown}
        if old != {k: v for k, v in settings.items() if k not in unknown}:
            raise OutputError(f"{out_dir} holds a sweep with other settings (checkpoint, guide, n, seeds, rescale, "
                              "threshold, metrics or reference); choose another --out-dir")
    elif write:
        write_json(path, settings, indent=1, owner=OWNER)


# ---- where the sweep goes, before anything loads ------------------------------------------------------------------
def checkpoint_file(checkpoint: Path | str | None) -> Path:
    """The weights file a sweep reads: a file as given, a run's newest EMA file, or the newest run's."""
    return resolve_weights_file(Path(checkpoint) if checkpoint is not None else newest_run())


# ---- sampling and scoring -----------------------------------------------------------------------------------------
def my_batches(n: int, batch: int) -> list[int]:
    """This rank's batch starts: a contiguous block, so that gathering the ranks' features in rank
    order gives the single-process order (IS splits the features in order)."""
    starts = list(range(0, n, batch))
    per = -(-len(starts) // dist.world_size())
    return starts[dist.rank() * per : (dist.rank() + 1) * per]


def round_images(n: int, batch: int, world: int) -> list[int]:
    """Images all ranks together finish in each round of `my_batches`' loop (rank r's i-th batch is in
    round i): what rank 0's progress bar advances by. Blocks may be uneven (n = 100, batch 250, two
    ranks: rank 0 draws all 100 and rank 1 none), so this is not `world` × rank 0's batch."""
    sizes = [min(batch, n - a) for a in range(0, n, batch)]
    per = -(-len(sizes) // world)
    return [sum(sizes[r * per + i] for r in range(world) if r * per + i < min(len(sizes), (r + 1) * per))
            for i in range(per)]


def score_row(model: SamplingModel, job: SampleJob, detector: Any, device: Any, keep: Path | None) -> Any:
    """Sample `job` and stream every batch into the Inception statistics; returns Statistics."""
    from cfgdiff.metrics.stats import FeatureAccumulator

    acc = FeatureAccumulator(keep_pool=True, keep_logits=detector.has_logits)
    if keep is not None:  # samples kept on disk: draw them resumably, then score the file
        run_sample(model, job, keep, device, command="sweep")  # a file the sweep did not write is refused
        with np.load(keep) as f:
            images = f["arr_0"]
        for a in my_batches(len(images), job.batch):
            acc.add_images(detector, images[a : a + job.batch])
        return acc.finalize(detector.sha256)
    n = len(job.seeds)
    starts = my_batches(n, job.batch)
    rounds = round_images(n, job.batch, dist.world_size())
    with Progress(f"{line_label(line_of(key_of(job.sampler)))}, w={job.sampler.w:g}", total=n, unit="img") as bar:
        for i, a in enumerate(starts):
            b = min(a + job.batch, n)
            images = sample_batch(model, job.seeds[a:b], job.labels[a:b], job.sampler, device, guide=job.guide)
            acc.add_images(detector, images)
            bar.advance(rounds[i], nfe=nfe(job.sampler, rounds[i], model.diffusion_cfg, model.w_input))
    return acc.finalize(detector.sha256)


def _keep_name(key: Key) -> str:
    sampler, own, steps, grid, interval, guidance, settings, w = key
    default = get_sampler(sampler).resolve()
    tail = "".join(f"_{k}{v:g}" for (k, v), d in zip(own, default) if v != d[1])  # the settings not at default
    tail += f"_{grid}" if grid != "paper" else ""
    tail += f"_gi{interval[0]:g}:{interval[1]:g}" if interval else ""
    tail += "" if guidance == "cfg" else f"_{guidance}" + "".join(f"_{k}{v:g}" for k, v in settings)
    return f"samples_{sampler}_T{steps}{tail}_w{w:g}.npz"


def _meta(model: SamplingModel, req: SweepConfig, seeds: list[int], reference: Any, detector: Any,
          guide: SamplingModel | None) -> dict[str, Any]:
    return {
        "n": req.n, "seeds": _compact_seeds(tuple(seeds)), "labels": "balanced" if req.balanced else
        "uniform", "rescale": req.rescale, "threshold": req.threshold, "clip_x": req.clip,
        "checkpoint": {"path": str(model.path), "step": model.step, "kimg": model.kimg, "sha256": model.sha256},
        "reference": {"path": str(reference.path), "sha256": reference.sha256},
        "inception": {"path": str(detector.path), "sha256": detector.sha256},
        **({} if guide is None else {"guide": {"path": str(guide.path), "step": guide.step, "kimg": guide.kimg,
                                               "sha256": guide.sha256}}),
    }


def plan_rows(req: SweepConfig, model: SamplingModel, rows: dict[Key, dict[str, Any]], device: Any,
              ref: str) -> dict[str, Any]:
    """--dry-run: the rows still to compute, their NFE, the time from one measured forward, the disk."""
    from cfgdiff.sampling.generate import seconds_per_step

    todo = [c for c in req.combinations() if key_of(c) not in rows]
    per_sample = {key_of(c): nfe(c, 1, model.diffusion_cfg, model.w_input) for c in todo}
    total = sum(per_sample.values()) * req.n
    b = min(req.batch, req.n)
    t = seconds_per_step(model, b, False, device) if todo else 0.0  # one forward of b images
    seconds = total * t / b / dist.world_size()
    image_bytes = req.n * model.resolution**2 * 3
    disk = (len(todo) * image_bytes if req.keep_samples else 0) + 2_000_000  # npz per row; table, csv and plots
    return {
        "rows_total": len(req.combinations()), "rows_done": len(req.combinations()) - len(todo),
        "rows_to_compute": [{"sampler": k.sampler, "sampler_settings": dict(k.sampler_settings), "steps": k.steps,
                             "grid": k.grid, "guidance_interval": list(k.guidance_interval) or None,
                             "guidance": k.guidance, "guidance_settings": dict(k.guidance_settings), "w": k.w,
                             "nfe_per_sample": v}
                            for k, v in per_sample.items()],
        "nfe": total, "seconds_per_forward": t, "forward_batch": b, "estimated_seconds": seconds,
        "processes": dist.world_size(), "device": str(device), "disk_bytes": disk, "reference": ref,
        "checkpoint": {"path": str(model.path), "step": model.step, "sha256": model.sha256},
    }


def run_sweep(req: SweepConfig) -> SweepResult:
    """Fill `sweep.jsonl` for every combination that is missing, then write table, plots and grid
    (or, with `req.dry_run`, only plan it)."""
    if None in (req.samplers, req.steps, req.grids):  # a distilled student's defaults differ from the paper's
        req = req.with_defaults(run_config(checkpoint_file(req.checkpoint)))
    done = finished_sweep(req)
    if done is not None:  # nothing to do: no model, no Inception, no grid
        return done
    from cfgdiff.diffusion.sampler import check_sampler_config, grid_advice

    combos = req.combinations()
    for c in {(c.sampler, c.grid, c.guidance): c for c in combos}.values():  # before anything is looked for
        check_sampler_config(c)
    file = checkpoint_file(req.checkpoint)
    out_dir = Path(req.out_dir) if req.out_dir else default_out_dir(file)
    if out_dir is not None:
        _recorded_settings(out_dir)

    from cfgdiff.metrics import compute_metrics, load_detector, load_reference
    from cfgdiff.metrics.score import small_n_warnings
    from cfgdiff.metrics.reference import default_reference
    from cfgdiff.sampling.model import load_model
    from cfgdiff.sampling.report import write_figure_grid, write_plots

    dist.init()
    device = dist.device()
    model = load_model(file, device)
    for c in {(c.sampler, c.grid, c.guidance, c.w): c for c in combos}.values():  # a student: its w range
        run_sampler(c, model, req.guide)
    guide = None
    if req.guide is not None:  # autoguidance: checked against the main network before anything is written
        from cfgdiff.sampling.generate import check_guide_model

        guide = load_model(req.guide, device)
        check_guide_model(model, guide)
    for c in {(c.sampler, c.grid, c.steps): c for c in combos}.values():
        advice = grid_advice(c, model.config.diffusion)
        if advice:
            dist.print0(f"cfgdiff: note: {advice}")
    if out_dir is None:
        out_dir = default_out_dir(file, model.step)
        _recorded_settings(out_dir)
    ref = req.ref
    if ref is None and model.dataset:  # the recorded dataset, found near the checkpoint and verified
        from cfgdiff.runs import locate_dataset

        ref, why = locate_dataset(model.dataset, model.dataset_fingerprint, file.parent)
        if ref is None:
            raise DataError(f"{why} (recorded in {file}); pass --ref")
    ref = default_reference(ref, None)
    if not ref:
        raise ConfigError("no --ref given and the checkpoint records no training dataset")
    if req.dry_run:  # the plan needs n, not the seeds (up to 10^8 of them)
        plan = plan_rows(req, model, read_rows(out_dir / "sweep.jsonl", legacy_sampler_settings(_recorded_settings(out_dir))),
                         device, ref)
        todo = plan["rows_to_compute"]
        note = todo and smaller_plan(plan["estimated_seconds"], req.n, plan["nfe"] // req.n, combos[0],
                                     model.diffusion_cfg, device, rows=len(todo))
        if note:
            dist.print0(f"cfgdiff: note: {note}")
        meta = {"checkpoint": plan["checkpoint"], "reference": {"path": ref, "sha256": None}, "inception": None}
        return SweepResult(out_dir, [], meta, plan=plan)
    seeds, labels = seeds_and_labels(req.n, req.seeds, model.num_classes, req.balanced, None)
    claim_folder(out_dir, OWNER, writes=sweep_writes, flag="--out-dir", create=False)  # checked now, made below
    check_outputs({f"--out-dir {out_dir}: {name}": out_dir / name for name in OUTPUTS},
                  [*run_inputs(req.checkpoint), file, ref, req.inception, *run_inputs(req.guide)], owners=OWNER,
                  make_folders=True)
    base = SampleJob(tuple(seeds), tuple(labels), combos[0], req.batch, guide=guide)
    _check_settings(out_dir, _shared_settings(model, base, None, None, req.metrics), write=False)  # before Inception
    detector = load_detector(req.inception, device)
    res = model.resolution
    reference = load_reference(ref, detector, size=(res, res), hint=(
        f"Pass a reference of {res}x{res} images (cfgdiff prepare DATA --size {res} makes one the way the "
        "training set was made), or score the kept samples with `cfgdiff score --ref-resize`"))
    if dist.is_main():  # the inputs are good: the folder is made and claimed now, never left behind empty
        claim_folder(out_dir, OWNER, writes=sweep_writes, flag="--out-dir")
        _check_settings(out_dir, _shared_settings(model, base, reference.sha256, detector.sha256, req.metrics))
    meta = _meta(model, req, seeds, reference, detector, guide)
    for line in small_n_warnings(req.n, req.metrics or ("fid", "is")):  # once the inputs are known good
        dist.print0(f"cfgdiff: warning: {line} (per w here: the best w the plots mark is a rough guide)")
    dist.barrier()
    machine = dist.describe_device(device)  # the hardware every row's wall time is measured on
    computed: list[Key] = []
    with output_lock(out_dir / "sweep.jsonl", "sweep") if dist.is_main() else contextlib.nullcontext():
        rows = read_rows(out_dir / "sweep.jsonl", legacy_sampler_settings(_recorded_settings(out_dir)))
        for cfg in combos:
            key = key_of(cfg)
            label = f"{line_label(line_of(key))}, w={cfg.w:g}"
            if key in rows:
                dist.print0(f"{label}: done earlier, skipped")
                continue
            t0 = time.perf_counter()
            job = dataclasses.replace(base, sampler=cfg)
            keep = out_dir / _keep_name(key) if req.keep_samples else None
            stats = score_row(model, job, detector, device, keep)
            # precision/recall on the GPU, as `score`
            metrics = compute_metrics(stats, reference, req.metrics, device=str(device))
            row = {"sampler": cfg.sampler, "steps": cfg.steps, "grid": cfg.grid,
                   "guidance_interval": list(cfg.guidance_interval) if cfg.guidance_interval else None,
                   "guidance": cfg.guidance, "guidance_settings": dict(cfg.guidance_settings), "w": cfg.w,
                   "sampler_settings": dict(cfg.sampler_settings),
                   "nfe": nfe(cfg, 1, model.diffusion_cfg, model.w_input),
                   **{k: metrics.get(k) for k in columns() if k in metrics}, "n": req.n,
                   "seconds": round(time.perf_counter() - t0, 2), "device": machine,
                   "cfgdiff_version": __version__,
                   "unavailable": metrics["unavailable"]}
            rows[key] = row
            computed.append(key)
            if dist.is_main():
                write_rows(out_dir, rows)
                shown = ("fid", "is_mean", "precision", "recall")
                dist.print0(f"{label}: " + " ".join(f"{k}={_f(row.get(k), 4)}" for k in shown))
            dist.barrier()
        if dist.is_main():
            write_text(out_dir / "table.md", f"# cfgdiff sweep\n\n{markdown_table(rows, meta)}", owner=OWNER)
            write_plots(rows, out_dir, describe(meta))
            grid = out_dir / "grid.png"
            line = line_of(key_of(combos[0]))  # Fig. 3 for the first line's settings, redrawn when it changed
            if not is_ours(grid, OWNER) or any(line_of(k) == line for k in computed):
                first = [r for r in _ordered(rows) if line_of(row_key(r)) == line]
                write_figure_grid(model, base, [r["w"] for r in first], grid, device, req.figure_ws)
            summary = {"meta": meta, "request": fingerprint(req, file, ref), "rows": _ordered(rows)}
            write_json(out_dir / "sweep.json", summary, indent=1, owner=OWNER)
    dist.barrier()
    return SweepResult(out_dir, _ordered(rows), meta, len(computed))

