"""FID against network evaluations for every sampler, steps and w, on one trained model (issue 12 item 6).

Every row samples the same N class-balanced seeds (seed i gets class i mod K), scores them with
cfgdiff's own metrics API (Inception pool_3 statistics, `compute_metrics`) against a held-out
reference, and records the exact NFE per sample (`nfe_per_sample`). Then, for each
(sampler, steps) the interval variant runs at that line's best w > 0, and one point is sampled again
from a disjoint seed set (seeds N..2N−1) to measure the FID noise between seed sets. With
--rescale-at, chosen points are also sampled with CFG-rescale φ (Lin et al. 2024).

With --guidances (issue 24), a guidance-method axis instead: every method named, at --guidance-ws
(cfgpp at its own λ ∈ [0, 1], --cfgpp-ws), on --guidance-sampler at --guidance-steps, the same seeds,
scored by FID, precision and recall, plus two saturation figures of the samples themselves (APG's
claim: less oversaturation at high w): the mean HSV saturation and the share of channel values at
0 or 255. Writes guidance.md and guidance_vs_w.png:

    python bench/solvers.py RUN --ref REF.h5 --n 500 --guidances cfg,apg,cfgpp,interval \
        --guidance-sampler ddim --guidance-steps 16 --guidance-ws 0,1,2,4 --cfgpp-ws 0.25,0.5,1

Writes into --out-dir: rows.jsonl (one JSON row per finished point, so a rerun only computes the
missing ones), table.md, fid_vs_nfe.png. The full run of the issue (hours on 2 CPU cores):

    python bench/solvers.py RUN --ref REF.h5 --n 2000 --steps 8,16,32,64,256 \\
        --samplers ancestral,ddim,dpmpp-2m,heun,dpmpp-2m-sde --ws 0,1,2 --out-dir bench-out/solvers

The reduced run recorded in docs/benchmarks.md uses smaller --n, --steps, --samplers and --ws.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from cfgdiff.config import SamplerConfig
from cfgdiff.diffusion.methods import MethodChoice
from cfgdiff.metrics.detector import load_detector
from cfgdiff.metrics.evaluate import compute_metrics
from cfgdiff.metrics.reference import load_reference
from cfgdiff.metrics.stats import FeatureAccumulator
from cfgdiff.runs import load_for_sampling
from cfgdiff.sampling.generate import nfe, sample_batch
from cfgdiff.sampling.labels import labels_for_seeds

# Kynkäänniemi et al. 2024 guide for EDM σ ∈ (0.28, 5.42]; λ = −2 ln σ
DEFAULT_INTERVAL = (-3.4, 2.6)


def floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def row_key(sampler: str, steps: int, w: float, interval: tuple[float, float] | None, seed0: int,
            rescale: float = 0.0, grid: str = "paper", v: float = 0.3, guidance: str = "cfg", pr: bool = False) -> str:
    iv = f"{interval[0]}:{interval[1]}" if interval else "-"
    return (f"{sampler}|{steps}|{w:g}|{iv}|{seed0}" + (f"|phi={rescale:g}" if rescale else "")
            + (f"|grid={grid}" if grid != "paper" else "") + (f"|v={v:g}" if v != 0.3 else "")
            + (f"|guidance={guidance}" if guidance != "cfg" else "") + ("|pr" if pr else ""))


def saturation(images) -> tuple[float, float]:
    """(mean HSV saturation, share of channel values at 0 or 255) of uint8 (B, H, W, 3) images."""
    x = images.astype("float64")
    hi, lo = x.max(-1), x.min(-1)
    sat = (hi - lo) / (hi + (hi == 0))
    return float(sat.mean()), float(((images == 0) | (images == 255)).mean())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device("cpu")
        self.model = load_for_sampling(args.run, self.device)
        self.detector = load_detector(args.detector, self.device, batch_size=args.inception_batch)
        self.ref = load_reference(args.ref, self.detector, cache_dir=args.out_dir)
        self.out = Path(args.out_dir)
        self.rows_file = self.out / "rows.jsonl"
        self.rows: dict[str, dict] = {}
        if self.rows_file.exists():
            for line in self.rows_file.read_text().splitlines():
                row = json.loads(line)
                self.rows[row["key"]] = row

    def point(self, sampler: str, steps: int, w: float, interval: tuple[float, float] | None = None,
              seed0: int = 0, rescale: float = 0.0, guidance: str = "cfg", pr: bool = False,
              settings: tuple[tuple[str, float], ...] = ()) -> dict:
        cfg = SamplerConfig(sampler=sampler, grid=self.args.grid, steps=steps, w=w, guidance_interval=interval,
                            sampler_settings={"v": self.args.v} if sampler == "ancestral" else {}, rescale=rescale, guidance=guidance, guidance_settings=settings)
        label = guidance if not settings else MethodChoice(guidance, cfg.guidance_settings).label()
        key = row_key(sampler, steps, w, interval, seed0, rescale, self.args.grid, self.args.v, label, pr)
        if key in self.rows:
            return self.rows[key]
        n, k = self.args.n, self.model.num_classes
        seeds = list(range(seed0, seed0 + n))
        labels = labels_for_seeds(list(range(n)), k, "balanced")  # the same labels for every seed set
        acc = FeatureAccumulator(keep_pool=pr)
        t0 = time.perf_counter()
        sample_s, sats = 0.0, []
        for i in range(0, n, self.args.batch):
            ts = time.perf_counter()
            images = sample_batch(self.model, seeds[i : i + self.args.batch], labels[i : i + self.args.batch],
                                  cfg, self.device)
            sample_s += time.perf_counter() - ts
            sats.append((len(images), *saturation(images)))
            acc.add_images(self.detector, images)
        gen = acc.finalize(self.detector.sha256)
        metrics = compute_metrics(gen, self.ref, ["fid", "pr"] if pr else ["fid"])
        fid = metrics["fid"]
        row = {"key": key, "sampler": sampler, "steps": steps, "w": w,
               "interval": list(interval) if interval else None, "rescale": rescale, "grid": self.args.grid, "v": self.args.v,
               "guidance": guidance, "guidance_settings": dict(cfg.guidance_settings),
               "seed0": seed0, "n": n,
               "nfe": nfe(cfg, 1, self.model.diffusion_cfg), "fid": fid,
               "precision": metrics.get("precision"), "recall": metrics.get("recall"),
               "saturation": sum(m * a for m, a, _ in sats) / n, "clipped": sum(m * c for m, _, c in sats) / n,
               "sample_s": round(sample_s, 2), "total_s": round(time.perf_counter() - t0, 2)}
        self.rows[key] = row
        with self.rows_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{sampler:10s} T={steps:<4d} w={w:<4g} interval={row['interval']} φ={rescale:g} seeds {seed0}.. "
              f"NFE={row['nfe']:<4d} FID={fid:.3f} ({row['total_s']:.0f} s)", flush=True)
        return row


def run(args: argparse.Namespace) -> list[dict]:
    b = Bench(args)
    interval = tuple(floats(args.interval)) if args.interval else None
    rows = []
    for sampler in args.samplers.split(","):
        for steps in ints(args.steps):
            line = [b.point(sampler, steps, w) for w in floats(args.ws)]
            rows += line
            guided = [r for r in line if r["w"] > 0]
            if interval and guided:
                best = min(guided, key=lambda r: r["fid"])
                rows.append(b.point(sampler, steps, best["w"], interval))
    for spec in filter(None, args.rescale_at.split(",")):  # CFG-rescale (Lin et al. 2024) beside plain guidance
        sampler, steps, w, phi = spec.split(":")
        rows += [b.point(sampler, int(steps), float(w)), b.point(sampler, int(steps), float(w), rescale=float(phi))]
    if args.noise_at:
        sampler, steps, w = args.noise_at.split(":")
        a = b.point(sampler, int(steps), float(w))
        c = b.point(sampler, int(steps), float(w), seed0=args.n)
        rows += [a, c] if a not in rows else [c]
    return rows


def guidance_axis(args: argparse.Namespace) -> list[dict]:
    """Every method of --guidances at its ws, on one sampler and T, with precision/recall and saturation."""
    b = Bench(args)
    interval = tuple(floats(args.interval)) if args.interval else None
    rows = []
    for spec in args.guidances.split(","):  # NAME or NAME:setting=value;setting=value
        name, _, given = spec.partition(":")
        settings = tuple((k, float(v)) for k, v in (kv.split("=") for kv in given.split(";") if kv))
        ws = floats(args.cfgpp_ws) if name == "cfgpp" else floats(args.guidance_ws)
        for w in ws:
            if name == "interval":
                row = b.point(args.guidance_sampler, args.guidance_steps, w, interval, pr=True)
            else:
                row = b.point(args.guidance_sampler, args.guidance_steps, w, guidance=name, pr=True, settings=settings)
            rows.append({**row, "method": "interval" if name == "interval" else
                         (name if not settings else f"{name} " + ", ".join(f"{k}={v:g}" for k, v in settings))})
    out = Path(args.out_dir)
    lines = [f"{args.guidance_sampler}, T = {args.guidance_steps}, N = {args.n} (seeds 0..{args.n - 1}, class-balanced); "
             "cfgpp's w is its λ.\n", "| method | w | NFE | FID | precision | recall | saturation | at 0/255 | sampling s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['w']:g} | {r['nfe']} | {r['fid']:.2f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['saturation']:.3f} | {100 * r['clipped']:.2f}% | {r['sample_s']:.0f} |")
    (out / "guidance.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        for ax, key in zip(axes, ("fid", "precision", "recall", "saturation")):
            ax.plot([r["w"] for r in mine], [r[key] for r in mine], "o-", ms=4, label=method)
            ax.set_xlabel("w (cfgpp: its λ)")
            ax.set_ylabel(key if key != "fid" else f"FID (N = {args.n})")
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "guidance_vs_w.png", dpi=100)
    print("\n".join(lines))
    return rows


def noise_line(rows: list[dict]) -> str:
    other = [r for r in rows if r["seed0"] != 0]
    if not other:
        return ""
    c = other[0]
    a = next(r for r in rows if r["seed0"] == 0 and r["key"].split("|")[:4] == c["key"].split("|")[:4]
             and not r.get("rescale") and r.get("grid", "paper") == c.get("grid", "paper"))
    rel = abs(a["fid"] - c["fid"]) / min(a["fid"], c["fid"])
    return (f"FID noise between two disjoint seed sets ({c['sampler']}, T = {c['steps']}, w = {c['w']:g}): "
            f"{a['fid']:.3f} vs {c['fid']:.3f}, {100 * rel:.1f}%.")


def line_name(row: dict) -> str:
    """The sampler, with its λ grid where that is not the paper's."""
    grid, v = row.get("grid", "paper"), row.get("v", 0.3)
    name = row["sampler"] if grid == "paper" else f"{row['sampler']} ({grid} grid)"
    return name if v == 0.3 or row["sampler"] != "ancestral" else f"{name} v={v:g}"


