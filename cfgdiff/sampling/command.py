"""The library side of `cfgdiff sample`: from parsed options to samples on disk."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cfgdiff import dist
from cfgdiff.config import SampleConfig, to_dict
from cfgdiff.files import run_inputs
from cfgdiff.parse import first_seeds, label_mode, seeds_for
from cfgdiff.sampling.labels import labels_for_seeds

SAMPLES_NAME, PNG_FOLDER = "samples.npz", "png"


def seeds_and_labels(
    n: int, seeds: str | None, num_classes: int, balanced: bool, classes: str | None
) -> tuple[list[int], list[int]]:
    """The first n seeds of `seeds` (default 0..n-1) and their labels."""
    seed_list = first_seeds(seeds_for(seeds, n), n)
    mode, class_ids = label_mode(balanced, classes)
    return seed_list, labels_for_seeds(seed_list, num_classes, mode, class_ids).tolist()


def out_paths(req: SampleConfig) -> tuple[Path, Path | None]:
    """The npz and the PNG folder (None unless `--out` names a folder: DIR/samples.npz, DIR/png/)."""
    if req.out_is_folder or req.out.is_dir():
        return req.out / SAMPLES_NAME, req.out / PNG_FOLDER
    return req.out, None


def run_sample_command(req: SampleConfig) -> dict[str, Any]:
    """Load the checkpoint (and the autoguidance guide, checked against it before any sampling),
    then either estimate (dry run) or draw the samples. Returns the `--json` envelope's parts."""
    from cfgdiff.diffusion.sampler import check_sampler_config, grid_advice
    from cfgdiff.sampling.generate import check_guide_model, nfe, seconds_per_step
    from cfgdiff.sampling.model import load_model
    from cfgdiff.sampling.shards import SampleJob, SampleOwners, check_output, guide_record, provenance, run_sample

    check_sampler_config(req.sampler_config())  # sampler, grid and guidance go together: before anything loads
    npz, png_dir = out_paths(req)
    inputs = (*run_inputs(req.checkpoint), *run_inputs(req.guide))
    if not req.dry_run:  # every output rule before the model loads (see cfgdiff.files)
        check_output(npz, req.preview, tuple(inputs), force=req.force, png_dir=png_dir)
    dist.init()
    device = dist.device()
    model = load_model(req.checkpoint, device)
    sampler = run_sampler(req.sampler_config(model.config), model, req.guide)
    advice = grid_advice(sampler, model.config.diffusion)
    if advice:
        dist.print0(f"cfgdiff: note: {advice}")
    guide = None
    if req.guide is not None:
        guide = load_model(req.guide, device)
        check_guide_model(model, guide)  # one line naming the mismatch, before any sampling
    if req.dry_run:  # the plan needs n, not the seeds: no list of up to 10^8 seeds is made for it
        job, prov = None, {"seeds": req.seeds or f"0-{req.n - 1}",
                           "nfe_per_sample": nfe(sampler, 1, model.diffusion_cfg, model.w_input)}
    else:
        seeds, labels = seeds_and_labels(req.n, req.seeds, model.num_classes, req.balanced, req.classes)
        job = SampleJob(tuple(seeds), tuple(labels), sampler, batch=req.batch, shard_size=req.shard_size, guide=guide)
        prov = provenance(model, job)
        # now that the job is known: every output again, --preview included, with the job's identity
        check_output(npz, req.preview, tuple(inputs), force=req.force, png_dir=png_dir,
                     owners=SampleOwners("sample").for_job(prov))
    parts = {
        "inputs": {"checkpoint": str(model.path), "guide": None if guide is None else str(guide.path)},
        "outputs": {"samples": str(npz), "provenance": str(npz.with_name(npz.name + ".json")),
                    "png": None if png_dir is None else str(png_dir), "preview": req.preview},
        "settings": {"sampler": to_dict(sampler), "n": req.n, "seeds": prov["seeds"],
                     "batch_per_device": req.batch, "shard_size": req.shard_size,
                     "labels": "balanced" if req.balanced else ("classes" if req.classes else "uniform"),
                     "classes": req.classes},
        "provenance": {"checkpoint_sha256": model.sha256, "kimg": model.kimg, "guide": guide_record(guide),
                       "dataset": model.dataset},
    }
    per_sample = prov["nfe_per_sample"]
    if req.dry_run or device.type != "cuda":  # on a CPU every run says first what it will cost
        guided = sampler.w != 0 and not model.w_input  # a student's guided step is one B-batch forward
        t = seconds_per_step(model, min(req.batch, req.n), guided, device)
        batches = math.ceil(req.n / (req.batch * dist.world_size()))
        # t is one forward of the guided (2B) batch when w > 0: half of it per network evaluation
        per_eval = t / 2 if guided else t
        note = smaller_plan(per_eval * per_sample * batches, req.n, per_sample, sampler, model.diffusion_cfg, device)
        if note:
            dist.print0(f"cfgdiff: note: {note}")
    if req.dry_run:
        plan = {
            "n": req.n,
            "nfe_per_sample": per_sample,
            "nfe": per_sample * req.n,
            "sampler": sampler.sampler,
            "grid": sampler.grid,
            "steps": sampler.steps,
            "w": sampler.w,
            "processes": dist.world_size(),
            "device": str(device),
            "seconds_per_step": t,
            "estimated_seconds": per_eval * per_sample * batches,
            "checkpoint_sha256": model.sha256,
        }
        return {**parts, "results": plan}
    done = run_sample(model, job, npz, device, force=req.force, png_dir=png_dir)
    if req.preview is not None and dist.is_main():
        _write_preview(npz, req.preview, SampleOwners("sample").for_job(done).of("preview"))
    dist.print0(f"wrote {npz} ({req.n} samples, {sampler.sampler}, w={sampler.w}, T={sampler.steps}, "
                f"NFE {per_sample}/sample)" + (f" and {png_dir}/" if png_dir is not None else ""))
    return {**parts, "results": {"out": str(npz), **done}}


