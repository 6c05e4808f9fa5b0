"""`cfgdiff sweep`: the paper's FID/IS trade-off over guidance weights (Fig. 1, Fig. 2, Fig. 3).

For each w the same seeds and labels are sampled (common random numbers, as the paper's Fig. 3),
each batch goes straight into the Inception statistics (no 50k images per w on disk unless
`keep_samples`), and one row per w is appended to `sweep.jsonl` and `sweep.csv` atomically.
Rerunning skips the w values already in `sweep.jsonl`; the settings that determine the rows are kept
in `settings.json` and must match.
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
from cfgdiff.config import SweepConfig
from cfgdiff.console import Progress
from cfgdiff.errors import ConfigError, DataError
from cfgdiff.runs import SamplingModel
from cfgdiff.sampling.command import seeds_and_labels
from cfgdiff.sampling.generate import nfe, sample_batch
from cfgdiff.files import check_outputs, output_lock, run_inputs, write_json, write_text
from cfgdiff.sampling.shards import SampleJob, provenance, run_sample

OUTPUTS = ("settings.json", "sweep.jsonl", "sweep.csv", "table.md", "fid_vs_is.png", "grid.png")  # in --out


def columns() -> list[str]:
    """sweep.csv's columns: w, every metric's result keys (`cfgdiff.metrics.registry`), the run's settings."""
    from cfgdiff.metrics import registry

    return ["w", *registry.result_keys(), "n", "steps", "v", "seconds"]


def read_rows(path: Path) -> dict[float, dict[str, Any]]:
    """Rows of sweep.jsonl by w; a torn last line (killed mid-write cannot happen, but be safe) is ignored."""
    rows: dict[float, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            rows[float(row["w"])] = row
    return rows


def write_rows(out_dir: Path, rows: dict[float, dict[str, Any]]) -> None:
    """sweep.jsonl and sweep.csv, sorted by w, each written to a temporary name then renamed."""
    ordered = [rows[w] for w in sorted(rows)]
    write_text(out_dir / "sweep.jsonl", "".join(json.dumps(r) + "\n" for r in ordered), record=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(ordered)
    write_text(out_dir / "sweep.csv", buf.getvalue(), record=True)


def markdown_table(rows: dict[float, dict[str, Any]]) -> str:
    """The paper's Fig. 1 layout: one line per w with FID and IS (plus precision and recall)."""
    head = "| w | FID | IS | precision | recall |\n| ---: | ---: | ---: | ---: | ---: |\n"
    lines = []
    for w in sorted(rows):
        r = rows[w]
        is_ = f"{r['is_mean']:.2f} ± {r['is_std']:.2f}" if r.get("is_mean") is not None else "n/a"
        lines.append(f"| {w:g} | {_f(r.get('fid'))} | {is_} | {_f(r.get('precision'), 3)} | {_f(r.get('recall'), 3)} |")
    return head + "\n".join(lines) + "\n"


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _settings(model: SamplingModel, job: SampleJob, ref_hash: str, weights: str) -> dict[str, Any]:
    prov = provenance(model, job)
    keys = ["checkpoint_sha256", "n", "seeds_sha256", "labels_sha256", "diffusion", "resolution"]
    sampler = {k: v for k, v in prov["sampler"].items() if k != "w"}
    return {**{k: prov[k] for k in keys}, "sampler": sampler, "reference_sha256": ref_hash, "inception_sha256": weights}


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    path = out_dir / "settings.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if old != settings:
            raise ConfigError(f"{out_dir} holds a sweep with other settings (checkpoint, n, seeds, T, v or reference); "
                              "choose another --out")
    else:
        write_json(path, settings, indent=1, record=True)


def my_batches(n: int, batch: int) -> list[int]:
    """This rank's batch starts: a contiguous block, so that gathering the ranks' features in rank
    order gives the single-process order (IS splits the features in order)."""
    starts = list(range(0, n, batch))
    per = -(-len(starts) // dist.world_size())
    return starts[dist.rank() * per : (dist.rank() + 1) * per]


def score_w(model: SamplingModel, job: SampleJob, detector: Any, device: Any, keep: Path | None) -> Any:
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
    with Progress(f"w={job.sampler.w:g}", total=n, unit="img") as bar:
        for a in starts:
            b = min(a + job.batch, n)
            images = sample_batch(model, job.seeds[a:b], job.labels[a:b], job.sampler, device)
            acc.add_images(detector, images)
            bar.advance((b - a) * dist.world_size(), nfe=nfe(job.sampler, b - a))
    return acc.finalize(detector.sha256)


def run_sweep(req: SweepConfig) -> dict[float, dict[str, Any]]:
    """Fill `sweep.jsonl` for every w of the grid that is missing, then write table, plot and grid."""
    from cfgdiff.metrics import compute_metrics, load_detector, load_reference
    from cfgdiff.metrics.reference import default_reference
    from cfgdiff.sampling.model import load_model
    from cfgdiff.sampling.report import write_figure_grid, write_plot

    ws = req.ws()
    dist.init()
    device = dist.device()
    model = load_model(req.checkpoint, device)
    seeds, labels = seeds_and_labels(req.n, req.seeds, model.num_classes, req.balanced, None)
    ref = default_reference(req.ref, model.dataset)
    if not ref:
        raise ConfigError("no --ref given and the checkpoint records no training dataset")
    default_dir = Path("sweeps") / f"{Path(str(model.dataset)).stem}-T{req.steps}-n{req.n}"
    out_dir = Path(req.out_dir) if req.out_dir else default_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {out_dir}: {e.strerror}") from None
    check_outputs({f"--out {out_dir}: {name}": out_dir / name for name in OUTPUTS},
                  [*run_inputs(req.checkpoint), ref, req.inception], hint="choose another --out")
    detector = load_detector(req.inception, device)
    reference = load_reference(ref, detector)
    base = SampleJob(tuple(seeds), tuple(labels), req.sampler(), req.batch)
    if dist.is_main():
        _check_settings(out_dir, _settings(model, base, reference.sha256, detector.sha256))
    dist.barrier()
    with output_lock(out_dir / "sweep.jsonl", "sweep") if dist.is_main() else contextlib.nullcontext():
        rows = read_rows(out_dir / "sweep.jsonl")
        for w in ws:
            if w in rows:
                dist.print0(f"w={w:g}: done earlier, skipped")
                continue
            t0 = time.perf_counter()
            job = dataclasses.replace(base, sampler=dataclasses.replace(base.sampler, w=w))
            keep = out_dir / f"samples_w{w:g}.npz" if req.keep_samples else None
            stats = score_w(model, job, detector, device, keep)
            metrics = compute_metrics(stats, reference, device=str(device))  # precision/recall on the GPU, as `score`
            row = {"w": w, **{k: metrics.get(k) for k in columns() if k in metrics}, "n": req.n, "steps": req.steps,
                   "v": req.v, "seconds": round(time.perf_counter() - t0, 2), "cfgdiff_version": __version__,
                   "unavailable": metrics["unavailable"]}
            rows[w] = row
            if dist.is_main():
                write_rows(out_dir, rows)
                shown = ("fid", "is_mean", "precision", "recall")
                dist.print0(f"w={w:g}: " + " ".join(f"{k}={_f(row.get(k), 4)}" for k in shown))
            dist.barrier()
        if dist.is_main():
            write_text(out_dir / "table.md", markdown_table(rows), record=True)
            write_plot(rows, out_dir / "fid_vs_is.png")
            write_figure_grid(model, base, sorted(rows), out_dir / "grid.png", device, req.figure_ws)
    dist.barrier()
    return rows
