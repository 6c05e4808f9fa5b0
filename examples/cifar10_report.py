"""docs/results.md's tables and figures from the files examples/cifar10.sh writes, and nothing else.

    python examples/cifar10_report.py WORK RUN [--out WORK/report]

Reads, under WORK: every sweep folder `<name>/sweep.jsonl` with its disjoint-seed twin
`<name>-seeds2/sweep.jsonl`, the autoguidance score files `autoguidance/w<w>-seeds<range>.json`, the
width check `width/*/sweep.jsonl`; and RUN/stats.jsonl (the training run's ticks). Writes into --out:

- tables.md: per sweep folder, one line of the table per (line, w): NFE, FID and KID ×10³ on each
  seed set, precision, recall, seconds; then the summary: each line at its best w (lowest mean FID).
- fid_vs_w.png: FID against w, one curve per line, the mean of the two seed sets, each point's bar
  spanning the two values (two sets give a range, not a standard deviation).
- fid_vs_nfe.png: each line at its best w against its NFE per sample, bars as above; a legend, no
  labels printed over the points.
- loss.png and training.md: the loss (Eq. 5, tick means) against kimg; kimg, wall time, final loss.
- width.md: the width check's rows.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cfgdiff.files import atomic_write, write_text
from cfgdiff.sampling.sweep_files import line_label, line_of, read_rows

Pair = tuple[dict[str, Any], dict[str, Any] | None]  # a row on seeds 0..N-1, and on N..2N-1 (or None)


def paired_rows(folder: Path) -> dict[Any, Pair]:
    """Rows of `folder` by key, each with the same key's row of `folder`-seeds2 (None where missing)."""
    first = read_rows(folder / "sweep.jsonl")
    twin = folder.with_name(folder.name + "-seeds2") / "sweep.jsonl"
    second = read_rows(twin) if twin.exists() else {}
    return {key: (row, second.get(key)) for key, row in sorted(first.items())}


def values(pair: Pair, name: str, scale: float = 1.0) -> list[float]:
    """The metric on each seed set where it exists and is finite."""
    out = []
    for row in pair:
        v = None if row is None else row.get(name)
        if v is not None and math.isfinite(v):
            out.append(v * scale)
    return out


def _cell(vs: list[float], digits: int = 2) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in vs) if vs else "n/a"


def _mean(vs: list[float]) -> float | None:
    return statistics.fmean(vs) if vs else None


