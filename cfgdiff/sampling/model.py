"""Finding the checkpoint a sampling command means: an explicit path, or the newest run under runs/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cfgdiff.errors import CheckpointError


def newest_run(runs: Path = Path("runs")) -> Path:
    """The most recently modified run directory under `runs/` (one that has a config.json)."""
    candidates = [p for p in runs.glob("*/") if (p / "config.json").exists()] if runs.is_dir() else []
    if not candidates:
        raise CheckpointError(f"no run under {runs}/: train one with `cfgdiff train`, or pass a checkpoint path")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def load_model(path: str | Path | None, device: torch.device) -> Any:
    """The EMA network and its configs from a run directory or checkpoint file (newest run if None)."""
    from cfgdiff.train.checkpoint import load_for_sampling

    if device.type == "cuda":  # the sampler repeats the same shapes T times a batch: let cuDNN pick kernels once
        torch.backends.cudnn.benchmark = True
    return load_for_sampling(Path(path) if path is not None else newest_run(), device)
