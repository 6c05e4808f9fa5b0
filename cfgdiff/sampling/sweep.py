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
import csv
import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cfgdiff import __version__, dist
from cfgdiff.config import SamplerConfig, SweepConfig, to_dict
from cfgdiff.console import Progress
from cfgdiff.errors import ConfigError, DataError
from cfgdiff.files import check_outputs, is_ours, output_lock, run_inputs, write_json, write_text
from cfgdiff.runs import _NAME, SamplingModel, newest_run, resolve_weights_file
from cfgdiff.sampling.command import seeds_and_labels
from cfgdiff.sampling.generate import nfe, sample_batch
from cfgdiff.sampling.shards import SampleJob, _compact_seeds, provenance, run_sample

FORMAT = 2  # settings.json: 2 = axes in every row's key (1, unmarked: one sampler and T per folder)
AXES = ("sampler", "steps", "grid", "guidance_interval", "w")  # a row's key, in table order
PLOTS = ("fid_vs_is.png", "fid_vs_w.png", "fid_vs_nfe.png")
OUTPUTS = ("settings.json", "sweep.jsonl", "sweep.csv", "table.md", *PLOTS, "grid.png", "sweep.json")  # in --out-dir
SHARED = ("v", "clip_x", "eta", "rescale", "threshold")  # sampler settings that are the same in every row

Key = tuple[str, int, str, tuple[float, ...], float]


def columns() -> list[str]:
    """sweep.csv's columns: the axes, NFE per sample, every metric's result keys
    (`cfgdiff.metrics.registry`), the shared settings."""
    from cfgdiff.metrics import registry

    return [*AXES, "nfe", *registry.result_keys(), "n", "v", "seconds"]


# ---- rows and their keys ------------------------------------------------------------------------------------------
def key_of(cfg: SamplerConfig) -> Key:
    return (cfg.sampler, cfg.steps, cfg.grid, tuple(cfg.guidance_interval or ()), float(cfg.w))


def row_key(row: dict[str, Any]) -> Key:
    """A row's key; rows written without an axis (a dummy row in a test) get that axis's default."""
    d = SamplerConfig()
    return (row.get("sampler", d.sampler), int(row.get("steps", d.steps)), row.get("grid", d.grid),
            tuple(row.get("guidance_interval") or ()), float(row["w"]))


def line_of(key: Key) -> tuple[str, int, str, tuple[float, ...]]:
    """The plot line (and table group) a row belongs to: every axis but w."""
    return key[:4]


def line_label(line: tuple[str, int, str, tuple[float, ...]]) -> str:
    sampler, steps, grid, interval = line
    extra = ([] if grid == "paper" else [f"{grid} grid"]) + ([f"λ∈[{interval[0]:g}, {interval[1]:g}]"] if interval else [])
    return ", ".join([f"{sampler}, T={steps}", *extra])


