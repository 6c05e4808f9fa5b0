"""`cfgdiff sample`: sharded, resumable sampling to an ADM-compatible npz.

The seeds are cut into shards of `shard_size` consecutive positions. Rank r of W draws shards
r, r + W, …, and writes each as `<out>.parts/part-XXXXXX.npz` under a temporary name, renamed when
complete. Rerunning the same command skips finished parts. When every part exists, rank 0 joins
them into `<out>` (`arr_0` (N, H, W, 3) uint8, `arr_1` (N,) int64 labels) and writes the
provenance beside it as `<out>.json`, both atomically, then removes the parts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfgdiff import __version__, dist
from cfgdiff.config import SamplerConfig, to_dict
from cfgdiff.console import Progress
from cfgdiff.errors import CfgdiffError, ConfigError, DataError
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


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """np.savez to `path` via a temporary name in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except BaseException:  # disk full, Ctrl-C: no half-written part left to take space
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _part_path(parts: Path, start: int) -> Path:
    return parts / f"part-{start:09d}.npz"


def _prepare_parts(parts: Path, prov: dict[str, Any]) -> None:
    """Create the parts folder, or check that its parts were made by the same job."""
    job_file = parts / "job.json"
    try:
        parts.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {parts}: {e.strerror}") from None
    if job_file.exists():
        try:
            old = json.loads(job_file.read_text())
        except (OSError, ValueError):
            old = None
        if old is None or _identity(old) != _identity(prov):
            raise ConfigError(
                f"{parts} holds parts of a different sampling job; remove it or choose another --out"
            )
    else:
        atomic_write_text(job_file, json.dumps(prov, indent=1))


def _read_part(path: Path, start: int, stop: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The images and labels of a finished part, or None if it is missing or incomplete."""
    try:
        with np.load(path) as f:
            images, labels, seeds = f["arr_0"], f["arr_1"], f["seeds"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    n = stop - start
    return (images, labels) if images.shape[0] == labels.shape[0] == seeds.shape[0] == n else None


def _part_is_complete(path: Path, start: int, stop: int) -> bool:
    return _read_part(path, start, stop) is not None


def check_output(out: Path) -> None:
    if out.suffix != ".npz":
        raise ConfigError(f"--out must end in .npz, got {out}")
    if not out.parent.exists():
        raise DataError(f"output folder {out.parent} does not exist")


def finished_earlier(out: Path, prov: dict[str, Any]) -> dict[str, Any] | None:
    """The provenance of `out` if it exists and was made by this same job (so a rerun has nothing to
    do); None if there is no such file; ConfigError if `out` holds something else."""
    if not out.exists():
        return None
    try:
        done = json.loads(out.with_name(out.name + ".json").read_text())
        if _identity(done) == _identity(prov):
            return done
    except (OSError, ValueError, KeyError):
        pass
    raise ConfigError(f"{out} exists; pass --force to overwrite it")


def run_sample(model: SamplingModel, job: SampleJob, out: Path, device: torch.device,
               force: bool = False) -> dict[str, Any]:
    """Draw every sample of `job` into `out`, resuming from finished parts; returns the provenance."""
    out = Path(out)
    check_output(out)
    prov = provenance(model, job)
    parts = out.with_name(out.name + ".parts")
    done = None if force else finished_earlier(out, prov)
    if done is not None:  # the same command ran to the end before (perhaps killed while cleaning up)
        if dist.is_main():
            shutil.rmtree(parts, ignore_errors=True)
            dist.print0(f"{out} is complete already (same checkpoint, seeds, labels and sampler); nothing to do")
        return done
    if dist.is_main():
        _prepare_parts(parts, prov)
    dist.barrier()
    shards = job.shards()
    mine = shards[dist.rank() :: dist.world_size()]
    todo = [(a, b) for a, b in mine if not _part_is_complete(_part_path(parts, a), a, b)]
    done = sum(b - a for a, b in mine) - sum(b - a for a, b in todo)
    with Progress("sample", total=sum(b - a for a, b in mine), unit="img", start=done) as bar:
        for a, b in todo:
            images = []
            for i in range(a, b, job.batch):
                j = min(i + job.batch, b)
                images.append(sample_batch(model, job.seeds[i:j], job.labels[i:j], job.sampler, device))
                bar.advance(j - i, nfe=nfe(job.sampler, j - i))
            arr = np.concatenate(images)
            atomic_savez(
                _part_path(parts, a),
                arr_0=arr,
                arr_1=np.asarray(job.labels[a:b], np.int64),
                seeds=np.asarray(job.seeds[a:b], np.int64),
            )
    dist.barrier()
    if dist.is_main():
        _assemble(parts, shards, out, prov)
    dist.barrier()
    return prov


def _assemble(parts: Path, shards: list[tuple[int, int]], out: Path, prov: dict[str, Any]) -> None:
    arrays, labels = [], []
    for a, b in shards:
        path = _part_path(parts, a)
        part = _read_part(path, a, b)  # read once: checked and kept
        if part is None:
            raise CfgdiffError(f"part {path} is missing or incomplete; rerun the same command to finish it")
        arrays.append(part[0])
        labels.append(part[1])
    arr = np.concatenate(arrays)
    atomic_savez(out, arr_0=arr, arr_1=np.concatenate(labels))
    atomic_write_text(out.with_name(out.name + ".json"), json.dumps(prov, indent=1) + "\n")
    shutil.rmtree(parts)

