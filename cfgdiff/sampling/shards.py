"""`cfgdiff sample`: sharded, resumable sampling to an ADM-compatible npz.

The seeds are cut into shards of `shard_size` consecutive positions. Rank r of W draws shards
r, r + W, …, and writes each as a part of `cfgdiff.files.PartStore` (`.<out>.partial/part-<start>.npz`,
atomically, with `plan.json`). Rerunning the same command skips finished parts; a rerun with another
job discards them. When every part exists, rank 0 joins them into `<out>` (`arr_0` (N, H, W, 3) uint8,
`arr_1` (N,) int64 labels) and writes the provenance beside it as `<out>.json`, both atomically and
entered in the folder's ownership ledger, then removes the parts. Rank 0 holds `.<out>.lock` meanwhile.

`sample --out DIR/` also writes the PNG folder DIR/png/ (`write_png_folder`): png/000000.png is
arr_0[0], and so on (index-named: row i's seed is the i-th of the provenance's `seeds`), which EDM,
torch-fidelity and clean-fid read. The PNGs go to `DIR/.png.partial/` first and the folder is renamed
to png/ when complete; a rerun finishes a partial folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import dataclasses
import json
import os
import re
import shutil
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
    Owner, PartStore, check_outputs, is_ours, job_id, npz_rows, output_lock, publish, recorded, write_json, write_npz,
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
    guide: SamplingModel | None = None  # autoguidance: the guide network (replaces the ∅ pass)

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


def guide_record(guide: SamplingModel | None) -> dict[str, Any] | None:
    """The autoguidance guide's identity (path, SHA-256, kimg), or None."""
    if guide is None:
        return None
    return {"path": str(guide.path), "sha256": guide.sha256, "kimg": guide.kimg, "model": to_dict(guide.model_cfg)}