def run_sampler(sampler: Any, model: Any, guide: Path | None) -> Any:
    """`sampler` (SamplerConfig, unset settings at `model`'s defaults) checked against the model: a
    distilled student takes w only in its range and no guidance beyond its own (ConfigError)."""
    from cfgdiff.diffusion.sampler import check_sampler_config

    check_sampler_config(sampler, model.w_input, None if guide is None else "--guide-with")
    if model.config.distill is not None:
        model.config.distill.check_w(sampler.w)
    return sampler


LONG_PLAN_S = 24 * 3600  # a plan longer than this gets a smaller suggestion
FIRST_LOOK = {"n": 64, "sampler": "dpmpp-2m-sde", "steps": 16}  # the fast solver benchmarks.md measured


def smaller_plan(seconds: float, n: int, per_sample: int, sampler: Any, diffusion: Any, device: Any,
                 rows: int = 1) -> str | None:
    """One line when a plan takes over a day here: what it costs, and a first look that fits (64
    samples with the stochastic 2M at T = 16, the same w; `rows` of them for a sweep whose
    `per_sample` NFE sums its rows), with its estimate at the measured speed."""
    if seconds <= LONG_PLAN_S:
        return None
    from dataclasses import replace

    from cfgdiff.console import duration
    from cfgdiff.sampling.generate import nfe

    small = replace(sampler, sampler=FIRST_LOOK["sampler"], sampler_settings=(), steps=FIRST_LOOK["steps"], grid="paper")
    quick = seconds * min(n, FIRST_LOOK["n"]) / n * nfe(small, 1, diffusion) * rows / per_sample
    return (f"this plan takes ~{duration(seconds)} on {device.type}; for a first look: --n {FIRST_LOOK['n']} "
            f"--sampler {FIRST_LOOK['sampler']} --steps {FIRST_LOOK['steps']} (~{duration(quick)}), or a GPU")


def plan_line(plan: dict[str, Any]) -> str:
    """The dry run's plan in one line (stdout)."""
    from cfgdiff.console import duration

    return (f"plan: {plan['n']} samples with {plan['sampler']} on the {plan['grid']} grid, T = {plan['steps']}, "
            f"w = {plan['w']:g}: NFE = {plan['nfe_per_sample']} per sample, {plan['nfe']:,} in all; "
            f"~{duration(plan['estimated_seconds'])} on {plan['processes']}× {plan['device']}")


def _write_preview(npz: Path, png: Path, owner: Any, count: int = 64) -> None:
    import numpy as np

    from cfgdiff.images import save_grid

    with np.load(npz) as f:
        images = f["arr_0"][:count]
    save_grid(images, png, ncols=int(math.ceil(math.sqrt(len(images)))), owner=owner)
