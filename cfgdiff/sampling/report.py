"""The sweep's figures: FID versus IS (the paper's Fig. 2), FID against w with one line per (sampler,
steps), FID against NFE at each line's best w, and samples across w (Fig. 3).

Plots use matplotlib with the non-interactive Agg backend; files are written under a temporary
name and renamed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cfgdiff.diffusion.methods import MethodChoice
from cfgdiff.files import atomic_write
from cfgdiff.sampling.sweep_files import OWNER, own_settings_label

if TYPE_CHECKING:  # torch only where sampling runs
    from cfgdiff.runs import SamplingModel


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"), owner=OWNER)


def plot_axes(rows: dict[Any, dict[str, Any]]) -> tuple[str, str, list[Any]]:
    """(x key, x label, the row keys plotted): FID against IS (Fig. 2) where rows have IS, else against
    precision, else against w itself; rows without FID or without the x value are left out."""
    keys = sorted((k for k in rows if rows[k].get("fid") is not None), key=lambda k: rows[k]["w"])
    for key, label in (("is_mean", "Inception score"), ("precision", "precision (k = 3)")):
        have = [k for k in keys if rows[k].get(key) is not None]
        if have:
            return key, label, have
    return "w", "guidance weight w", keys


def _lines(rows: dict[Any, dict[str, Any]], keys: list[Any]) -> dict[Any, list[Any]]:
    """`keys` split by plot line (every axis but w), each line in w order."""
    from cfgdiff.sampling.sweep_files import line_of, row_key

    lines: dict[Any, list[Any]] = {}
    for k in sorted(keys, key=lambda k: row_key(rows[k])):
        lines.setdefault(line_of(row_key(rows[k])), []).append(k)
    return lines


def _title(ax: Any, text: str, subtitle: str | None) -> None:
    ax.set_title(text if not subtitle else f"{text}\n{subtitle}", fontsize=9 if subtitle else None)


_MARKERS = "osD^vP*Xh<>"


def write_plot(rows: dict[Any, dict[str, Any]], path: Path, subtitle: str | None = None) -> Path:
    """FID against IS over w (Fig. 2), coloured by w with a colourbar and the best FID marked; one
    marker shape per (sampler, steps) line.

    Never fails on a missing metric: it falls back to precision, then to w, and says in the figure
    when no row has an FID."""
    from cfgdiff.sampling.sweep_files import line_label

    plt = _pyplot()
    xkey, xlabel, keys = plot_axes(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    if keys:
        lines = _lines(rows, keys)
        xy = {k: (rows[k]["w"] if xkey == "w" else rows[k][xkey], rows[k]["fid"]) for k in keys}
        dots = None
        for i, (line, members) in enumerate(lines.items()):
            x, y = [xy[k][0] for k in members], [xy[k][1] for k in members]
            ax.plot(x, y, "-", color="0.7", lw=1, zorder=1)
            dots = ax.scatter(x, y, c=[rows[k]["w"] for k in members], cmap="viridis", s=18, zorder=2,
                              marker=_MARKERS[i % len(_MARKERS)], vmin=min(rows[k]["w"] for k in keys),
                              vmax=max(rows[k]["w"] for k in keys),
                              label=line_label(line) if len(lines) > 1 else None)
            if len(lines) == 1:
                for k in set(pick(members, 5)):  # a few labels: 51 would overlap
                    ax.annotate(f"w={rows[k]['w']:g}", xy[k], textcoords="offset points", xytext=(4, 4), fontsize=7)
        fig.colorbar(dots, ax=ax, label="guidance weight w")
        best = min(keys, key=lambda k: xy[k][1])
        ax.scatter(*xy[best], marker="*", s=160, color="tab:red", zorder=3,
                   label=f"best FID {xy[best][1]:.2f} at w={rows[best]['w']:g}")
        ax.legend(loc="best", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no FID in any row (no reference, or too few samples)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("FID")
    _title(ax, f"FID vs {xlabel.split(' (')[0]} over guidance weight w", subtitle)
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return path


def _finite_fid(rows: dict[Any, dict[str, Any]]) -> list[Any]:
    return [k for k in rows if rows[k].get("fid") is not None and math.isfinite(rows[k]["fid"])]


def write_fid_vs_w(rows: dict[Any, dict[str, Any]], path: Path, subtitle: str | None = None) -> Path:
    """FID against w, one line per (sampler, steps) (and λ grid, interval), each line's best w marked."""
    from cfgdiff.sampling.sweep_files import line_label

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    keys = _finite_fid(rows)
    for line, members in _lines(rows, keys).items():
        x, y = [rows[k]["w"] for k in members], [rows[k]["fid"] for k in members]
        best = min(range(len(y)), key=y.__getitem__)
        (drawn,) = ax.plot(x, y, "-o", ms=3, lw=1.2, label=f"{line_label(line)}: best {y[best]:.2f} at w={x[best]:g}")
        ax.scatter([x[best]], [y[best]], marker="*", s=140, color=drawn.get_color(), edgecolors="k", zorder=3)
    return _finish(plt, fig, ax, path, bool(keys), "guidance weight w (s = 1 + w)", "FID",
                   "FID against w, one line per sampler and steps", subtitle)