def table(rows: list[dict], n: int) -> str:
    head = (f"| sampler | steps | w | interval (λ) | φ | NFE | FID (N = {n}) | sampling s |\n"
            "|---|---:|---:|---|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {line_name(r)} | {r['steps']} | {r['w']:g} | {'%g:%g' % tuple(r['interval']) if r['interval'] else '–'} "
        f"| {r.get('rescale') or '–'} | {r['nfe']} | {r['fid']:.3f} | {r['sample_s']:.0f} |\n"
        for r in sorted(dict((r["key"], r) for r in rows if r["seed0"] == 0).values(),
                        key=lambda r: (line_name(r), r["steps"], bool(r["interval"]), r.get("rescale") or 0, r["w"])))
    return head + body + "\n" + noise_line(rows) + "\n"


def pivot(rows: list[dict]) -> str:
    """One line per (sampler, grid, steps): FID (NFE) at each w, then the interval and rescale rows."""
    first = [r for r in rows if r["seed0"] == 0]
    ws = sorted({r["w"] for r in first if not r["interval"] and not r.get("rescale")})
    lines = sorted({(line_name(r), r["steps"]) for r in first}, key=lambda k: (k[0], k[1]))
    head = ("| sampler | T | " + " | ".join(f"w = {w:g}" for w in ws) + " | variants at that line's w |\n"
            "|---|---:|" + "---:|" * len(ws) + "---|\n")
    body = ""
    for name, steps in lines:
        mine = [r for r in first if line_name(r) == name and r["steps"] == steps]
        plain = {r["w"]: r for r in mine if not r["interval"] and not r.get("rescale")}
        cells = [f"{plain[w]['fid']:.1f} ({plain[w]['nfe']})" if w in plain else "" for w in ws]
        extra = [f"interval {'%g:%g' % tuple(r['interval'])} at w = {r['w']:g}: {r['fid']:.1f} ({r['nfe']})"
                 for r in mine if r["interval"]]
        extra += [f"φ = {r['rescale']:g} at w = {r['w']:g}: {r['fid']:.1f} ({r['nfe']})" for r in mine if r.get("rescale")]
        body += f"| {name} | {steps} | " + " | ".join(cells) + " | " + "; ".join(extra) + " |\n"
    return head + body


