"""Guided distillation against its teacher (issue 25): FID at each w, on the same seeds and reference.

1. `cfgdiff distill` on the teacher run (library call, the command's own code): stage 1, then
   progressive rounds down to --steps; each stage's kimg and wall time are recorded.
2. Every row samples the same N class-balanced seeds (seed i gets class i mod K) and scores them with
   cfgdiff's metrics API against one reference: the teacher with the paper's ancestral sampler at
   T = 256 and with dpmpp-2m-sde at T = 16 (32 evaluations when guided), and each student with its
   own sampler (deterministic DDIM on its grid, one evaluation a step), and --sde rows with the
   distillation paper's stochastic sampler (distill-sde).

    python bench/distill.py RUN --ref REF.h5 --n 500 --ws 0,1,2,4 --steps 2 --rounds 4 --kimg 16 \\
        --out-dir bench-out/distill [--ancestral-ws ''] [--sde]

Writes rows.jsonl (a rerun computes only missing rows; the distillation itself resumes), stages.json
and table.md into --out-dir.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cfgdiff.config import SamplerConfig, sampling_defaults
from cfgdiff.metrics.detector import load_detector
from cfgdiff.metrics.evaluate import compute_metrics
from cfgdiff.metrics.reference import load_reference
from cfgdiff.metrics.stats import FeatureAccumulator
from cfgdiff.runs import SamplingModel, load_for_sampling
from cfgdiff.sampling.generate import nfe, sample_batch
from cfgdiff.sampling.labels import labels_for_seeds
from cfgdiff.train.distill_chain import DistillRequest, run_distill


def floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def distil(args: argparse.Namespace) -> list[dict]:
    """Run (or resume) the distillation; each stage's folder, kimg, loss and wall time."""
    stages_file = Path(args.out_dir) / "stages.json"
    if stages_file.exists():
        return json.loads(stages_file.read_text())
    req = DistillRequest(teacher=Path(args.run), out=Path(args.out_dir) / "students", steps=args.steps,
                         rounds=args.rounds, kimg=args.kimg, w_min=0.0, w_max=max(floats(args.ws)),
                         overrides={"workers": 0})
    stages = []
    for result in run_distill(req):
        stats = [json.loads(line) for line in (Path(result["run_dir"]) / "stats.jsonl").read_text().splitlines()]
        stages.append({"stage": result["stage"], "run_dir": result["run_dir"], "kimg": result["kimg"],
                       "loss": result["loss"], "wall_s": stats[-1]["elapsed_s"] if stats else None})
    stages_file.write_text(json.dumps(stages, indent=1))
    return stages


