"""The sweep's figures: FID versus IS (the paper's Fig. 2) and samples across w (Fig. 3).

Plots use matplotlib with the non-interactive Agg backend; files are written under a temporary
name and renamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cfgdiff.config import SamplerConfig

if TYPE_CHECKING:  # torch only where sampling runs
    from cfgdiff.runs import SamplingModel


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    tmp.replace(path)


def write_plot(rows: dict[float, dict[str, Any]], path: Path) -> Path:
    """FID against IS over w (Fig. 2); FID against precision when IS is unavailable."""
    plt = _pyplot()
    ws = sorted(rows)
    has_is = all(rows[w].get("is_mean") is not None for w in ws)
    xkey, xlabel = ("is_mean", "Inception score") if has_is else ("precision", "precision (k = 3)")
    x = [rows[w].get(xkey) for w in ws]
    y = [rows[w].get("fid") for w in ws]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(x, y, "o-", color="tab:blue")
    for w, xi, yi in zip(ws, x, y):
        ax.annotate(f"w={w:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("FID")
    ax.set_title(f"FID vs {'IS' if has_is else 'precision'} over guidance weight w")
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
