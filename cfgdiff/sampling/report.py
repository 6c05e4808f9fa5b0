"""The sweep's figures: FID versus IS (the paper's Fig. 2) and samples across w (Fig. 3).

Plots use matplotlib with the non-interactive Agg backend; files are written under a temporary
name and renamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cfgdiff.config import SamplerConfig
from cfgdiff.files import atomic_write

if TYPE_CHECKING:  # torch only where sampling runs
    from cfgdiff.runs import SamplingModel


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"), record=True)


def plot_axes(rows: dict[float, dict[str, Any]]) -> tuple[str, str, list[float]]:
    """(x key, x label, the w values plotted): FID against IS (Fig. 2) where rows have IS, else against
    precision, else against w itself; rows without FID or without the x value are left out."""
    ws = sorted(w for w in rows if rows[w].get("fid") is not None)
    for key, label in (("is_mean", "Inception score"), ("precision", "precision (k = 3)")):
        have = [w for w in ws if rows[w].get(key) is not None]
        if have:
            return key, label, have
    return "w", "guidance weight w", ws


def write_plot(rows: dict[float, dict[str, Any]], path: Path) -> Path:
    """FID against IS over w (Fig. 2), coloured by w with a colourbar and the best FID marked.

    Never fails on a missing metric: it falls back to precision, then to w, and says in the figure
    when no row has an FID."""
    plt = _pyplot()
    xkey, xlabel, ws = plot_axes(rows)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if ws:
        x = [w if xkey == "w" else rows[w][xkey] for w in ws]
        y = [rows[w]["fid"] for w in ws]
        ax.plot(x, y, "-", color="0.7", lw=1, zorder=1)
        dots = ax.scatter(x, y, c=ws, cmap="viridis", s=18, zorder=2)
        fig.colorbar(dots, ax=ax, label="guidance weight w")
        best = min(range(len(ws)), key=lambda i: y[i])
        ax.scatter([x[best]], [y[best]], marker="*", s=160, color="tab:red", zorder=3,
                   label=f"best FID {y[best]:.2f} at w={ws[best]:g}")
        ax.legend(loc="best", fontsize=8)
        for w in set(pick(ws, 5)) - {ws[best]}:  # a few labels: 51 would overlap
            i = ws.index(w)
            ax.annotate(f"w={w:g}", (x[i], y[i]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    else:
        ax.text(0.5, 0.5, "no FID in any row (no reference, or too few samples)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("FID")
    ax.set_title(f"FID vs {xlabel.split(' (')[0]} over guidance weight w")
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return path


def pick(values: list[float], k: int) -> list[float]:
    """Up to k values spread evenly over `values`, always with the first and the last."""
    if len(values) <= k:
        return list(values)
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, k)).astype(int))
    return [values[i] for i in idx]


def write_figure_grid(model: SamplingModel, base: Any, ws: list[float], path: Path, device: Any, k: int = 5,
                      columns: int = 8) -> Path:
    """Rows of w, columns of fixed (seed, class) pairs: the same noise under growing guidance (Fig. 3)."""
    from cfgdiff.sampling.generate import sample_batch

    plt = _pyplot()
    chosen = pick(ws, k)
    n = min(columns, len(base.seeds))
    seeds = list(base.seeds[:n])
    classes = np.linspace(0, model.num_classes - 1, n).round().astype(int).tolist()
    fig, axes = plt.subplots(len(chosen), 1, figsize=(n * 0.9, len(chosen) * 1.0), squeeze=False)
    for ax, w in zip(axes[:, 0], chosen):
        sampler = SamplerConfig(steps=base.sampler.steps, v=base.sampler.v, w=w, clip_x=base.sampler.clip_x)
        row = sample_batch(model, seeds, classes, sampler, device)  # (n, R, R, 3)
        ax.imshow(np.concatenate(list(row), axis=1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"w={w:g}", rotation=0, ha="right", va="center")
    names = model.class_names
    title = ", ".join(str(names[c]) if c < len(names) else str(c) for c in classes)
    axes[0, 0].set_title(f"seeds {seeds[0]}..{seeds[-1]}; classes: {title}", fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return path
