"""`cfgdiff sample`: sharded, resumable sampling to an ADM-compatible npz.

The seeds are cut into shards of `shard_size` consecutive positions. Rank r of W draws shards
r, r + W, …, and writes each as a part of `cfgdiff.files.PartStore` (`.<out>.partial/part-<start>.npz`,
atomically, with `plan.json`). Rerunning the same command skips finished parts; a rerun with another
job discards them. When every part exists, rank 0 joins them into `<out>` (`arr_0` (N, H, W, 3) uint8,
`arr_1` (N,) int64 labels) and writes the provenance beside it as `<out>.json`, both atomically and
entered in the folder's ownership ledger, then removes the parts. Rank 0 holds `.<out>.lock` meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfgdiff import __version__, dist
from cfgdiff.config import SamplerConfig, to_dict
from cfgdiff.console import Progress
from cfgdiff.errors import CfgdiffError, ConfigError, DataError, OutputError
from cfgdiff.files import (
    PartStore, check_outputs, forget_output, is_ours, npz_rows, output_lock, write_json, write_npz,
)
from cfgdiff.runs import SamplingModel
from cfgdiff.sampling.generate import nfe, sample_batch


@dataclass(frozen=True)
class SampleJob:
    """What to draw: one image per seed, with its label, by this sampler."""

    seeds: tuple[int, ...]
    labels: tuple[int, ...]
    sampler: SamplerConfig
    batch: int = 64
    shard_size: int = 1000

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("nothing to sample: --n must be at least 1")
        if len(self.seeds) != len(self.labels):
            raise ConfigError(f"{len(self.seeds)} seeds but {len(self.labels)} labels")
        if self.batch < 1 or self.shard_size < 1:
            raise ConfigError("--batch and the shard size must be positive")

    def shards(self) -> list[tuple[int, int]]:
        n = len(self.seeds)
        return [(a, min(a + self.shard_size, n)) for a in range(0, n, self.shard_size)]


def provenance(model: SamplingModel, job: SampleJob) -> dict[str, Any]:
    """Everything that determines the samples, plus where they came from."""
    seeds = np.asarray(job.seeds, np.int64)
    labels = np.asarray(job.labels, np.int64)
    return {
        "cfgdiff_version": __version__,
        "checkpoint_sha256": model.sha256,
        "kimg": model.kimg,
        "dataset": model.dataset,
        "resolution": model.resolution,
        "num_classes": model.num_classes,
        "sampler": to_dict(job.sampler),
        "diffusion": to_dict(model.diffusion_cfg),
        "model": to_dict(model.model_cfg),
        "n": len(job.seeds),
        "seeds": _compact_seeds(job.seeds),
        "seeds_sha256": hashlib.sha256(seeds.tobytes()).hexdigest(),
        "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
        "nfe": nfe(job.sampler, len(job.seeds)),
    }


def _compact_seeds(seeds: tuple[int, ...]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (the --seeds syntax)."""
    out, start, prev = [], seeds[0], seeds[0]
    for s in list(seeds[1:]) + [None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
        if s is not None:
            start = prev = s
    return ",".join(out)


def _identity(prov: dict[str, Any]) -> dict[str, Any]:
    """The part of the provenance that must match for parts to be reused (not the kimg label etc.)."""
    keys = ["checkpoint_sha256", "sampler", "diffusion", "n", "seeds_sha256", "labels_sha256", "resolution"]
    return {k: prov[k] for k in keys}


def _read_part(store: PartStore, start: int, stop: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The images and labels of a finished part, or None if it is missing or incomplete."""
    part = store.read_or_none(start, "arr_0", "arr_1", "seeds")
    n = stop - start
    if part is None or not part["arr_0"].shape[0] == part["arr_1"].shape[0] == part["seeds"].shape[0] == n:
        return None
    return part["arr_0"], part["arr_1"]


def check_output(out: Path, grid: Path | None = None, inputs: tuple[Path | None, ...] = (), force: bool = False) -> None:
    """The output rules for `out` (and the `grid` PNG), before any work: see `cfgdiff.files`."""
    if out.suffix != ".npz":
        raise ConfigError(f"--out must end in .npz, got {out}")
    if not out.parent.exists():
        raise DataError(f"output folder {out.parent} does not exist")
    sidecar = out.with_name(out.name + ".json")
    # an existing --out (and its provenance) is judged by `finished_earlier`: same job, nothing to do
    check_outputs({"--out": out, "--out's provenance": sidecar, "--grid": grid}, inputs, force=force,
                  replaceable=[out, sidecar] if out.exists() else [])


def finished_earlier(out: Path, prov: dict[str, Any]) -> dict[str, Any] | None:
    """The provenance of `out` if it exists and is the verified result of this same job (so a rerun
    has nothing to do); None if there is no such file; OutputError (exit 1) if `out` holds something else.
    Verified: the npz itself is the one cfgdiff wrote (size and SHA-256 in the folder's ledger) and
    holds n samples; a provenance file alone proves nothing."""
    if not out.exists():
        return None
    sidecar = out.with_name(out.name + ".json")
    try:
        done = json.loads(sidecar.read_text())
        if (_identity(done) == _identity(prov) and is_ours(out) and is_ours(sidecar)
                and npz_rows(out) == prov["n"]):
            return done
    except (OSError, ValueError, KeyError):
        pass
    raise OutputError(f"{out} exists; pass --force to overwrite it")


def run_sample(model: SamplingModel, job: SampleJob, out: Path, device: torch.device,
               force: bool = False) -> dict[str, Any]:
    """Draw every sample of `job` into `out`, resuming from finished parts; returns the provenance."""
    out = Path(out)
    check_output(out, force=force)
    prov = provenance(model, job)
    store = PartStore(out, _identity(prov), "sample")
    done = None if force else finished_earlier(out, prov)
    if done is not None:  # the same command ran to the end before (perhaps killed while cleaning up)
        if dist.is_main():
            store.remove()
            dist.print0(f"{out} is complete already (same checkpoint, seeds, labels and sampler); nothing to do")
        return done
    with output_lock(out, "sample") if dist.is_main() else contextlib.nullcontext():
        return _run(model, job, out, device, prov, store)


def _run(model: Any, job: SampleJob, out: Path, device: torch.device, prov: dict[str, Any], store: PartStore) -> dict[str, Any]:
    if dist.is_main():
        store.open()
    dist.barrier()
    shards = job.shards()
    mine = shards[dist.rank() :: dist.world_size()]
    todo = [(a, b) for a, b in mine if _read_part(store, a, b) is None]
    done = sum(b - a for a, b in mine) - sum(b - a for a, b in todo)
    with Progress("sample", total=sum(b - a for a, b in mine), unit="img", start=done) as bar:
        for a, b in todo:
            images = []
            for i in range(a, b, job.batch):
                j = min(i + job.batch, b)
                images.append(sample_batch(model, job.seeds[i:j], job.labels[i:j], job.sampler, device))
                bar.advance(j - i, nfe=nfe(job.sampler, j - i))
            arr = np.concatenate(images)
            store.write(a, {
                "arr_0": arr,
                "arr_1": np.asarray(job.labels[a:b], np.int64),
                "seeds": np.asarray(job.seeds[a:b], np.int64),
            })
    dist.barrier()
    if dist.is_main():
        _assemble(store, shards, out, prov)
    dist.barrier()
    return prov


def _assemble(store: PartStore, shards: list[tuple[int, int]], out: Path, prov: dict[str, Any]) -> None:
    arrays, labels = [], []
    for a, b in shards:
        part = _read_part(store, a, b)  # read once: checked and kept
        if part is None:
            raise CfgdiffError(f"part {store.path(a)} is missing or incomplete; rerun the same command to finish it")
        arrays.append(part[0])
        labels.append(part[1])
    arr = np.concatenate(arrays)
    # The npz is the commit point: its provenance goes first, and an older npz (a --force rerun) loses
    # the ledger's word first, so that a kill between any two steps never passes for a finished job.
    forget_output(out)
    write_json(out.with_name(out.name + ".json"), prov, indent=1, record=True)
    write_npz(out, arr_0=arr, arr_1=np.concatenate(labels), record=True)
    store.remove()

