"""docs/results.md's tables and figures from the files examples/cifar10.sh writes, and nothing else.

    python examples/cifar10_report.py WORK RUN [--out WORK/report]

Reads, under WORK: every sweep folder `<name>/sweep.jsonl` with its disjoint-seed sets
`<name>-seeds2/sweep.jsonl`, `<name>-seeds3/...` (autoguidance is the sweep folder made with
`--guide-with`), the width check `width/*/sweep.jsonl`; and RUN/stats.jsonl (the training run's ticks).
Writes into --out:

- tables.md: per sweep folder, one line of the table per (line, w): NFE, FID and KID ×10³ on each
  seed set, precision, recall, seconds; the seed spread (the rows on three or more seed sets: FID's
  standard deviation over them); then each line at its best w (lowest mean FID over its seed sets),
  and each folder (method) at its best setting and w; the cost of each sweep (rows, samples, network
  evaluations, wall time) per machine.
- fid_vs_w.png: the samplers' CFG against w, one curve per line: each point the mean over the seed sets all the
  line's points have (the same seeds at every w), its bar from all its own sets: ±1 standard
  deviation where there are three sets or more, the two values' range where two.
- methods_vs_w.png: the guidance methods against w (autoguidance: the folders made with --guide-with;
  APG; a guidance interval) beside CFG on the same sampler, then the same zoomed to CFG's FID range; under
  them CFG++ against its own λ, with CFG's best FID on the same sampler as a level line.
- fid_vs_nfe.png: each sampler's CFG line at its best w against its NFE per sample, bars as above; a
  legend, no labels printed over the points.
- fig3.png: the Fig. 3 grid, the previews `grid/w<w>.png` side by side, each panel headed by its w and
  each column by its class's name (`--grid-classes`, the order `sample --classes` cycles through;
  the names from RUN's weights file).
- loss.png and training.md: the loss (Eq. 5, tick means) against kimg; kimg, wall time, final loss.
- width.md: the width check's rows.

With --page PAGE.md, every table the page marks `<!-- report: FILE#HEADING -->` (FILE in --out, HEADING
a `### ` section of it; no HEADING: the file's first table) is replaced by that table as it is now.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from cfgdiff.files import atomic_write, write_text
from cfgdiff.sampling.sweep_files import line_label, line_of, read_rows

# A key's rows on seed set 1 (seeds 0..N-1), 2 (N..2N-1), ...: None where a set lacks the key.
Pair = tuple[dict[str, Any] | None, ...]
SET_SUFFIX = re.compile(r"-seeds(\d+)$")


def seed_set_folders(folder: Path) -> list[Path]:
    """`folder` and its seed sets `folder`-seeds2, -seeds3, ... that exist, in the order of k."""
    sets = {int(m.group(1)): p for p in folder.parent.glob(folder.name + "-seeds*")
            if (m := SET_SUFFIX.search(p.name)) and p.name == f"{folder.name}-seeds{m.group(1)}"
            and (p / "sweep.jsonl").exists()}
    return [folder, *(sets[k] for k in sorted(sets) if k >= 2)]


def paired_rows(folder: Path) -> dict[Any, Pair]:
    """Rows of `folder` by key, each with the same key's row of every seed set (None where missing)."""
    first, *others = [read_rows(f / "sweep.jsonl") for f in seed_set_folders(folder)]
    return {key: (row, *(o.get(key) for o in others)) for key, row in sorted(first.items())}


def per_set(pair: Pair, name: str, scale: float = 1.0) -> list[float | None]:
    """The metric on each seed set in order, None where the set has no finite value (no row, no key, null,
    NaN); the sets after the last one with a value are left off (most rows have no later sets: only a
    search's pick gets them)."""
    out = [v * scale if (v := None if row is None else row.get(name)) is not None and math.isfinite(v) else None
           for row in pair]
    while out and out[-1] is None:
        out.pop()
    return out


def values(pair: Pair, name: str, scale: float = 1.0) -> list[float]:
    """The metric on the seed sets that have it (`per_set` without the gaps)."""
    return [v for v in per_set(pair, name, scale) if v is not None]


def _cell(vs: list[float | None], digits: int = 2) -> str:
    """Values side by side, a set without one (a failed score) as n/a in its place."""
    return " / ".join("n/a" if v is None else f"{v:.{digits}f}" for v in vs) if vs else "n/a"


