"""Turning a trained network into images: one batch of seeds -> uint8 images (Eq. 4 with Eq. 6).

`model` is a `cfgdiff.runs.SamplingModel` (its `net`, `diffusion_cfg`, `num_classes`, `resolution`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from cfgdiff import dist
from cfgdiff.config import DiffusionConfig, SamplerConfig
from cfgdiff.diffusion import PerSampleNoise, nfe_per_sample, sample
from cfgdiff.diffusion.network import network_eps
from cfgdiff.errors import NumericalError
from cfgdiff.images import to_uint8
from cfgdiff.runs import SamplingModel


def default_autocast(device: torch.device) -> torch.dtype | None:
    """bf16 autocast for the network where the device computes bf16 natively (as training does);
    the sampler's own state stays float64 either way."""
    return torch.bfloat16 if dist.native_bf16(device) else None


@torch.inference_mode()
def sample_batch(
    model: SamplingModel,
    seeds: Sequence[int],
    labels: Sequence[int],
    sampler: SamplerConfig,
    device: torch.device,
    callback: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Samples for `seeds` with class `labels`: uint8 (B, R, R, 3). Each seed owns its noise stream."""
    eps = network_eps(model.net, model.diffusion_cfg, autocast=default_autocast(device))
    r = model.resolution
    noise = PerSampleNoise(seeds, (3, r, r), device)
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    x = sample(eps, lab, noise, sampler, model.diffusion_cfg, null_label=model.num_classes, callback=callback)
    bad = ~torch.isfinite(x.flatten(1)).all(1)
    if bad.any():  # never quantise NaN to pixels and score them
        first = [int(s) for s, b in zip(seeds, bad.tolist()) if b][:5]
        raise NumericalError(f"non-finite samples (NaN/Inf) at w={sampler.w} for seeds {first}; try a smaller w")
    return to_uint8(x.float())


def nfe(sampler: SamplerConfig, n: int, diffusion: DiffusionConfig = DiffusionConfig()) -> int:
    """Network evaluations per image times images (`nfe_per_sample`: exact for every sampler)."""
    return nfe_per_sample(sampler, diffusion) * n


@torch.inference_mode()
def seconds_per_step(model: SamplingModel, batch: int, guided: bool, device: torch.device, repeats: int = 3) -> float:
    """Measured wall time of one network forward at this batch (2·batch when guided) on `device`."""
    b = 2 * batch if guided else batch
    r = model.resolution
    x = torch.randn(b, 3, r, r, device=device)
    lam = torch.zeros(b, dtype=torch.float64, device=device)
    labels = torch.zeros(b, dtype=torch.long, device=device)
    eps = network_eps(model.net, model.diffusion_cfg, autocast=default_autocast(device))
    eps(x, lam, labels)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        eps(x, lam, labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / repeats