def sweep_table(name: str, pairs: dict[Any, Pair]) -> str:
    """One markdown table of a sweep folder: a line per (line, w), both seed sets side by side."""
    out = [f"### {name}\n", "| line | w | NFE | FID (seeds 1 / 2) | KID ×10³ (1 / 2) | precision | recall | s |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, pair in pairs.items():
        row = pair[0]
        prec, rec = _mean(values(pair, "precision")), _mean(values(pair, "recall"))
        out.append(f"| {line_label(line_of(key))} | {key.w:g} | {row.get('nfe', 'n/a')} | {_cell(values(pair, 'fid'))} | "
                   f"{_cell(values(pair, 'kid', 1e3))} | {_cell([prec] if prec is not None else [], 3)} | "
                   f"{_cell([rec] if rec is not None else [], 3)} | {row.get('seconds', 'n/a')} |")
    return "\n".join(out) + "\n"


def best_per_line(pairs: dict[Any, Pair]) -> dict[Any, tuple[Any, Pair]]:
    """Each line's (key, pair) at the w with the lowest mean FID over the seed sets."""
    best: dict[Any, tuple[float, Any, Pair]] = {}
    for key, pair in pairs.items():
        fid = _mean(values(pair, "fid"))
        line = line_of(key)
        if fid is not None and (line not in best or fid < best[line][0]):
            best[line] = (fid, key, pair)
    return {line: (key, pair) for line, (_, key, pair) in best.items()}


def summary_table(folders: dict[str, dict[Any, Pair]]) -> str:
    out = ["### Each line at its best w (lowest mean FID of the two seed sets)\n",
           "| sweep | line | best w | NFE | FID mean (range) | KID ×10³ mean (range) | precision | recall |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, pairs in folders.items():
        for line, (key, pair) in best_per_line(pairs).items():
            fid, kid = values(pair, "fid"), values(pair, "kid", 1e3)
            out.append(f"| {name} | {line_label(line)} | {key.w:g} | {pair[0].get('nfe', 'n/a')} | "
                       f"{_mean(fid):.2f} ({_cell(fid)}) | "
                       + (f"{_mean(kid):.2f} ({_cell(kid)})" if kid else "n/a")
                       + f" | {_cell([p] if (p := _mean(values(pair, 'precision'))) is not None else [], 3)} | "
                       f"{_cell([r] if (r := _mean(values(pair, 'recall'))) is not None else [], 3)} |")
    return "\n".join(out) + "\n"


def autoguidance_table(folder: Path) -> str:
    """The autoguidance rows: `cfgdiff score` results of w<w>-seeds<range>.json, the seed sets side by side."""
    by_w: dict[float, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("w*-seeds*.json")):
        if path.name.endswith(".npz.json"):  # the samples' own provenance, beside them
            continue
        w = float(path.name[1:].split("-seeds")[0])
        by_w.setdefault(w, []).append(json.loads(path.read_text())["metrics"])
    out = ["### autoguidance (an early EMA snapshot as the guide)\n",
           "| w | FID (seeds 1 / 2) | KID ×10³ (1 / 2) | precision | recall |", "| ---: | ---: | ---: | ---: | ---: |"]
    for w, ms in sorted(by_w.items()):
        pairs: Pair = (ms[0], ms[1] if len(ms) > 1 else None)
        prec, rec = _mean(values(pairs, "precision")), _mean(values(pairs, "recall"))
        out.append(f"| {w:g} | {_cell(values(pairs, 'fid'))} | {_cell(values(pairs, 'kid', 1e3))} | "
                   f"{_cell([prec] if prec is not None else [], 3)} | {_cell([rec] if rec is not None else [], 3)} |")
    return "\n".join(out) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))


MARKERS = "osD^v<>ph*X"
COLOURS = 10  # matplotlib's default cycle: a (colour, marker) pair per curve stays distinct up to 100