class Scorer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.device = args, torch.device("cpu")
        self.detector = load_detector(args.detector, self.device, batch_size=args.inception_batch)
        self.ref = load_reference(args.ref, self.detector, cache_dir=args.out_dir)
        self.rows_file = Path(args.out_dir) / "rows.jsonl"
        self.rows = {}
        if self.rows_file.exists():
            for line in self.rows_file.read_text().splitlines():
                row = json.loads(line)
                self.rows[row["key"]] = row

    def point(self, name: str, model: SamplingModel, cfg: SamplerConfig) -> dict:
        key = f"{name}|{cfg.sampler}|{cfg.steps}|{cfg.grid}|{cfg.w:g}"
        if key in self.rows:
            return self.rows[key]
        n = self.args.n
        seeds, labels = list(range(n)), labels_for_seeds(list(range(n)), model.num_classes, "balanced")
        acc = FeatureAccumulator()
        sample_s = 0.0
        for i in range(0, n, self.args.batch):
            ts = time.perf_counter()
            images = sample_batch(model, seeds[i:i + self.args.batch], labels[i:i + self.args.batch], cfg, self.device)
            sample_s += time.perf_counter() - ts
            acc.add_images(self.detector, images)
        fid = compute_metrics(acc.finalize(self.detector.sha256), self.ref, ["fid"])["fid"]
        row = {"key": key, "model": name, "sampler": cfg.sampler, "steps": cfg.steps, "grid": cfg.grid, "w": cfg.w,
               "n": n, "nfe": nfe(cfg, 1, model.diffusion_cfg, model.w_input), "fid": fid,
               "sample_s": round(sample_s, 2)}
        self.rows[key] = row
        with self.rows_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name:18s} {cfg.sampler:12s} T={cfg.steps:<4d} w={cfg.w:<4g} NFE={row['nfe']:<4d} FID={fid:.2f} "
              f"({sample_s:.0f} s)", flush=True)
        return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the teacher's run folder or EMA file")
    p.add_argument("--ref", required=True, help="reference images or statistics (cfgdiff score's --ref)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--ws", default="0,1,2,4")
    p.add_argument("--steps", type=int, default=2, help="the last student's T")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--kimg", type=float, default=20.0, help="per stage and per round")
    p.add_argument("--ancestral-ws", default="0,1,2,4",
                   help="the w of the teacher's ancestral T = 256 rows ('' for none: 5-11 min a row on 2 CPU cores)")
    p.add_argument("--teacher-samplers", default="dpmpp-2m-sde:16",
                   help="the teacher's other rows, SAMPLER:T comma list (e.g. ddim:5,ddim:9: the students' sampler "
                        "and NFE without distillation)")
    p.add_argument("--students", default="", help="only these students' T, a comma list (default: every stage)")
    p.add_argument("--sde", action="store_true", help="also the students with distill-sde")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--inception-batch", type=int, default=250)
    p.add_argument("--detector", default=None)
    p.add_argument("--out-dir", default="bench-out/distill")
    args = p.parse_args()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(torch.get_num_threads())
    stages = distil(args)
    scorer = Scorer(args)
    teacher = load_for_sampling(args.run)
    rows = []
    for w in floats(args.ws):
        if w in floats(args.ancestral_ws):  # 256 or 512 evaluations a sample: the costly rows
            rows.append(scorer.point("teacher", teacher, SamplerConfig(sampler="ancestral", steps=256, w=w)))
        for spec in args.teacher_samplers.split(","):  # e.g. dpmpp-2m-sde:16 (32 evaluations when guided)
            name, steps = spec.split(":")
            rows.append(scorer.point("teacher", teacher, SamplerConfig(sampler=name, steps=int(steps), w=w)))
        for stage in stages:
            if args.students and Path(stage["run_dir"]).name.split("-")[-1] not in args.students.split(","):
                continue
            student = load_for_sampling(stage["run_dir"])
            sampler, steps, grid = sampling_defaults(student.config)
            name = Path(stage["run_dir"]).name
            rows.append(scorer.point(name, student, SamplerConfig(sampler=sampler, steps=steps, grid=grid, w=w)))
            if args.sde and steps > 2:
                rows.append(scorer.point(name, student, SamplerConfig(sampler="distill-sde", steps=steps, grid=grid,
                                                                      w=w)))
    write_table(rows, stages, Path(args.out_dir) / "table.md", floats(args.ws))


def write_table(rows: list[dict], stages: list[dict], path: Path, ws: list[float]) -> None:
    lines = ["| model | sampler | T | NFE at w > 0 | " + " | ".join(f"FID w={w:g}" for w in ws) + " |",
             "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in ws) + " |"]
    seen = []
    for r in rows:
        k = (r["model"], r["sampler"], r["steps"])
        if k not in seen:
            seen.append(k)
    for model, sampler, steps in seen:
        line = {r["w"]: r for r in rows if (r["model"], r["sampler"], r["steps"]) == (model, sampler, steps)}
        nfe_w = max(r["nfe"] for r in line.values())
        lines.append(f"| {model} | {sampler} | {steps} | {nfe_w} | "
                     + " | ".join(f"{line[w]['fid']:.2f}" if w in line else "" for w in ws) + " |")
    lines += ["", "| stage | kimg | wall s | loss |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {s['stage']} | {s['kimg']:g} | {s['wall_s'] or 0:.0f} | {s['loss'] or float('nan'):.4g} |"
              for s in stages]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
