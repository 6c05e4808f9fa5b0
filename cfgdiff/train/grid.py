"""The sample grid written during training: fixed seeds and classes, at w = 0 and at one w > 0."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from cfgdiff.config import SamplerConfig, TrainConfig
from cfgdiff.diffusion import PerSampleNoise, ancestral_sample
from cfgdiff.diffusion.network import network_eps
from cfgdiff.images import save_grid, to_uint8


@torch.no_grad()
def write_sample_grid(net: torch.nn.Module, cfg: TrainConfig, path: Path, autocast: torch.dtype | None) -> Path:
    """Sample seeds 0 … n−1 (class = seed mod K) with cfg.grid_steps ancestral steps, once at w = 0
    and once at w = cfg.grid_w (skipped for an unconditional model), and tile them: one block of
    rows per w, the same seed in the same column."""
    n, k, m = cfg.grid_images, cfg.model.num_classes, cfg.model
    device = next(net.parameters()).device
    seeds = list(range(n))
    labels = torch.tensor([s % k if k else 0 for s in seeds], dtype=torch.long, device=device)
    eps_fn = network_eps(net, cfg.diffusion, autocast=autocast)
    ncols = min(n, 16)
    per_block = math.ceil(n / ncols) * ncols
    blocks = []
    for w in (0.0, cfg.grid_w) if k and cfg.grid_w > 0 else (0.0,):
        noise = PerSampleNoise(seeds, (m.in_channels, m.resolution, m.resolution), device)
        x = ancestral_sample(eps_fn, labels, noise, SamplerConfig(steps=cfg.grid_steps, w=w), cfg.diffusion,
                             null_label=k)
        images = to_uint8(x[:, :3])
        pad = np.zeros((per_block - n, *images.shape[1:]), dtype=np.uint8)
        blocks.append(np.concatenate([images, pad]))
    return save_grid(np.concatenate(blocks), path, ncols)