def _legend(ax: Any) -> None:
    """Beside the axes, so that no label covers a point."""
    if ax.get_legend_handles_labels()[0]:  # an empty WORK draws empty axes, without a warning
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def _errorbar(ax: Any, xs: list[float], pairs: list[Pair], label: str, line: bool = True) -> None:
    """Mean FID with a bar from the lower to the higher seed set's value; the i-th curve of the axes
    gets colour i mod 10 and marker i // 10."""
    i = len(ax.containers)
    fids = [values(p, "fid") for p in pairs]
    mean = [_mean(f) for f in fids]
    lo = [m - min(f) for m, f in zip(mean, fids)]
    hi = [max(f) - m for m, f in zip(mean, fids)]
    ax.errorbar(xs, mean, yerr=[lo, hi], fmt=("-" if line else "") + MARKERS[(i // COLOURS) % len(MARKERS)],
                color=f"C{i % COLOURS}", ms=4, capsize=3, label=label)


def plot_fid_vs_w(folders: dict[str, dict[Any, Pair]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for name, pairs in folders.items():
        lines: dict[Any, list[tuple[float, Pair]]] = {}
        for key, pair in pairs.items():
            if values(pair, "fid"):
                lines.setdefault(line_of(key), []).append((key.w, pair))
        for line, points in lines.items():
            scale = " (x: CFG++'s λ, its own scale)" if line.guidance == "cfgpp" else ""
            _errorbar(ax, [w for w, _ in points], [p for _, p in points], f"{name}: {line_label(line)}{scale}")
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel("FID (mean of two seed sets; bar: their range)")
    ax.set_title("FID against w")
    _legend(ax)
    _save(fig, path)
    plt.close(fig)


def plot_fid_vs_nfe(folders: dict[str, dict[Any, Pair]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    nfes: set[int] = set()
    for name, pairs in folders.items():
        for line, (key, pair) in best_per_line(pairs).items():
            _errorbar(ax, [pair[0]["nfe"]], [pair], f"{name}: {line_label(line)}, w={key.w:g}", line=False)
            nfes.add(pair[0]["nfe"])
    ax.set_xscale("log")
    if nfes:  # the NFE values themselves as ticks, in plain numbers
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xticks(sorted(nfes))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel("FID at the line's best w (bar: two seed sets)")
    ax.set_title("FID against NFE")
    _legend(ax)
    _save(fig, path)
    plt.close(fig)


def training(stats: Path, out: Path) -> str:
    """loss.png (tick means against kimg) and a line of facts: kimg, wall time, the last ticks' loss."""
    ticks = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
    kimg, loss = [t["kimg"] for t in ticks], [t["loss"] for t in ticks]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(kimg, loss, lw=0.6, alpha=0.5, label="tick mean")
    k = max(1, len(loss) // 50)
    smooth = [statistics.fmean(loss[i - k : i + 1]) for i in range(k, len(loss))]  # full windows only
    ax.plot(kimg[k:], smooth, lw=1.5, label=f"running mean of {k + 1} ticks")
    ax.set_xlabel("kimg")
    ax.set_ylabel("loss (Eq. 5, ε-MSE)")
    ax.set_yscale("log")
    ax.legend()
    _save(fig, out / "loss.png")
    plt.close(fig)
    last = loss[-10:]
    hours = ticks[-1]["elapsed_s"] / 3600
    return (f"- trained: {kimg[-1]:g} kimg (step {ticks[-1]['step']}), {hours:.2f} h of wall time "
            f"(`elapsed_s` of the last tick: training time over all sessions, the pauses between them not counted), loss {statistics.fmean(last):.4f} "
            f"(mean of the last {len(last)} ticks)\n")


def width_table(folder: Path) -> str:
    out = ["| run | checkpoint | line | w | NFE | FID | KID ×10³ | s |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for sub in sorted(p for p in folder.iterdir() if (p / "sweep.jsonl").exists()):
        meta = json.loads((sub / "sweep.json").read_text())["meta"] if (sub / "sweep.json").exists() else {}
        ckpt = meta.get("checkpoint", {})
        for key, row in sorted(read_rows(sub / "sweep.jsonl").items()):
            kid = row.get("kid")
            out.append(f"| {sub.name} | {Path(ckpt.get('path', '?')).name} ({ckpt.get('kimg', '?')} kimg) | "
                       f"{line_label(line_of(key))} | {key.w:g} | {row.get('nfe')} | {row['fid']:.2f} | "
                       f"{'n/a' if kid is None else f'{1e3 * kid:.2f}'} | {row.get('seconds')} |")
    return "\n".join(out) + "\n"


def sweep_folders(work: Path) -> Iterable[Path]:
    """WORK's sweep folders (not the -seeds2 twins, which pair with them), by name."""
    for p in sorted(work.iterdir()):
        if (p / "sweep.jsonl").exists() and not p.name.endswith("-seeds2"):
            yield p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="examples/cifar10.sh's WORK folder")
    ap.add_argument("run", type=Path, help="the training run folder (its stats.jsonl)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: WORK/report)")
    args = ap.parse_args(argv)
    out = args.out or args.work / "report"
    out.mkdir(parents=True, exist_ok=True)
    folders = {p.name: paired_rows(p) for p in sweep_folders(args.work)}
    parts = [sweep_table(name, pairs) for name, pairs in folders.items()]
    if (args.work / "autoguidance").is_dir():
        parts.append(autoguidance_table(args.work / "autoguidance"))
    parts.append(summary_table(folders))
    write_text(out / "tables.md", "\n".join(parts))
    plot_fid_vs_w(folders, out / "fid_vs_w.png")
    plot_fid_vs_nfe(folders, out / "fid_vs_nfe.png")
    if (args.run / "stats.jsonl").exists():
        write_text(out / "training.md", training(args.run / "stats.jsonl", out))
    if (args.work / "width").is_dir():
        write_text(out / "width.md", width_table(args.work / "width"))
    print(f"wrote {out}/: tables.md, fid_vs_w.png, fid_vs_nfe.png, training.md, loss.png, width.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
