"""The built-in demo: prepare -> train -> sweep -> score -> report, on 2 CPU cores in minutes.

Every step is the library function behind the matching command, and each resumes, so rerunning
`cfgdiff demo` after an interruption continues where it stopped. Everything goes under one folder:

    <out-dir>/data/shapes16.h5          the training set (`cfgdiff prepare builtin:shapes --size 16`)
    <out-dir>/reference/shapes16.h5     held-out reference images (another seed)
    <out-dir>/runs/shapes16-tiny/       the training run (`cfgdiff train --preset tiny`)
    <out-dir>/sweep/                    sweep.jsonl/csv, table.md, the plots, grid.png (`cfgdiff sweep`)
    <out-dir>/report.md                 the table, the plots, and whether the paper's trade-off shows
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cfgdiff import dist
from cfgdiff.config import DemoConfig, PrepareConfig, SweepConfig
from cfgdiff.files import Owner, check_outputs, claim_folder, is_ours, write_text

OWNER = Owner("demo", "demo")  # the demo claims its --out-dir (cfgdiff.files.claim_folder)
WRITES = ("report.md",)  # the files the demo itself writes there; the rest are its commands' folders


def _prepare(source: str, size: int, count: int, seed: int, out: Path) -> None:
    """The demo's dataset: kept if it is this job's (prepare's own rerun check); an earlier demo's
    dataset with other options is replaced; a file cfgdiff did not write is refused (one line)."""
    from cfgdiff.data.prepare import owners, prepare

    cfg = PrepareConfig(source=source, size=size, limit=count, seed=seed)
    mine = is_ours(out, owners(cfg, out)["--out"])
    prepare(cfg, out, force=not mine, workers=0)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns the sweep rows and the trade-off checks."""
    from cfgdiff.sampling.sweep import run_sweep
    from cfgdiff.train.loop import train
    from cfgdiff.train.setup import resolve_config

    from cfgdiff.config import SamplerConfig
    from cfgdiff.diffusion.sampler import check_sampler_config

    check_sampler_config(SamplerConfig(steps=cfg.steps, sampler=cfg.sampler, grid=cfg.grid))  # before any work
    t0 = time.monotonic()
    out = Path(cfg.out_dir)
    data = out / "data" / f"shapes{cfg.size}.h5"
    ref = out / "reference" / f"shapes{cfg.size}.h5"
    run_dir = out / "runs" / f"shapes{cfg.size}-tiny"
    stage = lambda s: dist.print0(f"demo: {s} ({time.monotonic() - t0:.0f} s)")  # noqa: E731

    if dist.is_main():
        claim_folder(out, OWNER, writes=lambda name: name in WRITES, flag="--out-dir")
        check_outputs({"--out-dir's report": out / "report.md"}, owners=OWNER)
    stage("1/4 prepare the built-in shapes data set and a held-out reference")
    if dist.is_main():  # under torchrun rank 0 alone writes them; joining the group waits for it
        _prepare("builtin:shapes", cfg.size, cfg.train_images, 0, data)
        _prepare("builtin:shapes", cfg.size, cfg.reference_images, 1, ref)
    dist.init()
    dist.barrier()

    stage(f"2/4 train the tiny preset for {cfg.kimg:g} kimg")
    train_cfg = resolve_config(str(data), "tiny", str(run_dir), {"kimg": cfg.kimg, "snapshot_kimg": 10.0,
                                                                  "grid_kimg": cfg.kimg, "tick_kimg": 5.0})
    summary = train(train_cfg)

    stage(f"3/4 sweep w over {cfg.w} with {cfg.n} samples each, {cfg.sampler}, T = {cfg.steps}, "
          "scored with Inception")
    result = run_sweep(SweepConfig(checkpoint=run_dir, w=cfg.w, n=cfg.n, samplers=(cfg.sampler,),
                                   steps=(cfg.steps,), grids=(cfg.grid,), ref=str(ref), out_dir=out / "sweep",
                                   balanced=True, batch=cfg.batch))
    rows = {float(r["w"]): r for r in result.rows}  # one sampler, one T: a row per w

    stage("4/4 write the report")
    checks = tradeoff_checks(rows)
    report = write_report(out, cfg, summary, rows, checks, result.meta) if dist.is_main() else out / "report.md"
    stage(f"done: {report}")
    return {"report": str(report), "rows": [rows[w] for w in sorted(rows)], "checks": checks, "meta": result.meta,
            "sweep": {k: str(v) for k, v in result.outputs().items()}}


def tradeoff_checks(rows: dict[float, dict[str, Any]]) -> dict[str, bool]:
    """The paper's qualitative effect over the sweep: precision up and recall down from w = 0 to the largest w."""
    ws = sorted(rows)
    first, last = rows[ws[0]], rows[ws[-1]]
    return {
        "precision_rises": last["precision"] > first["precision"],
        "recall_falls": last["recall"] < first["recall"],
    }


def _f4(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _own(cfg: DemoConfig) -> str:
    """ " with v = 0.3": the sampler's own settings (at their defaults), as the report names them."""
    from cfgdiff.diffusion.sampler_registry import get_sampler

    pairs = get_sampler(cfg.sampler).resolve()
    return "".join(f" with {k} = {v:g}" for k, v in pairs)


def write_report(out: Path, cfg: DemoConfig, summary: dict[str, Any], rows: dict[float, dict[str, Any]],
                 checks: dict[str, bool], meta: dict[str, Any]) -> Path:
    from cfgdiff.sampling.sweep_files import markdown_table

    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    text = f"""# cfgdiff demo report

Built-in `shapes` data set ({cfg.train_images} images, 10 classes, {cfg.size}×{cfg.size}); the `tiny` U-Net
trained for {summary['kimg']:g} kimg (final loss {_f4(summary['loss'])}); for each w, {cfg.n} class-balanced
samples with the same seeds (sampler {cfg.sampler}{_own(cfg)}, T = {cfg.steps}, {cfg.grid} λ grid, NFE per
sample in the table), scored against {cfg.reference_images} held-out images with the Inception network.

{markdown_table(rows, meta)}
IS is "n/a" when only features-only Inception weights were found (see `docs/score.md`).

The paper's trade-off, measured here (w = {min(rows):g} → w = {max(rows):g}):

- precision rises: {yes(checks['precision_rises'])}
- recall falls: {yes(checks['recall_falls'])}

![FID against IS or precision](sweep/fid_vs_is.png)

![FID against w](sweep/fid_vs_w.png)

Samples with the same seeds and classes across w (rows), as the paper's Fig. 3:

![samples across w](sweep/grid.png)
"""
    path = out / "report.md"
    write_text(path, text, owner=OWNER)
    return path