def interval_at_equal_nfe(rows: list[dict]) -> str:
    """Each interval row against plain guidance at the same NFE: the lower envelope of the same
    line's guided rows (w > 0, any T) interpolated in log NFE; rows below the envelope's first NFE
    are compared with plain guidance at their own T."""
    first = [r for r in rows if r["seed0"] == 0 and not r.get("rescale")]
    out = []
    for r in sorted((r for r in first if r["interval"]), key=lambda r: (line_name(r), r["steps"])):
        plain = [p for p in first if line_name(p) == line_name(r) and not p["interval"] and p["w"] > 0]
        env: dict[int, float] = {}
        for p in plain:
            env[p["nfe"]] = min(env.get(p["nfe"], math.inf), p["fid"])
        lo = max((x for x in env if x <= r["nfe"]), default=None)
        hi = min((x for x in env if x >= r["nfe"]), default=None)
        if lo is None or hi is None:
            same = min(p["fid"] for p in plain if p["steps"] == r["steps"])
            out.append(f"- {line_name(r)} T = {r['steps']}: interval {r['fid']:.1f} (NFE {r['nfe']}) against "
                       f"plain {same:.1f} at the same T ({100 * (r['fid'] / same - 1):+.1f}%)")
            continue
        f = 0.0 if lo == hi else math.log(r["nfe"] / lo) / math.log(hi / lo)
        at = env[lo] + f * (env[hi] - env[lo])
        out.append(f"- {line_name(r)} T = {r['steps']}: interval {r['fid']:.1f} against plain {at:.1f} at "
                   f"NFE {r['nfe']} ({'no worse' if r['fid'] <= at else 'worse'})")
    return "Interval guidance at equal NFE:\n\n" + "\n".join(out) + "\n" if out else ""


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    plain = [r for r in rows if r["seed0"] == 0 and not r["interval"] and not r.get("rescale")]
    for name in dict.fromkeys(line_name(r) for r in plain):
        for w in sorted({r["w"] for r in plain}):
            line = sorted((r for r in plain if line_name(r) == name and r["w"] == w), key=lambda r: r["nfe"])
            if line:
                ax.plot([r["nfe"] for r in line], [r["fid"] for r in line], "o-", label=f"{name}, w={w:g}")
    iv = [r for r in rows if r["interval"] and r["seed0"] == 0]
    if iv:
        ax.plot([r["nfe"] for r in iv], [r["fid"] for r in iv], "k*", ms=10, label="interval, best w")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel(f"FID (N = {rows[0]['n']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory or checkpoint (cfgdiff.runs.load_for_sampling)")
    p.add_argument("--ref", required=True, help="held-out reference (dataset .h5, image folder or stats .npz)")
    p.add_argument("--n", type=int, default=2000, help="samples a point (a multiple of the class count)")
    p.add_argument("--steps", default="8,16,32,64,256")
    p.add_argument("--samplers", default="ancestral,ddim,dpmpp-2m,heun,dpmpp-2m-sde")
    p.add_argument("--ws", default="0,1,2")
    p.add_argument("--grid", default="paper", help="λ grid: paper|linear|edm")
    p.add_argument("--v", type=float, default=0.3, help="Eq. 4's v for ancestral (the paper's 0.3)")
    p.add_argument("--interval", default="%g,%g" % DEFAULT_INTERVAL,
                   help="guidance interval LO,HI in λ for the interval rows at each line's best w ('' for none)")
    p.add_argument("--rescale-at", default="",
                   help="SAMPLER:STEPS:W:PHI[,...]: that point with CFG-rescale φ beside the same point without")
    p.add_argument("--noise-at", default="dpmpp-2m:16:1", help="SAMPLER:STEPS:W sampled again from seeds N..2N-1")
    p.add_argument("--batch", type=int, default=500, help="sampling batch")
    p.add_argument("--inception-batch", type=int, default=100)
    p.add_argument("--detector", default=None, help="Inception weights (default: cfgdiff's resolution order)")
    p.add_argument("--out-dir", default="bench-out/solvers")
    p.add_argument("--guidances", default="", help="a guidance-method axis instead: cfg,apg,cfgpp,interval")
    p.add_argument("--guidance-sampler", default="ddim")
    p.add_argument("--guidance-steps", type=int, default=16)
    p.add_argument("--guidance-ws", default="0,1,2,4")
    p.add_argument("--cfgpp-ws", default="0.25,0.5,1", help="cfgpp's λ values (its w)")
    p.add_argument("--report-only", action="store_true", help="table and plot of the rows finished so far")
    args = p.parse_args()
    torch.manual_seed(0)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    if args.guidances:
        guidance_axis(args)
        return
    if args.report_only:
        rows_file = Path(args.out_dir) / "rows.jsonl"
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
        if not rows:
            raise SystemExit(f"solvers: no finished rows in {rows_file}")
    else:
        rows = run(args)
    md = "FID (NFE per sample)\n\n" + pivot(rows) + "\n" + interval_at_equal_nfe(rows) + "\n" + table(rows, args.n)
    (Path(args.out_dir) / "table.md").write_text(md)
    plot(rows, Path(args.out_dir) / "fid_vs_nfe.png")
    print(md)
    print(f"wrote {args.out_dir}/table.md, {args.out_dir}/fid_vs_nfe.png; "
          f"{sum(r['nfe'] * r['n'] for r in rows)} network evaluations in all")


if __name__ == "__main__":
    main()