def read_rows(path: Path) -> dict[Key, dict[str, Any]]:
    """Rows of sweep.jsonl by key; a torn last line (killed mid-write cannot happen, but be safe) is ignored."""
    rows: dict[Key, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            rows[row_key(row)] = row
    return rows


def _ordered(rows: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows.values(), key=row_key)


def write_rows(out_dir: Path, rows: dict[Any, dict[str, Any]]) -> None:
    """sweep.jsonl and sweep.csv in key order, each written to a temporary name then renamed."""
    ordered = _ordered(rows)
    write_text(out_dir / "sweep.jsonl", "".join(json.dumps(r) + "\n" for r in ordered), record=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(), extrasaction="ignore")
    writer.writeheader()
    for r in ordered:
        interval = r.get("guidance_interval")
        writer.writerow({**r, "guidance_interval": f"{interval[0]!r}:{interval[1]!r}" if interval else ""})
    write_text(out_dir / "sweep.csv", buf.getvalue(), record=True)


# ---- what the outputs say about themselves ------------------------------------------------------------------------
def describe(meta: dict[str, Any]) -> str:
    """Two lines naming n, v, the checkpoint, the reference and the Inception weights (table.md, plot titles)."""
    c, r, i = meta["checkpoint"], meta["reference"], meta["inception"]
    return (f"n={meta['n']} per row, v={meta['v']:g}; checkpoint {Path(c['path']).name} (step {c['step']}, "
            f"sha {c['sha256'][:12]})\nreference {Path(r['path']).name} (sha {r['sha256'][:12]}); "
            f"Inception sha {i['sha256'][:12]}")


def markdown_table(rows: dict[Any, dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """The paper's Fig. 1 layout, one table per (sampler, steps) (and λ grid, interval where those vary):
    one line per w with NFE, FID and IS (plus precision and recall)."""
    out = []
    if meta is not None:
        c = meta["checkpoint"]
        out.append(f"- samples per row: n = {meta['n']} (seeds {meta['seeds']}, labels {meta['labels']}), "
                   f"v = {meta['v']:g}\n- checkpoint: `{c['path']}` (step {c['step']}, {c['kimg']:g} kimg, "
                   f"sha256 `{c['sha256'][:16]}…`)\n- reference: `{meta['reference']['path']}` "
                   f"(sha256 `{meta['reference']['sha256'][:16]}…`)\n- Inception weights: "
                   f"`{meta['inception']['path']}` (sha256 `{meta['inception']['sha256'][:16]}…`)\n")
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in _ordered(rows):
        groups.setdefault(line_of(row_key(r)), []).append(r)
    for line, members in groups.items():
        lines = [f"### {line_label(line)}\n", "| w | NFE | FID | IS | precision | recall |",
                 "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in members:
            is_ = f"{r['is_mean']:.2f} ± {r['is_std']:.2f}" if r.get("is_mean") is not None else "n/a"
            lines.append(f"| {r['w']:g} | {r.get('nfe', 'n/a')} | {_f(r.get('fid'))} | {is_} | "
                         f"{_f(r.get('precision'), 3)} | {_f(r.get('recall'), 3)} |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _shared_settings(model: SamplingModel, job: SampleJob, ref_hash: str, weights: str,
                     metrics: tuple[str, ...] | None) -> dict[str, Any]:
    prov = provenance(model, job)
    keys = ["checkpoint_sha256", "n", "seeds_sha256", "labels_sha256", "diffusion", "resolution"]
    sampler = {k: v for k, v in prov["sampler"].items() if k in SHARED}
    return {"format": FORMAT, **{k: prov[k] for k in keys}, "sampler": sampler, "reference_sha256": ref_hash,
            "inception_sha256": weights, "metrics": list(metrics) if metrics else None}


def _recorded_settings(out_dir: Path) -> Any:
    """settings.json of `out_dir` (None if absent or unreadable); a folder of the single-axis format
    (cfgdiff before the sampler axes) is refused here, before anything loads."""
    path = out_dir / "settings.json"
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None
    if isinstance(old, dict) and old.get("format") is None:
        raise ConfigError(f"{out_dir} holds a sweep from an older cfgdiff (one sampler and T per folder), "
                          "which this version does not extend; choose another --out-dir")
    return old


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    path = out_dir / "settings.json"
    if path.exists():
        old = _recorded_settings(out_dir)
        if old != settings:
            raise ConfigError(f"{out_dir} holds a sweep with other settings (checkpoint, n, seeds, v, eta, rescale, "
                              "threshold, metrics or reference); choose another --out-dir")
    else:
        write_json(path, settings, indent=1, record=True)


# ---- where the sweep goes, before anything loads ------------------------------------------------------------------
def checkpoint_file(checkpoint: Path | str | None) -> Path:
    """The weights file a sweep reads: a file as given, a run's newest EMA file, or the newest run's."""
    return resolve_weights_file(Path(checkpoint) if checkpoint is not None else newest_run())


def default_out_dir(file: Path, step: int | None = None) -> Path | None:
    """sweeps/<run>-step<step>: a sweep per checkpoint. The step comes from the file name (ema-<step>.pt)
    or, for another name, from the loaded checkpoint (None until then)."""
    m = _NAME.match(file.name)
    if m:
        return Path("sweeps") / f"{file.parent.name}-step{int(m.group(2))}"
    return None if step is None else Path("sweeps") / f"{file.stem}-step{step}"


def _stat(path: str | Path | None) -> list[Any] | None:
    try:
        st = Path(path).stat() if path else None
    except OSError:
        return None
    return None if st is None else [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def fingerprint(req: SweepConfig, file: Path, ref: str | None) -> dict[str, Any]:
    """What a finished sweep must match to be reused without loading anything: the request's shared
    settings and the identity (path, size, mtime) of the checkpoint file and the reference."""
    shared = {k: getattr(req, k) for k in ("n", "seeds", "balanced", "v", "eta", "rescale", "threshold", "clip",
                                            "inception", "keep_samples", "figure_ws", "metrics")}
    return {**shared, "checkpoint": _stat(file), "ref": req.ref, "reference": _stat(ref)}


def finished(out_dir: Path, req: SweepConfig, file: Path) -> dict[str, Any] | None:
    """The recorded summary (sweep.json) when every row of `req` exists and every output is the one this
    sweep wrote for these rows; None when anything is to do."""
    summary_file = out_dir / "sweep.json"
    if not (summary_file.is_file() and all(is_ours(out_dir / name) for name in OUTPUTS)):
        return None
    try:
        summary = json.loads(summary_file.read_text())
        rows = read_rows(out_dir / "sweep.jsonl")
        ref = req.ref or summary["meta"]["reference"]["path"]
        recorded = sorted(tuple(row_key(r)) for r in summary["rows"])
    except (ValueError, KeyError, TypeError):
        return None
    if summary.get("request") != json.loads(json.dumps(fingerprint(req, file, ref))):
        return None
    if recorded != sorted(rows) or not {key_of(c) for c in req.combinations()} <= set(rows):
        return None
    return summary


# ---- sampling and scoring -----------------------------------------------------------------------------------------
def my_batches(n: int, batch: int) -> list[int]:
    """This rank's batch starts: a contiguous block, so that gathering the ranks' features in rank
    order gives the single-process order (IS splits the features in order)."""
    starts = list(range(0, n, batch))
    per = -(-len(starts) // dist.world_size())
    return starts[dist.rank() * per : (dist.rank() + 1) * per]


def score_row(model: SamplingModel, job: SampleJob, detector: Any, device: Any, keep: Path | None) -> Any:
    """Sample `job` and stream every batch into the Inception statistics; returns Statistics."""
    from cfgdiff.metrics.stats import FeatureAccumulator

    acc = FeatureAccumulator(keep_pool=True, keep_logits=detector.has_logits)
    if keep is not None:  # samples kept on disk: draw them resumably, then score the file
        if not keep.exists():
            run_sample(model, job, keep, device)
        with np.load(keep) as f:
            images = f["arr_0"]
        for a in my_batches(len(images), job.batch):
            acc.add_images(detector, images[a : a + job.batch])
        return acc.finalize(detector.sha256)
    n = len(job.seeds)
    starts = my_batches(n, job.batch)
    with Progress(f"{line_label(line_of(key_of(job.sampler)))}, w={job.sampler.w:g}", total=n, unit="img") as bar:
        for a in starts:
            b = min(a + job.batch, n)
            images = sample_batch(model, job.seeds[a:b], job.labels[a:b], job.sampler, device)
            acc.add_images(detector, images)
            bar.advance((b - a) * dist.world_size(), nfe=nfe(job.sampler, b - a, model.diffusion_cfg))
    return acc.finalize(detector.sha256)


def _keep_name(key: Key) -> str:
    sampler, steps, grid, interval, w = key
    tail = f"_{grid}" if grid != "paper" else ""
    tail += f"_gi{interval[0]:g}:{interval[1]:g}" if interval else ""
    return f"samples_{sampler}_T{steps}{tail}_w{w:g}.npz"


def _meta(model: SamplingModel, req: SweepConfig, seeds: list[int], reference: Any, detector: Any) -> dict[str, Any]:
    return {
        "n": req.n, "v": req.v, "seeds": _compact_seeds(tuple(seeds)), "labels": "balanced" if req.balanced else
        "uniform", "eta": req.eta, "rescale": req.rescale, "threshold": req.threshold, "clip_x": req.clip,
        "checkpoint": {"path": str(model.path), "step": model.step, "kimg": model.kimg, "sha256": model.sha256},
        "reference": {"path": str(reference.path), "sha256": reference.sha256},
        "inception": {"path": str(detector.path), "sha256": detector.sha256},
    }


@dataclasses.dataclass
class SweepResult:
    """What a sweep did: its folder, every row (key order), the metadata, and the rows it computed now."""

    out_dir: Path
    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    computed: int = 0
    plan: dict[str, Any] | None = None  # --dry-run

    def outputs(self) -> dict[str, str]:
        return {name: str(self.out_dir / name) for name in OUTPUTS}


def plan_rows(req: SweepConfig, model: SamplingModel, rows: dict[Key, dict[str, Any]], device: Any,
              ref: str) -> dict[str, Any]:
    """--dry-run: the rows still to compute, their NFE, the time from one measured forward, the disk."""
    from cfgdiff.sampling.generate import seconds_per_step

    todo = [c for c in req.combinations() if key_of(c) not in rows]
    per_sample = {key_of(c): nfe(c, 1, model.diffusion_cfg) for c in todo}
    total = sum(per_sample.values()) * req.n
    b = min(req.batch, req.n)
    t = seconds_per_step(model, b, False, device) if todo else 0.0  # one forward of b images
    seconds = total * t / b / dist.world_size()
    image_bytes = req.n * model.resolution**2 * 3
    disk = (len(todo) * image_bytes if req.keep_samples else 0) + 2_000_000  # npz per row; table, csv and plots
    return {
        "rows_total": len(req.combinations()), "rows_done": len(req.combinations()) - len(todo),
        "rows_to_compute": [{"sampler": k[0], "steps": k[1], "grid": k[2], "guidance_interval": list(k[3]) or None,
                             "w": k[4], "nfe_per_sample": v} for k, v in per_sample.items()],
        "nfe": total, "seconds_per_forward": t, "forward_batch": b, "estimated_seconds": seconds,
        "processes": dist.world_size(), "device": str(device), "disk_bytes": disk, "reference": ref,
        "checkpoint": {"path": str(model.path), "step": model.step, "sha256": model.sha256},
    }


def format_plan(plan: dict[str, Any], out_dir: Path) -> str:
    lines = [f"plan: {len(plan['rows_to_compute'])} of {plan['rows_total']} rows to compute in {out_dir} "
             f"({plan['rows_done']} done earlier)"]
    for r in plan["rows_to_compute"]:
        gi = f", λ∈{r['guidance_interval']}" if r["guidance_interval"] else ""
        lines.append(f"  {r['sampler']}, T={r['steps']}, {r['grid']} grid{gi}, w={r['w']:g}: "
                     f"NFE {r['nfe_per_sample']} per sample")
    lines.append(f"NFE = {plan['nfe']:,} in all; ~{plan['estimated_seconds'] / 3600:.2f} h of sampling on "
                 f"{plan['processes']}× {plan['device']} ({plan['seconds_per_forward'] * 1000:.1f} ms per forward of "
                 f"{plan['forward_batch']} images; Inception scoring not included); disk ~{plan['disk_bytes'] / 1e6:.0f} MB")
    return "\n".join(lines)


def run_sweep(req: SweepConfig) -> SweepResult:
    """Fill `sweep.jsonl` for every combination that is missing, then write table, plots and grid
    (or, with `req.dry_run`, only plan it)."""
    file = checkpoint_file(req.checkpoint)
    out_dir = Path(req.out_dir) if req.out_dir else default_out_dir(file)
    if out_dir is not None:
        _recorded_settings(out_dir)
    if out_dir is not None and not req.dry_run:
        summary = finished(out_dir, req, file)
        if summary is not None:  # nothing to do: no model, no Inception, no grid
            for r in summary["rows"]:
                dist.print0(f"{line_label(line_of(row_key(r)))}, w={r['w']:g}: done earlier, skipped")
            return SweepResult(out_dir, summary["rows"], summary["meta"])

    from cfgdiff.diffusion.sampler import check_sampler_config
    from cfgdiff.metrics import compute_metrics, load_detector, load_reference
    from cfgdiff.metrics.reference import default_reference
    from cfgdiff.sampling.model import load_model
    from cfgdiff.sampling.report import write_figure_grid, write_plots

    combos = req.combinations()
    for c in {(c.sampler, c.grid): c for c in combos}.values():
        check_sampler_config(c)
    dist.init()
    device = dist.device()
    model = load_model(file, device)
    if out_dir is None:
        out_dir = default_out_dir(file, model.step)
        _recorded_settings(out_dir)
    seeds, labels = seeds_and_labels(req.n, req.seeds, model.num_classes, req.balanced, None)
    ref = default_reference(req.ref, model.dataset)
    if not ref:
        raise ConfigError("no --ref given and the checkpoint records no training dataset")
    if req.dry_run:
        plan = plan_rows(req, model, read_rows(out_dir / "sweep.jsonl"), device, ref)
        meta = {"checkpoint": plan["checkpoint"], "reference": {"path": ref, "sha256": None}, "inception": None}
        return SweepResult(out_dir, [], meta, plan=plan)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {out_dir}: {e.strerror}") from None
    check_outputs({f"--out-dir {out_dir}: {name}": out_dir / name for name in OUTPUTS},
                  [*run_inputs(req.checkpoint), file, ref, req.inception], hint="choose another --out-dir")
    detector = load_detector(req.inception, device)
    reference = load_reference(ref, detector)
    base = SampleJob(tuple(seeds), tuple(labels), combos[0], req.batch)
    if dist.is_main():
        _check_settings(out_dir, _shared_settings(model, base, reference.sha256, detector.sha256, req.metrics))
    meta = _meta(model, req, seeds, reference, detector)
    dist.barrier()
    computed = 0
    with output_lock(out_dir / "sweep.jsonl", "sweep") if dist.is_main() else contextlib.nullcontext():
        rows = read_rows(out_dir / "sweep.jsonl")
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
            metrics = compute_metrics(stats, reference, req.metrics, device=str(device))  # precision/recall on the GPU, as `score`
            row = {"sampler": cfg.sampler, "steps": cfg.steps, "grid": cfg.grid,
                   "guidance_interval": list(cfg.guidance_interval) if cfg.guidance_interval else None, "w": cfg.w,
                   "nfe": nfe(cfg, 1, model.diffusion_cfg),
                   **{k: metrics.get(k) for k in columns() if k in metrics}, "n": req.n, "v": req.v,
                   "seconds": round(time.perf_counter() - t0, 2), "cfgdiff_version": __version__,
                   "unavailable": metrics["unavailable"]}
            rows[key] = row
            computed += 1
            if dist.is_main():
                write_rows(out_dir, rows)
                shown = ("fid", "is_mean", "precision", "recall")
                dist.print0(f"{label}: " + " ".join(f"{k}={_f(row.get(k), 4)}" for k in shown))
            dist.barrier()
        if dist.is_main():
            write_text(out_dir / "table.md", f"# cfgdiff sweep\n\n{markdown_table(rows, meta)}", record=True)
            write_plots(rows, out_dir, describe(meta))
            grid = out_dir / "grid.png"
            if computed or not is_ours(grid):  # Fig. 3 for the first line's settings
                first = [r for r in _ordered(rows) if line_of(row_key(r)) == line_of(key_of(combos[0]))]
                write_figure_grid(model, base, [r["w"] for r in first], grid, device, req.figure_ws)
            summary = {"meta": meta, "request": fingerprint(req, file, ref), "rows": _ordered(rows)}
            write_json(out_dir / "sweep.json", summary, indent=1, record=True)
    dist.barrier()
    return SweepResult(out_dir, _ordered(rows), meta, computed)