def _mean(vs: list[float]) -> float | None:
    return statistics.fmean(vs) if vs else None


def _bar(vs: list[float], y: float) -> tuple[float, float]:
    """The error bar below and above a point drawn at `y`, from its values on every seed set: ±1 sample
    standard deviation from three sets on; from two, their range (a spread of two values is not a
    standard deviation); from one, none."""
    if len(vs) >= 3:
        sd = statistics.stdev(vs)
        return sd, sd
    return y - min(vs), max(vs) - y


def curve(pairs: list[Pair], name: str = "fid") -> list[float]:
    """A line's points: each the mean over the seed sets that every point of the line has, so that all
    points average the same seeds (common random numbers: the differences along the line are the
    effect of w, not of which seeds a point happened to get). Every point has a finite value on some set
    (`folder_lines` keeps only those); where the points share no set (a failed score on set 1 of one, set 1
    only on another), each is the mean of its own."""
    sets = [per_set(p, name) for p in pairs]
    common = [k for k in range(max(map(len, sets))) if all(k < len(vs) and vs[k] is not None for vs in sets)]
    if not common:
        return [statistics.fmean(v for v in vs if v is not None) for vs in sets]
    return [statistics.fmean(vs[k] for k in common) for vs in sets]


def _agg(sets: list[float | None]) -> str:
    """A mean over the seed sets that have a value, from three such sets on with its standard deviation,
    then every set's value in order (`per_set`)."""
    vs = [v for v in sets if v is not None]
    if not vs:
        return "n/a"
    sd = f" ± {statistics.stdev(vs):.2f}" if len(vs) >= 3 else ""
    return f"{statistics.fmean(vs):.2f}{sd} ({_cell(sets)})"


