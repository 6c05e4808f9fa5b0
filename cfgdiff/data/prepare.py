"""`cfgdiff prepare`: a labelled image source -> a dataset file of size × size RGB images.

The main process lists the source, reads the files' bytes in order and writes; worker processes
decode and resize (see pool.py). Work is saved part by part (parts.py), so a rerun resumes, and
the dataset file appears at the output path only when it is complete (temporary name, then
rename). Damaged images are skipped, counted, and listed in `<output stem>.skipped.tsv`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cfgdiff import __version__
from cfgdiff.config import PrepareConfig, to_dict
from cfgdiff.console import Progress
from cfgdiff.data.archives import FolderSource, TarSource, ZipSource
from cfgdiff.data.builtin import BUILTINS, DEFAULT_COUNT, SHAPES, ShapesSource
from cfgdiff.data.decode import Decoded, ImageSpec
from cfgdiff.data.h5file import write_dataset
from cfgdiff.data.npz import NpzSource
from cfgdiff.data.parts import Part, PartStore, part_length
from cfgdiff.data.pool import cpu_count, run_tasks
from cfgdiff.data.sources import Member, Source, output_stem, select
from cfgdiff.errors import ConfigError, DataError, OutputError
from cfgdiff.files import Owner, atomic_path, require_regular, check_outputs, is_ours, job_id, output_lock, write_json, write_text
from cfgdiff.launch import print0


@dataclasses.dataclass(frozen=True)
class PrepareResult:
    """What `prepare` did (or, with dry_run, would do)."""

    output: str
    count: int  # images written (dry run: planned)
    skipped: int
    size: int
    num_classes: int
    kind: str
    split: str
    seconds: float
    resumed: int  # images found already done by an earlier, interrupted run
    report: str | None
    dry_run: bool
    config: dict[str, Any]


def open_source(cfg: PrepareConfig) -> Source:
    """Detect the kind of `cfg.source` and list it (DataError if missing, empty or unknown)."""
    spec = cfg.source
    if not spec:
        raise ConfigError("no source given")
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTINS:
            known = ", ".join("builtin:" + b for b in BUILTINS)
            raise DataError(f"unknown built-in data set '{name}' (known: {known})")
        return ShapesSource(cfg.limit or DEFAULT_COUNT, cfg.classes or len(SHAPES), cfg.seed)
    path = Path(spec)
    if not path.exists() and not path.is_symlink():
        raise DataError(f"source not found: {spec}")
    if not path.is_dir():
        require_regular(path, "source")
    if path.is_dir():
        if any(path.glob("*.npz")):
            return NpzSource(path, cfg.class_map)
        return FolderSource(path, cfg.split, cfg.class_map)
    if path.suffix.lower() == ".npz":
        return NpzSource(path, cfg.class_map)
    if zipfile.is_zipfile(path):
        return ZipSource(path, cfg.split, cfg.class_map)
    if tarfile.is_tarfile(path):
        return TarSource(path, cfg.split, cfg.class_map)
    raise DataError(f"unknown source {spec}: not a folder, .tar(.gz/.bz2/.xz), .zip, .npz or builtin:NAME")


def default_output(cfg: PrepareConfig) -> Path:
    """data/<source name><size>[-<what differs>].h5 under the current directory (where `cfgdiff train`
    looks): every option that changes the pixels or the classes (the resize, draft decoding, fewer
    classes, a builtin's seed) is in the name, so that no two of them propose the same file. A --limit
    only takes fewer of the same images: its name is the full set's, and a run with another limit is
    refused there as another job's output."""
    tags = [cfg.resize if cfg.resize != "area" else "", "draft" if cfg.draft else "",
            f"classes{cfg.classes}" if cfg.classes else "", f"seed{cfg.seed}" if cfg.seed else ""]
    tail = "".join(f"-{t}" for t in tags if t)
    return Path("data") / f"{output_stem(cfg.source, cfg.split or '')}{cfg.size}{tail}.h5"


def owners(cfg: PrepareConfig, out: Path) -> dict[str, Owner]:
    """Who writes each of `side_outputs(out)`: prepare, for this job (its options)."""
    job = job_id("prepare", to_dict(cfg))
    kinds = ("dataset", "dataset-summary", "skipped-list")
    return {flag: Owner(kind, "prepare", job) for flag, kind in zip(side_outputs(out), kinds)}


def _plan_id(cfg: PrepareConfig, members: list[Member], part_len: int) -> dict[str, Any]:
    """What partial work must match to be resumed: the options and the exact member list."""
    digest = hashlib.sha256()
    for m in members:
        digest.update(f"{m.name}\t{m.label}\n".encode())
    return {"config": to_dict(cfg), "members": len(members), "digest": digest.hexdigest(), "part_length": part_len}


def _make_output_folder(out: Path) -> None:
    if out.is_dir():
        raise DataError(f"{out} is a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder {out.parent}: {exc.strerror or exc}") from None
    if not os.access(out.parent, os.W_OK):
        raise DataError(f"cannot write to the output folder {out.parent}")


def _part(members: list[Member], images: np.ndarray, reasons: list[str]) -> Part:
    ok = np.array([r == "" for r in reasons], dtype=bool)
    return Part(
        images=images[ok],
        labels=np.array([m.label for m in members], dtype=np.int64)[ok],
        names=np.array([m.name for m in members], dtype=str)[ok],
        skipped_names=np.array([m.name for m, r in zip(members, reasons) if r], dtype=str),
        skipped_reasons=np.array([r for r in reasons if r], dtype=str),
    )


def _convert(
    source: Source, groups: dict[int, list[Member]], store: PartStore, spec: ImageSpec, workers: int, progress: Progress
) -> None:
    """Decode the members of every unfinished part and save each part as it completes."""
    skipped = 0
    # closing(): on Ctrl-C the pool is shut down here, not whenever the generator is collected
    with contextlib.closing(run_tasks(source.tasks(list(groups.values()), spec), workers)) as results:
        for k, members in groups.items():
            decoded: list[Decoded] = []
            done = 0
            while done < len(members):  # tasks never span two parts
                d = next(results)
                decoded.append(d)
                done += len(d.reasons)
                skipped += sum(1 for r in d.reasons if r)
                progress.advance(len(d.reasons), skipped=skipped)
            reasons = [r for d in decoded for r in d.reasons]
            store.write(k, _part(members, np.concatenate([d.images for d in decoded]), reasons))


def _write_report(out: Path, store: PartStore, parts: range, owner: Owner) -> tuple[int, Path | None]:
    """List the skipped images beside the output (name, tab, reason); their count and the file."""
    report = out.with_name(out.stem + ".skipped.tsv")
    lines = []
    for k in parts:
        p = store.read(k, "skipped_names", "skipped_reasons")
        lines += [f"{n}\t{r}" for n, r in zip(p["skipped_names"], p["skipped_reasons"])]
    if not lines:
        if is_ours(report, owner, same_job=False):
            report.unlink()  # a stale report of an earlier run would mislead (a user's file is left alone)
        return 0, None
    write_text(report, "name\treason\n" + "\n".join(lines) + "\n", owner=owner)
    return len(lines), report


def _attributes(cfg: PrepareConfig, source: Source, num_classes: int, skipped: int) -> dict[str, Any]:
    return {
        "size": cfg.size,
        "num_classes": num_classes,
        "class_ids": source.class_ids[:num_classes],
        "class_names": source.class_names[:num_classes],
        "resize": cfg.resize,
        "draft": cfg.draft,
        "source": cfg.source,
        "source_kind": source.kind,
        "split": source.split,
        "label_order": source.label_order,
        "class_map": getattr(source, "class_map_path", ""),
        "skipped": skipped,
        "cfgdiff_version": __version__,
        "config": json.dumps(to_dict(cfg)),
    }


def _summary(result: dict[str, Any], cfg: PrepareConfig, count: int, skipped: int) -> dict[str, Any]:
    """The summary JSON written beside a dataset."""
    return {**result, "count": count, "skipped": skipped, "config": to_dict(cfg), "cfgdiff_version": __version__}


def _finished_earlier(out: Path, cfg: PrepareConfig) -> PrepareResult:
    """The result of an earlier run of this same job if `out` is its complete file (a rerun then has
    nothing to do, and only clears partial work a kill left behind after the final rename); else
    DataError, since `out` holds something else."""
    import h5py

    try:
        with h5py.File(out, "r") as f:
            a = f.attrs
            same = a.get("config") == json.dumps(to_dict(cfg)) and "count" in a
            if same:
                attrs = {k: a[k] for k in ("count", "skipped", "size", "num_classes", "source_kind", "split")}
    except (OSError, ValueError):
        same = False
    if not same:
        raise OutputError(f"{out} exists; pass --force to replace it")
    PartStore(out, {}).remove()
    summary = out.with_suffix(".json")
    if not is_ours(summary, owners(cfg, out)["the summary of --out"]):  # a kill before the sidecar was written
        result = dict(output=str(out), size=int(attrs["size"]), num_classes=int(attrs["num_classes"]),
                      kind=str(attrs["source_kind"]), split=str(attrs["split"]) or None)
        write_json(summary, _summary(result, cfg, int(attrs["count"]), int(attrs["skipped"])),
                   owner=owners(cfg, out)["the summary of --out"])
    print0(f"prepare: {out} is already complete with these options; nothing to do (--force redoes it)")
    report = out.with_name(out.stem + ".skipped.tsv")
    return PrepareResult(
        output=str(out), count=int(attrs["count"]), skipped=int(attrs["skipped"]), size=int(attrs["size"]),
        num_classes=int(attrs["num_classes"]), kind=str(attrs["source_kind"]), split=str(attrs["split"]),
        seconds=0.0, resumed=int(attrs["count"]), report=str(report) if report.exists() else None, dry_run=False,
        config=to_dict(cfg),
    )


def prepare(
    cfg: PrepareConfig, out: str | Path | None = None, *, force: bool = False, workers: int = 0, dry_run: bool = False
) -> PrepareResult:
    """Convert `cfg.source` into a dataset file at `out` (default data/<name><size>.h5).

    Reruns resume from the parts an interrupted run finished. workers: decoding processes (0: one
    per core; 1: decode in this process). dry_run: list the source and return the plan, writing
    nothing. Raises DataError for a missing, empty or unknown source, an output that exists
    (without force) or cannot be written, or a source of which no image could be decoded.
    """
    t0 = time.monotonic()
    out = Path(out) if out is not None else default_output(cfg)
    if not dry_run:  # before listing, which takes minutes on ImageNet
        check_outputs(side_outputs(out), [cfg.source], owners=owners(cfg, out), force=force, make_folders=True)
        if out.exists() and not force:
            return _finished_earlier(out, cfg)
    source = open_source(cfg)
    members = select(source.members, cfg.classes, cfg.limit)
    num_classes = min(len(source.class_ids), cfg.classes or len(source.class_ids))
    result = dict(output=str(out), size=cfg.size, num_classes=num_classes, kind=source.kind, split=source.split)
    where = f"{cfg.source} ({source.kind}{', split ' + source.split if source.split else ''})"
    print0(f"prepare: {where}: {num_classes} classes, {len(members)} images -> {out} ({cfg.size}px, {cfg.resize})")
    if dry_run:
        planned = dict(count=len(members), skipped=0, seconds=0.0, resumed=0, report=None)
        return PrepareResult(**result, **planned, dry_run=True, config=to_dict(cfg))
    _make_output_folder(out)
    with output_lock(out, "prepare"):
        return _write(cfg, out, source, members, result, num_classes, workers, t0)


def side_outputs(out: Path) -> dict[str, Path]:
    """The files prepare writes beside `out`, by what the message calls them."""
    return {"--out": out, "the summary of --out": out.with_suffix(".json"),
            "the skipped-images list of --out": out.with_name(out.stem + ".skipped.tsv")}


def _write(cfg: PrepareConfig, out: Path, source: Source, members: list[Member], result: dict[str, Any],
           num_classes: int, workers: int, t0: float) -> PrepareResult:
    part_len = part_length(cfg.size)
    n_parts = -(-len(members) // part_len)
    store = PartStore(out, _plan_id(cfg, members, part_len), "prepare")
    done = store.open()
    groups = {k: members[k * part_len : (k + 1) * part_len] for k in range(n_parts) if k not in done}
    resumed = len(members) - sum(len(g) for g in groups.values())
    if resumed:
        print0(f"prepare: resuming: {resumed} of {len(members)} images already done")
    with Progress("prepare", total=len(members), unit="img", start=resumed) as progress:
        _convert(source, groups, store, ImageSpec(cfg.size, cfg.resize, cfg.draft), workers or cpu_count(), progress)

    own = owners(cfg, out)
    skipped, report = _write_report(out, store, range(n_parts), own["the skipped-images list of --out"])
    if skipped == len(members):
        store.remove()
        raise DataError(f"none of the {len(members)} images could be decoded; see {report}")
    with atomic_path(out, owner=own["--out"]) as tmp:  # the output path only ever holds a complete file
        count = write_dataset(tmp, store, range(n_parts), cfg.size, _attributes(cfg, source, num_classes, skipped))
    write_json(out.with_suffix(".json"), _summary(result, cfg, count, skipped),  # a sidecar after its file
               owner=own["the summary of --out"])
    store.remove()

    seconds = time.monotonic() - t0
    print0(f"prepare: wrote {out}: {count} images, {num_classes} classes, {cfg.size}px in {seconds:.1f} s")
    if skipped:
        print0(f"prepare: skipped {skipped} unreadable images; they are listed in {report}")
    report_path = str(report) if report else None
    return PrepareResult(
        **result, count=count, skipped=skipped, seconds=seconds, resumed=resumed, report=report_path, dry_run=False,
        config=to_dict(cfg),
    )