def _finish(plt: Any, fig: Any, ax: Any, path: Path, drawn: bool, xlabel: str, ylabel: str, title: str,
            subtitle: str | None) -> Path:
    """Legend (or a note when no row has an FID), labels, title; then save and close."""
    if drawn:
        ax.legend(loc="best", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no FID in any row", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(ax, title, subtitle)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)
    plt.close(fig)
    return path


def best_per_line(rows: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Each line's row with the lowest FID (rows without an FID are left out)."""
    out: dict[Any, dict[str, Any]] = {}
    for line, members in _lines(rows, _finite_fid(rows)).items():
        out[line] = rows[min(members, key=lambda k: rows[k]["fid"])]
    return out


def write_fid_vs_nfe(rows: dict[Any, dict[str, Any]], path: Path, subtitle: str | None = None) -> Path:
    """FID at each line's best w against its NFE per sample; points of one sampler joined across steps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    by_sampler: dict[Any, list[tuple[int, float, float, int]]] = {}
    for line, r in best_per_line(rows).items():
        if r.get("nfe") is not None:
            joined = (line.sampler, line.sampler_settings, line.grid, line.guidance_interval, line.guidance,
                      line.guidance_settings)  # every axis but steps: one curve over T
            by_sampler.setdefault(joined, []).append((r["nfe"], r["fid"], r["w"], line.steps))
    for (sampler, own, grid, interval, guidance, settings), points in by_sampler.items():
        points.sort()
        extra = ("" if grid == "paper" else f", {grid}") + (f", λ∈[{interval[0]:g}, {interval[1]:g}]" if interval else "")
        extra += "" if guidance == "cfg" else f", {MethodChoice(guidance, settings).label()}"
        ax.plot([p[0] for p in points], [p[1] for p in points], "-o", ms=4, label=own_settings_label(sampler, own) + extra)
        for nfe, fid, w, steps in points:
            ax.annotate(f"T={steps}, w={w:g}", (nfe, fid), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if by_sampler:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.set_xticks(sorted({p[0] for points in by_sampler.values() for p in points}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    return _finish(plt, fig, ax, path, bool(by_sampler), "network evaluations per sample (NFE)",
                   "FID at the line's best w", "FID against NFE, each (sampler, steps) at its best w", subtitle)


def write_plots(rows: dict[Any, dict[str, Any]], out_dir: Path, subtitle: str | None = None) -> list[Path]:
    """The sweep's three plots in `out_dir`: fid_vs_is.png, fid_vs_w.png, fid_vs_nfe.png."""
    return [write_plot(rows, out_dir / "fid_vs_is.png", subtitle), write_fid_vs_w(rows, out_dir / "fid_vs_w.png", subtitle),
            write_fid_vs_nfe(rows, out_dir / "fid_vs_nfe.png", subtitle)]


def pick(values: list[float], k: int) -> list[float]:
    """Up to k values spread evenly over `values`, always with the first and the last."""
    if len(values) <= k:
        return list(values)
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, k)).astype(int))
    return [values[i] for i in idx]


def write_figure_grid(model: SamplingModel, base: Any, ws: list[float], path: Path, device: Any, k: int = 5,
                      columns: int = 8) -> Path:
    """Rows of w, columns of fixed (seed, class) pairs: the same noise under growing guidance (Fig. 3),
    drawn with `base.sampler` (every setting but w)."""
    from cfgdiff.sampling.generate import sample_batch

    plt = _pyplot()
    chosen = pick(ws, k)
    n = min(columns, len(base.seeds))
    seeds = list(base.seeds[:n])
    classes = np.linspace(0, model.num_classes - 1, n).round().astype(int).tolist()
    fig, axes = plt.subplots(len(chosen), 1, figsize=(n * 0.9, len(chosen) * 1.0), squeeze=False)
    for ax, w in zip(axes[:, 0], chosen):
        sampler = dataclasses.replace(base.sampler, w=w)
        row = sample_batch(model, seeds, classes, sampler, device, guide=base.guide)  # (n, R, R, 3)
        ax.imshow(np.concatenate(list(row), axis=1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"w={w:g}", rotation=0, ha="right", va="center")
    names = model.class_names
    title = ", ".join(str(names[c]) if c < len(names) else str(c) for c in classes)
    s = base.sampler
    axes[0, 0].set_title(f"{s.sampler}, T={s.steps}, {s.grid} grid; seeds {seeds[0]}..{seeds[-1]}; classes: {title}",
                         fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return path
