"""The library side of `cfgdiff sample`: from parsed options to samples on disk."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cfgdiff import dist
from cfgdiff.config import SampleConfig
from cfgdiff.files import run_inputs
from cfgdiff.parse import first_seeds, label_mode, seeds_for
from cfgdiff.sampling.generate import nfe, seconds_per_step
from cfgdiff.sampling.labels import labels_for_seeds


def seeds_and_labels(
    n: int, seeds: str | None, num_classes: int, balanced: bool, classes: str | None
) -> tuple[list[int], list[int]]:
    """The first n seeds of `seeds` (default 0..n-1) and their labels."""
    seed_list = first_seeds(seeds_for(seeds, n), n)
    mode, class_ids = label_mode(balanced, classes)
    return seed_list, labels_for_seeds(seed_list, num_classes, mode, class_ids).tolist()


def run_sample_command(req: SampleConfig) -> dict[str, Any]:
    """Load the checkpoint, then either estimate (dry run) or draw the samples; returns a summary."""
    from cfgdiff.sampling.model import load_model
    from cfgdiff.sampling.shards import SampleJob, check_output, run_sample

    sampler = req.sampler()
    if not req.dry_run:  # every output rule before the model loads (see cfgdiff.files)
        check_output(req.out, req.grid, tuple(run_inputs(req.checkpoint)), force=req.force)
    dist.init()
    device = dist.device()
    model = load_model(req.checkpoint, device)
    seeds, labels = seeds_and_labels(req.n, req.seeds, model.num_classes, req.balanced, req.classes)
    job = SampleJob(tuple(seeds), tuple(labels), sampler, batch=req.batch, shard_size=req.shard_size)
    if req.dry_run:
        t = seconds_per_step(model, min(req.batch, req.n), sampler.w != 0, device)
        batches = math.ceil(req.n / (req.batch * dist.world_size()))
        plan = {
            "n": req.n,
            "nfe": nfe(sampler, req.n),
            "steps": sampler.steps,
            "w": sampler.w,
            "processes": dist.world_size(),
            "device": str(device),
            "seconds_per_step": t,
            "estimated_seconds": t * sampler.steps * batches,
            "checkpoint_sha256": model.sha256,
        }
        dist.print0(
            f"plan: {req.n} samples, NFE = {plan['nfe']:,} ({'2' if sampler.w else '1'}·T·N), "
            f"~{plan['estimated_seconds'] / 3600:.2f} h on {dist.world_size()}× {device}"
        )
        return plan
    prov = run_sample(model, job, req.out, device, force=req.force)
    if req.grid is not None and dist.is_main():
        _write_grid(req.out, req.grid)
    dist.print0(f"wrote {req.out} ({req.n} samples, w={sampler.w}, T={sampler.steps})")
    return {"out": str(req.out), **prov}


def _write_grid(npz: Path, png: Path, count: int = 64) -> None:
    import numpy as np

    from cfgdiff.images import save_grid

    with np.load(npz) as f:
        images = f["arr_0"][:count]
    save_grid(images, png, ncols=int(math.ceil(math.sqrt(len(images)))), record=True)