def sweep_table(name: str, pairs: dict[Any, Pair]) -> str:
    """One markdown table of a sweep folder: a line per (line, w), every seed set side by side; under it,
    the hardware set 1's wall times were measured on (rows of cfgdiff before 2026-12-07 did not record it)."""
    out = [f"### {name}\n", "| line | w | NFE | FID (seed sets 1 / 2 / …) | KID ×10³ (1 / 2 / …) | precision | recall "
                             "| s (set 1) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, pair in pairs.items():
        row = pair[0]
        prec, rec = _mean(values(pair, "precision")), _mean(values(pair, "recall"))
        out.append(f"| {line_label(line_of(key))} | {key.w:g} | {row.get('nfe', 'n/a')} | {_cell(per_set(pair, 'fid'))} | "
                   f"{_cell(per_set(pair, 'kid', 1e3))} | {_cell([prec] if prec is not None else [], 3)} | "
                   f"{_cell([rec] if rec is not None else [], 3)} | {row.get('seconds', 'n/a')} |")
    devices = Counter(pair[0].get("device", "not recorded") for pair in pairs.values())
    out.append("\nWall times (s, set 1) measured on: " + "; ".join(f"{d} ({k} row{'s' * (k != 1)})"
                                                               for d, k in sorted(devices.items())) + ".")
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


def _summary_line(name: str, key: Any, pair: Pair) -> str:
    prec, rec = _mean(values(pair, "precision")), _mean(values(pair, "recall"))
    return (f"| {name} | {line_label(line_of(key))} | {key.w:g} | {pair[0].get('nfe', 'n/a')} | "
            f"{len(values(pair, 'fid'))} | {_agg(per_set(pair, 'fid'))} | {_agg(per_set(pair, 'kid', 1e3))} | "
            f"{_cell([prec] if prec is not None else [], 3)} | "
            f"{_cell([rec] if rec is not None else [], 3)} | {pair[0].get('seconds', 'n/a')} |")


SUMMARY_HEAD = ["| sweep | line | best w | NFE | sets | FID mean (± std where ≥ 3 sets; values) | KID ×10³ mean (± std where ≥ 3 sets; values) "
                "| precision | recall | s (set 1) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]


def summary_table(folders: dict[str, dict[Any, Pair]]) -> str:
    out = ["### Each line at its best w (lowest mean FID over its seed sets)\n", *SUMMARY_HEAD]
    for name, pairs in folders.items():
        for key, pair in best_per_line(pairs).values():
            out.append(_summary_line(name, key, pair))
    return "\n".join(out) + "\n"


def cost_table(work: Path, folders: dict[str, dict[Any, Pair]]) -> str:
    """Each sweep's cost from its rows (every seed set): rows, samples, network evaluations, and the
    wall time they recorded (sampling and Inception scoring), per machine."""
    out = ["### Cost: every row of every seed set, from the rows' own wall times\n",
           "| sweep | machine | rows | samples | network evaluations | wall time | s per row |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in folders:
        per: dict[str, list[dict[str, Any]]] = {}
        for folder in seed_set_folders(work / name):
            for row in read_rows(folder / "sweep.jsonl").values():
                per.setdefault(row.get("device", "not recorded"), []).append(row)
        for device, rows in sorted(per.items()):
            seconds = sum(r.get("seconds") or 0.0 for r in rows)
            samples = sum(r.get("n") or 0 for r in rows)
            evals = sum((r.get("n") or 0) * (r.get("nfe") or 0) for r in rows)
            out.append(f"| {name} | {device} | {len(rows)} | {samples:,} | {evals:,} | {seconds / 60:.1f} min | "
                       f"{seconds / len(rows):.0f} |")
    return "\n".join(out) + "\n"


def _set1_fid(pair: Pair) -> float:
    """FID on seed set 1, or infinity where it has none (a failed score never wins a search)."""
    return next(iter(values(pair[:1], "fid")), math.inf)


def best_per_folder(pairs: dict[Any, Pair]) -> tuple[Any, Pair] | None:
    """A folder's best setting, as examples/cifar10.sh's search picks it: the line with the lowest FID on
    seed set 1 at any w (every line has set 1; only the picked line gets the later sets, so a mean would
    compare two sets with one), then that line's (key, pair) at its best w by the mean over its sets."""
    per_line = best_per_line(pairs)
    if not per_line:
        return None
    set1 = {line: min(_set1_fid(pair) for key, pair in pairs.items() if line_of(key) == line) for line in per_line}
    return per_line[min(per_line, key=lambda line: set1[line])]


def methods_table(folders: dict[str, dict[Any, Pair]]) -> str:
    out = ["### Each sweep (sampler or guidance method) at its best setting and w\n", *SUMMARY_HEAD]
    for name, pairs in folders.items():
        if (best := best_per_folder(pairs)) is not None:
            out.append(_summary_line(name, *best))
    return "\n".join(out) + "\n"


def noise_table(folders: dict[str, dict[Any, Pair]]) -> str:
    """The rows on three or more seed sets: FID's mean and sample standard deviation over the sets, the
    seed noise at this N that every other row's difference is read against (and KID's, precision's and
    recall's, for the claims read off those)."""
    out = ["### Seed spread: rows on three or more disjoint seed sets\n",
           "| sweep | line | w | sets | FID mean | FID std | FID range | KID ×10³ mean | KID ×10³ std | precision std "
           "| recall std |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def std(vs: list[float], digits: int) -> str:
        return f"{statistics.stdev(vs):.{digits}f}" if len(vs) >= 3 else "n/a"

    for name, pairs in folders.items():
        for key, pair in pairs.items():
            fid, kid = values(pair, "fid"), values(pair, "kid", 1e3)
            if len(fid) >= 3:
                kid_cells = f"{statistics.fmean(kid):.2f} | {std(kid, 2)}" if len(kid) >= 3 else "n/a | n/a"
                out.append(f"| {name} | {line_label(line_of(key))} | {key.w:g} | {len(fid)} | {statistics.fmean(fid):.2f} | "
                           f"{statistics.stdev(fid):.2f} | {max(fid) - min(fid):.2f} | {kid_cells} | "
                           f"{std(values(pair, 'precision'), 3)} | {std(values(pair, 'recall'), 3)} |")
    return "\n".join(out) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))


MARKERS = "osD^v<>ph*X"
BAR_LABEL = "FID on the line's common seed sets\n(bar: ±1 std of all sets from 3 on; the range of 2)"
COLOURS = 10  # matplotlib's default cycle: a (colour, marker) pair per curve stays distinct up to 100


def _legend(ax: Any) -> None:
    """Beside the axes, so that no label covers a point."""
    if ax.get_legend_handles_labels()[0]:  # an empty WORK draws empty axes, without a warning
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def _errorbar(ax: Any, xs: list[float], pairs: list[Pair], label: str, line: bool = True) -> None:
    """FID along a line (`curve`) with each point's `_bar` from all its seed sets; the i-th curve of the
    axes gets colour i mod 10 and marker i // 10."""
    i = len(ax.containers)
    ys = curve(pairs)
    lo, hi = zip(*(_bar(values(p, "fid"), y) for p, y in zip(pairs, ys))) if pairs else ((), ())
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt=("-" if line else "") + MARKERS[(i // COLOURS) % len(MARKERS)],
                color=f"C{i % COLOURS}", ms=4, capsize=3, label=label)


class Curve(NamedTuple):
    """A plot's line: its legend label, x values, each point's pairs; `cfg` marks plain CFG over the whole
    λ range, the curve the methods are read against (and zoom_window scales by)."""

    label: str
    xs: list[float]
    pairs: list[Pair]
    cfg: bool = False


def method_line(line: Any) -> bool:
    """A line of a guidance method other than plain CFG: another method, or CFG limited to an interval."""
    return line.guidance != "cfg" or bool(line.guidance_interval)


def sampler_of(line: Any) -> tuple[Any, ...]:
    """The sampler part of a line (sampler, its settings, steps, grid): what a method shares with its CFG."""
    return tuple(line[:4])


def folder_lines(pairs: dict[Any, Pair]) -> dict[Any, list[tuple[float, Pair]]]:
    """A folder's rows with an FID on some seed set, by line, in order of w: a row whose scores failed on
    every set is left out of the figures (the tables show it as n/a)."""
    lines: dict[Any, list[tuple[float, Pair]]] = {}
    for key, pair in pairs.items():
        if values(pair, "fid"):
            lines.setdefault(line_of(key), []).append((key.w, pair))
    return lines


def guide_label(guide: dict[str, Any]) -> str:
    kimg = guide.get("kimg")
    return f"autoguidance, guide: the {'?' if kimg is None else f'{kimg:.0f}'}-kimg EMA"


def plot_groups(folders: dict[str, dict[Any, Pair]], guides: dict[str, dict[str, Any]]) -> dict[str, list[Curve]]:
    """The curves of the three FID-against-w panels:
    - "samplers": CFG (over the whole λ range, no guide) of every folder, one curve per sampler line;
    - "methods": each guidance method's lines plotted against w (autoguidance: every line of a folder made
      with --guide-with, `guides`; APG, a guidance interval), with CFG on the same sampler line beside them;
    - "cfgpp": CFG++'s lines, whose x is its own λ (not comparable with w; CFG on the same sampler is a
      level line on that panel, at its best w)."""
    groups: dict[str, list[Curve]] = {"samplers": [], "methods": [], "cfgpp": []}
    cfg: list[tuple[Any, Curve]] = []  # the samplers' CFG curves with their lines
    method_samplers: set[tuple[Any, ...]] = set()  # the (sampler, its settings, steps, grid) methods ran on
    for name, pairs in folders.items():
        for line, points in folder_lines(pairs).items():
            label, xs, ps = f"{name}: {line_label(line)}", [w for w, _ in points], [p for _, p in points]
            if name in guides:
                groups["methods"].append(Curve(f"{label}, {guide_label(guides[name])}", xs, ps))
            elif line.guidance == "cfgpp":
                groups["cfgpp"].append(Curve(label, xs, ps))
                continue
            elif method_line(line):
                groups["methods"].append(Curve(label, xs, ps))
            else:
                groups["samplers"].append(Curve(label, xs, ps, cfg=True))
                cfg.append((line, Curve(f"{label} (CFG)", xs, ps, cfg=True)))
                continue
            method_samplers.add(sampler_of(line))
    groups["methods"][:0] = [c for line, c in cfg if sampler_of(line) in method_samplers]
    return groups


def _draw(ax: Any, curves: list[Curve], xlabel: str, title: str) -> None:
    for c in curves:
        _errorbar(ax, c.xs, c.pairs, c.label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(BAR_LABEL)
    ax.set_title(title)
    _legend(ax)


def plot_fid_vs_w(groups: dict[str, list[Curve]], path: Path) -> None:
    """fid_vs_w.png: the samplers' CFG curves."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    _draw(ax, groups["samplers"], "guidance weight w", "FID against w: the samplers, CFG")
    _save(fig, path)
    plt.close(fig)


def zoom_window(curves: list[Curve]) -> tuple[float, float] | None:
    """The FID range of the CFG curves (`Curve.cfg`) among `curves`, widened to every curve's lowest
    point, with a margin: the methods that compete with CFG, at a scale where their differences show."""
    cfg = [y for c in curves if c.cfg for y in curve(c.pairs)]
    every = [y for c in curves for y in curve(c.pairs)]
    if not cfg:
        return None
    lo, hi = min(every), max(cfg)
    margin = 0.05 * (hi - lo) + 1.0
    return lo - margin, hi + margin


def plot_methods_vs_w(groups: dict[str, list[Curve]], cfg_levels: list[tuple[str, float]], path: Path) -> None:
    """methods_vs_w.png: the guidance methods against w beside CFG on their sampler (top; below it the same
    zoomed to CFG's range), and CFG++ against its λ with CFG's best on the same sampler as a level line
    (bottom)."""
    plt = _pyplot()
    fig, (top, zoom, bottom) = plt.subplots(3, 1, figsize=(7, 13.5))
    fig.subplots_adjust(hspace=0.35)
    _draw(top, groups["methods"], "guidance weight w", "FID against w: the guidance methods")
    if (window := zoom_window(groups["methods"])) is not None:
        _draw(zoom, groups["methods"], "guidance weight w",
              f"zoomed to CFG's range (lines above FID {window[1]:.0f} leave it)")
        zoom.set_ylim(*window)
    else:
        zoom.set_visible(False)
    for i, (label, fid) in enumerate(cfg_levels):
        bottom.axhline(fid, color=f"C{(i + len(groups['cfgpp'])) % COLOURS}", ls="--", lw=1, label=label)
    _draw(bottom, groups["cfgpp"], "CFG++'s λ (its own scale, not w)", "FID against λ: CFG++")
    _save(fig, path)
    plt.close(fig)


def cfgpp_levels(folders: dict[str, dict[Any, Pair]]) -> list[tuple[str, float]]:
    """CFG's best mean FID on each sampler line that CFG++ is run on: the level CFG++ is read against."""
    samplers = {sampler_of(line_of(k)) for pairs in folders.values() for k in pairs if k.guidance == "cfgpp"}
    out = []
    for name, pairs in folders.items():
        for line, (key, pair) in best_per_line(pairs).items():
            if not method_line(line) and sampler_of(line) in samplers and (fid := _mean(values(pair, "fid"))) is not None:
                out.append((f"{name}: {line_label(line)}, CFG at its best w = {key.w:g}", fid))
    return out


def plot_fid_vs_nfe(folders: dict[str, dict[Any, Pair]], guides: dict[str, dict[str, Any]], path: Path) -> None:
    """fid_vs_nfe.png: each sampler's CFG line at its best w against its NFE (the methods are compared at
    equal NFE in methods_vs_w.png)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    nfes: set[int] = set()
    for name, pairs in folders.items():
        if name in guides:
            continue
        for line, (key, pair) in best_per_line(pairs).items():
            if method_line(line):
                continue
            _errorbar(ax, [pair[0]["nfe"]], [pair], f"{name}: {line_label(line)}, w={key.w:g}", line=False)
            nfes.add(pair[0]["nfe"])
    ax.set_xscale("log")
    if nfes:  # the NFE values themselves as ticks, in plain numbers
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xticks(sorted(nfes))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel("FID at the line's best w\n" + BAR_LABEL)
    ax.set_title("FID against NFE: the samplers at their best w (CFG)")
    _legend(ax)
    _save(fig, path)
    plt.close(fig)


def class_names(run: Path) -> list[str]:
    """The class names RUN's newest weights file records (its dataset's), index by index."""
    from cfgdiff.runs import read_checkpoint, resolve_weights_file

    return [str(c) for c in read_checkpoint(resolve_weights_file(run))["dataset_info"]["class_names"]]


def fig3(grid: Path, classes: list[int], names: list[str], path: Path) -> list[float]:
    """The previews grid/w<w>.png (n seeds tiled in len(classes) columns: sample i has class
    classes[i mod len]) in order of w, one panel each, headed by w, each column by its class name."""
    from PIL import Image

    panels = sorted((float(p.stem[1:]), p) for p in grid.glob("w*.png"))
    if not panels:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.8), squeeze=False)
    for ax, (w, png) in zip(axes[0], panels):
        with Image.open(png) as im:
            ax.imshow(im.convert("RGB"), interpolation="nearest")
            width = im.size[0]
        ax.set_title(f"w = {w:g}", fontsize=9)
        ax.set_xticks([(j + 0.5) * width / len(classes) for j in range(len(classes))])
        ax.set_xticklabels([names[c] if c < len(names) else str(c) for c in classes], fontsize=6, rotation=45)
        ax.set_yticks([])
    _save(fig, path)
    plt.close(fig)
    return [w for w, _ in panels]


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


def folder_guide(folder: Path) -> dict[str, Any] | None:
    """The guide network a sweep folder's rows were drawn with (`sweep --guide-with`: autoguidance), or None."""
    doc = folder / "sweep.json"
    return json.loads(doc.read_text()).get("meta", {}).get("guide") if doc.exists() else None


def sweep_folders(work: Path) -> Iterable[Path]:
    """WORK's sweep folders (not their seed sets NAME-seeds<k>, read with them), by name."""
    names = {p.name for p in work.iterdir()}
    for p in sorted(work.iterdir()):
        m = SET_SUFFIX.search(p.name)
        if (p / "sweep.jsonl").exists() and not (m and p.name[: m.start()] in names):
            yield p


MARK = re.compile(r"^<!-- report: ([^\s#]+)(?:#(.+?))? -->$")


def report_section(text: str, heading: str | None) -> list[str]:
    """The table lines of a report file: under `### heading` (its first table), or the file's first table."""
    lines = text.splitlines()
    start = 0
    if heading is not None:
        try:
            start = lines.index(f"### {heading}")
        except ValueError:
            raise SystemExit(f"the report has no section '### {heading}'") from None
    table, seen = [], False
    for line in lines[start:]:
        if line.startswith("|"):
            table.append(line)
            seen = True
        elif seen:
            break
    return table


def refresh_page(page: str, report: Path) -> str:
    """`page` with the table after each `<!-- report: FILE#HEADING -->` mark replaced by that section's
    table of report/FILE now: the page's tables are the report's, and its prose is the author's."""
    lines, out, i = page.splitlines(), [], 0
    while i < len(lines):
        out.append(lines[i])
        m = MARK.match(lines[i].strip())
        i += 1
        if not m:
            continue
        while i < len(lines) and not lines[i].startswith("|") and not lines[i].strip():
            out.append(lines[i])
            i += 1
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        out += report_section((report / m.group(1)).read_text(), m.group(2))
        if i < len(lines) and lines[i].strip():  # prose right after: a blank line ends the table
            out.append("")
    return "\n".join(out) + ("\n" if page.endswith("\n") else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="examples/cifar10.sh's WORK folder")
    ap.add_argument("run", type=Path, help="the training run folder (its stats.jsonl)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: WORK/report)")
    ap.add_argument("--grid-classes", default="1,3,7,8", help="the classes the grid previews were drawn with")
    ap.add_argument("--page", type=Path, default=None,
                    help="a markdown page whose `<!-- report: FILE#HEADING -->` tables to refresh from the report")
    args = ap.parse_args(argv)
    out = args.out or args.work / "report"
    out.mkdir(parents=True, exist_ok=True)
    folders = {p.name: paired_rows(p) for p in sweep_folders(args.work)}
    parts = [sweep_table(name, pairs) for name, pairs in folders.items()]
    parts += [noise_table(folders), summary_table(folders), methods_table(folders), cost_table(args.work, folders)]
    write_text(out / "tables.md", "\n".join(parts))
    guides = {name: guide for name in folders if (guide := folder_guide(args.work / name)) is not None}
    groups = plot_groups(folders, guides)
    plot_fid_vs_w(groups, out / "fid_vs_w.png")
    plot_methods_vs_w(groups, cfgpp_levels(folders), out / "methods_vs_w.png")
    plot_fid_vs_nfe(folders, guides, out / "fid_vs_nfe.png")
    if (args.run / "stats.jsonl").exists():
        write_text(out / "training.md", training(args.run / "stats.jsonl", out))
    if (args.work / "width").is_dir():
        write_text(out / "width.md", width_table(args.work / "width"))
    if (args.work / "grid").is_dir():
        fig3(args.work / "grid", [int(c) for c in args.grid_classes.split(",")], class_names(args.run), out / "fig3.png")
    print(f"wrote {out}/: tables.md, fid_vs_w.png, methods_vs_w.png, fid_vs_nfe.png, training.md, loss.png, width.md, fig3.png")
    if args.page is not None:
        write_text(args.page, refresh_page(args.page.read_text(), out))
        print(f"refreshed the report's tables in {args.page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