def provenance(model: SamplingModel, job: SampleJob) -> dict[str, Any]:
    """Everything that determines the samples, plus where they came from."""
    seeds = np.asarray(job.seeds, np.int64)
    labels = np.asarray(job.labels, np.int64)
    per_sample = nfe(job.sampler, 1, model.diffusion_cfg, model.w_input)
    return {
        "cfgdiff_version": __version__,
        "checkpoint_sha256": model.sha256,
        "kimg": model.kimg,
        "dataset": model.dataset,
        "dataset_fingerprint": model.dataset_fingerprint,
        "resolution": model.resolution,
        "num_classes": model.num_classes,
        "sampler": to_dict(job.sampler),
        "diffusion": to_dict(model.diffusion_cfg),
        "model": to_dict(model.model_cfg),
        "n": len(job.seeds),
        "seeds": _compact_seeds(job.seeds),
        "seeds_sha256": hashlib.sha256(seeds.tobytes()).hexdigest(),
        "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
        "guide": guide_record(job.guide),
        "nfe_per_sample": per_sample,
        "nfe": per_sample * len(job.seeds),
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


# Before the samplers declared their own settings, every SamplerConfig held v (ancestral's) and η (ddim's),
# whatever its sampler: (owner, default) of each. A job's identity keeps that layout.
_TOP_LEVEL = {"v": ("ancestral", 0.3), "eta": ("ddim", 0.0)}


def _own_settings(sampler: dict[str, Any]) -> dict[str, Any]:
    """A recorded SamplerConfig in the layout of the files written before the samplers' own settings
    (v and η at the top level; other samplers' settings as `sampler_settings`), so that those files, and
    their job ids, stay valid."""
    sampler = dict(sampler)
    pairs = sampler.pop("sampler_settings", None)
    if pairs is None:  # written before: already this layout
        return sampler
    own = dict(pairs)
    for key, (owner, default) in _TOP_LEVEL.items():
        sampler[key] = own.pop(key) if sampler.get("sampler") == owner and key in own else default
    if own:
        sampler["sampler_settings"] = [[k, v] for k, v in own.items()]
    return sampler


def _identity(prov: dict[str, Any]) -> dict[str, Any]:
    """The part of the provenance that must match for parts to be reused (not the kimg label etc.)."""
    keys = ["checkpoint_sha256", "sampler", "diffusion", "n", "seeds_sha256", "labels_sha256", "resolution"]
    ident = {k: prov[k] for k in keys}
    if ident["sampler"].get("guidance", "cfg") == "cfg":  # as written before guidance methods: parts stay valid
        ident["sampler"] = {k: v for k, v in ident["sampler"].items() if k not in ("guidance", "guidance_settings")}
    ident["sampler"] = _own_settings(ident["sampler"])
    if prov.get("guide") is not None:  # absent for unguided jobs, so their parts and files stay valid
        ident["guide_sha256"] = prov["guide"]["sha256"]
    return ident


def _read_part(store: PartStore, start: int, stop: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The images and labels of a finished part, or None if it is missing or incomplete."""
    part = store.read_or_none(start, "arr_0", "arr_1", "seeds")
    n = stop - start
    if part is None or not part["arr_0"].shape[0] == part["arr_1"].shape[0] == part["seeds"].shape[0] == n:
        return None
    return part["arr_0"], part["arr_1"]


PNG_NAME = re.compile(r"^\d{6,}\.png$")


def png_name(i: int) -> str:
    return f"{i:06d}.png"


@dataclass(frozen=True)
class SampleOwners:
    """Who writes a samples file and its provenance sidecar (and the preview): `sample`'s kinds, or a
    sweep's when the sweep keeps its samples; `job` is `job_id` of the job's identity (None: not known
    yet, before the checkpoint is read; then only the job-independent rules are checked)."""

    command: str = "sample"
    job: str | None = None

    def of(self, what: str) -> Owner:
        kind = {"samples": "samples", "provenance": "provenance", "preview": "preview"}[what]
        return Owner(kind if self.command == "sample" else self.command, self.command, self.job or "")

    def for_job(self, prov: dict[str, Any]) -> SampleOwners:
        return dataclasses.replace(self, job=job_id(self.command, _identity(prov)))


def check_output(out: Path, preview: Path | None = None, inputs: tuple[Path | None, ...] = (), force: bool = False,
                 png_dir: Path | None = None, owners: SampleOwners = SampleOwners()) -> None:
    """The output rules for `out` (and the `preview` PNG and the `png_dir` folder), before any work:
    see `cfgdiff.files`. With `png_dir`, out's folder may still have to be created. Before the job is
    known (`owners.job` None), a file of another job of the same kind passes here; `run_sample` checks
    again with the job."""
    if out.suffix != ".npz":
        raise ConfigError(f"--out must end in .npz, got {out} (or name a folder: DIR/)")
    if png_dir is None and not out.parent.exists():
        raise DataError(f"output folder {out.parent} does not exist")
    sidecar = out.with_name(out.name + ".json")
    # an existing --out (and its provenance) is judged by `finished_earlier`: same job, nothing to do
    check_outputs({"--out": out, "--out's provenance": sidecar, "--preview": preview}, inputs,
                  owners={"--out": owners.of("samples"), "--out's provenance": owners.of("provenance"),
                          "--preview": owners.of("preview")},
                  force=force or owners.job is None, make_folders=png_dir is not None)
    if png_dir is not None and (png_dir.exists() or png_dir.is_symlink()):
        if png_dir.is_symlink() or not png_dir.is_dir():
            raise ConfigError(f"--out's PNG folder {png_dir} exists and is not a folder cfgdiff wrote")
        foreign = [p.name for p in png_dir.iterdir() if not PNG_NAME.match(p.name)]
        if foreign:
            raise ConfigError(f"--out's PNG folder {png_dir} holds files cfgdiff did not write ({foreign[0]}); "
                              "choose another --out")
        if not force and not out.exists():  # without the npz it belongs to, it is not the result of this job
            raise ConfigError(f"--out's PNG folder {png_dir} exists; pass --force to overwrite it")


def finished_earlier(out: Path, prov: dict[str, Any], owners: SampleOwners) -> dict[str, Any] | None:
    """The provenance of `out` if it exists and is the verified result of this same job (so a rerun
    has nothing to do); None if there is no such file; OutputError (exit 1) if `out` holds something else.
    Verified: the npz itself is the one cfgdiff wrote for this job (kind, job, size and SHA-256 in the
    folder's ledger) and holds n samples; a provenance file alone proves nothing. A sidecar that is
    missing or not this npz's (a kill between the npz and its sidecar) is written again."""
    if not out.exists():
        return None
    if is_ours(out, owners.of("samples")) and npz_rows(out) == prov["n"]:
        sidecar = out.with_name(out.name + ".json")
        done = {**prov, "samples_sha256": recorded(out)["sha256"]}
        if not is_ours(sidecar, owners.of("provenance")) or _read_json(sidecar) != json.loads(json.dumps(done)):
            write_json(sidecar, done, indent=1, owner=owners.of("provenance"))
        return done
    raise OutputError(f"{out} holds other samples; pass --force to overwrite it")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_sample(model: SamplingModel, job: SampleJob, out: Path, device: torch.device,
               force: bool = False, png_dir: Path | None = None, command: str = "sample") -> dict[str, Any]:
    """Draw every sample of `job` into `out`, resuming from finished parts; returns the provenance.
    `png_dir`: also write the samples as a PNG folder (`write_png_folder`). `command`: whose files
    they are (`sample`, or `sweep` for the samples a sweep keeps)."""
    out = Path(out)
    prov = provenance(model, job)
    owners = SampleOwners(command).for_job(prov)
    check_output(out, force=force, png_dir=png_dir, owners=owners)
    if png_dir is not None and dist.is_main():
        out.parent.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    store = PartStore(out, _identity(prov), command)
    done = None if force else finished_earlier(out, prov, owners)
    if done is not None:  # the same command ran to the end before (perhaps killed while cleaning up)
        if dist.is_main():
            store.remove()
            if png_dir is not None:
                write_png_folder(out, png_dir)
            dist.print0(f"{out} is complete already (same checkpoint, seeds, labels and sampler); nothing to do")
        return done
    with output_lock(out, "sample") if dist.is_main() else contextlib.nullcontext():
        prov = _run(model, job, out, device, prov, store, owners)
        if png_dir is not None and dist.is_main():
            write_png_folder(out, png_dir, fresh=True)
        return prov


def write_png_folder(npz: Path, png_dir: Path, fresh: bool = False) -> Path:
    """arr_0 of `npz` as `png_dir`/000000.png, 000001.png, … (row i → i). Written into
    `.<png_dir>.partial/` (each file under a temporary name, then renamed) and renamed to `png_dir`
    when complete; a rerun keeps the finished files. `fresh`: the npz was just (re)written, so an
    existing `png_dir` (checked by `check_output` to hold only such files) is stale: removed first."""
    from PIL import Image

    with np.load(npz) as f:
        images = f["arr_0"]
    if fresh and png_dir.exists():
        shutil.rmtree(png_dir)  # the PNGs of the npz just replaced (`check_output` saw only our names)
    if png_dir.is_dir() and len(list(png_dir.iterdir())) == len(images):
        return png_dir  # finished earlier, from this same npz (png/ appears only when complete)
    staging = png_dir.with_name(f".{png_dir.name}.partial")
    plan = {"npz": npz.name, "rows": len(images), "npz_sha256": hashlib.sha256(images.tobytes()).hexdigest()}
    if staging.exists() and _read_plan(staging) != plan:
        shutil.rmtree(staging)  # from another npz
    staging.mkdir(exist_ok=True)
    write_json(staging / "plan.json", plan)
    have = set(os.listdir(staging))
    for name in have:
        if ".tmp" in name:
            (staging / name).unlink(missing_ok=True)  # a write cut short
    for i, image in enumerate(images):
        name = png_name(i)
        if name in have:
            continue
        tmp = staging / f"{name}.tmp"
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format="PNG")
        publish(tmp, staging / name, sync=False)  # the folder's rename below is the commit point
    (staging / "plan.json").unlink()
    if png_dir.exists():
        shutil.rmtree(png_dir)
    os.sync()  # every PNG on disk before the folder appears (one call, not an fsync per file)
    publish(staging, png_dir)
    return png_dir


def _read_plan(folder: Path) -> Any:
    try:
        return json.loads((folder / "plan.json").read_text())
    except (OSError, ValueError):
        return None


def _run(model: Any, job: SampleJob, out: Path, device: torch.device, prov: dict[str, Any], store: PartStore,
         owners: SampleOwners) -> dict[str, Any]:
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
                images.append(sample_batch(model, job.seeds[i:j], job.labels[i:j], job.sampler, device,
                                           guide=job.guide))
                bar.advance(j - i, nfe=prov["nfe_per_sample"] * (j - i))
            arr = np.concatenate(images)
            store.write(a, {
                "arr_0": arr,
                "arr_1": np.asarray(job.labels[a:b], np.int64),
                "seeds": np.asarray(job.seeds[a:b], np.int64),
            })
    dist.barrier()
    if dist.is_main():
        prov = _assemble(store, shards, out, prov, owners)
    dist.barrier()
    return prov


def _assemble(store: PartStore, shards: list[tuple[int, int]], out: Path, prov: dict[str, Any],
              owners: SampleOwners) -> dict[str, Any]:
    arrays, labels = [], []
    for a, b in shards:
        part = _read_part(store, a, b)  # read once: checked and kept
        if part is None:
            raise CfgdiffError(f"part {store.path(a)} is missing or incomplete; rerun the same command to finish it")
        arrays.append(part[0])
        labels.append(part[1])
    arr = np.concatenate(arrays)
    # The npz is the commit point; its sidecar follows and names the npz's SHA-256, so a sidecar always
    # says which file it describes: a failed write (a full disk) leaves the old pair as it was, and a
    # kill between the two leaves an npz whose sidecar a rerun writes again (`finished_earlier`).
    write_npz(out, arr_0=arr, arr_1=np.concatenate(labels), owner=owners.of("samples"))
    prov = {**prov, "samples_sha256": recorded(out)["sha256"]}
    write_json(out.with_name(out.name + ".json"), prov, indent=1, owner=owners.of("provenance"))
    store.remove()
    return prov

