"""Finding the checkpoint a sampling command means: an explicit path, or the newest run under runs/."""

from __future__ import annotations

from pathlib import Path

import torch

from cfgdiff.runs import SamplingModel, load_for_sampling, newest_run


def load_model(path: str | Path | None, device: torch.device) -> SamplingModel:
    """The EMA network and its configs from a run directory or checkpoint file (newest run if None)."""
    if device.type == "cuda":  # the sampler repeats the same shapes T times a batch: let cuDNN pick kernels once
        torch.backends.cudnn.benchmark = True
    return load_for_sampling(Path(path) if path is not None else newest_run(), device)
