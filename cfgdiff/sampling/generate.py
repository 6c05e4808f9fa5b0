"""Turning a trained network into images: seeds + labels -> uint8 images, for every sampler.

`images_for_seeds` is the ONE place where seeds become images: `cfgdiff sample`, `sweep`, the Fig. 3
grid and the training grids (train/grid.py) all call it, so a sampler, grid or guidance variant
chosen anywhere reaches the pixels the same way. It dispatches through the sampler registry
(`cfgdiff.diffusion.sample`: `SamplerConfig.sampler` on the λ grid `SamplerConfig.grid`).

`model` is a `cfgdiff.runs.SamplingModel` (its `net`, `diffusion_cfg`, `num_classes`, `resolution`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from cfgdiff import dist
from cfgdiff.config import DiffusionConfig, SamplerConfig, TrainConfig
from cfgdiff.diffusion import PerSampleNoise, nfe_per_sample, sample
from cfgdiff.diffusion.guidance import EpsFn, NetworkSpec, check_guide
from cfgdiff.diffusion.network import network_eps
from cfgdiff.errors import NumericalError
from cfgdiff.images import to_uint8
from cfgdiff.runs import SamplingModel


def default_autocast(device: torch.device) -> torch.dtype | None:
    """bf16 autocast for the network where the device computes bf16 natively (as training does);
    the sampler's own state stays float64 either way."""
    return torch.bfloat16 if dist.native_bf16(device) else None


@torch.inference_mode()
def images_for_seeds(
    net: torch.nn.Module,
    run: TrainConfig,
    seeds: Sequence[int],
    labels: Sequence[int],
    sampler: SamplerConfig,
    device: torch.device,
    autocast: torch.dtype | None,
    guide: EpsFn | None = None,
    callback: Callable[[int, int], None] | None = None,
    require_finite: bool = True,
) -> np.ndarray:
    """Images for `seeds` with class `labels`: uint8 (B, R, R, C), C = run.model.in_channels.

    Each seed owns its noise stream (`PerSampleNoise`), so an image does not depend on the batch.
    `guide`: the guide ε-predictor for autoguidance (then no ∅ pass). `require_finite`: a NaN/Inf
    sample is a NumericalError naming the seeds (never quantised and scored); the training grid
    passes False, as a picture of what the EMA does must not stop training.
    """
    m = run.model
    if run.distill is not None:  # a student: w is its input, inside the range it learned
        run.distill.check_w(sampler.w)
    eps = network_eps(net, run.diffusion, autocast=autocast, w=sampler.w if m.w_embedding else None)
    noise = PerSampleNoise(seeds, (m.in_channels, m.resolution, m.resolution), device)
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    x = sample(eps, lab, noise, sampler, run.diffusion, null_label=m.num_classes, callback=callback, guide=guide,
               w_input=m.w_embedding)
    if require_finite:
        bad = ~torch.isfinite(x.flatten(1)).all(1)
        if bad.any():  # never quantise NaN to pixels and score them
            first = [int(s) for s, b in zip(seeds, bad.tolist()) if b][:5]
            raise NumericalError(f"non-finite samples (NaN/Inf) at w={sampler.w} for seeds {first}; try a smaller w")
    return to_uint8(x.float())


def sample_batch(
    model: SamplingModel,
    seeds: Sequence[int],
    labels: Sequence[int],
    sampler: SamplerConfig,
    device: torch.device,
    callback: Callable[[int, int], None] | None = None,
    guide: SamplingModel | None = None,
) -> np.ndarray:
    """`images_for_seeds` for a loaded model (and an autoguidance `guide` model): uint8 (B, R, R, 3)."""
    autocast = default_autocast(device)
    guide_eps = None if guide is None else network_eps(guide.net, guide.diffusion_cfg, autocast=autocast)
    return images_for_seeds(model.net, model.config, seeds, labels, sampler, device, autocast,
                            guide=guide_eps, callback=callback)


def network_spec(model: SamplingModel) -> NetworkSpec:
    return NetworkSpec(model.num_classes, model.resolution, model.diffusion_cfg, model.w_input)


def check_guide_model(main: SamplingModel, guide: SamplingModel) -> None:
    """One ConfigError line when `guide` cannot guide `main` (classes, resolution or λ range differ)."""
    check_guide(network_spec(main), network_spec(guide))


def nfe(sampler: SamplerConfig, n: int, diffusion: DiffusionConfig = DiffusionConfig(), w_input: bool = False) -> int:
    """Network evaluations per image times images (`nfe_per_sample`: exact for every sampler; pass
    the model's DiffusionConfig, whose λ range places the grid against a guidance interval, and
    its `w_input`: a distilled student's guided step is one evaluation)."""
    return nfe_per_sample(sampler, diffusion, w_input) * n


@torch.inference_mode()
def seconds_per_step(model: SamplingModel, batch: int, guided: bool, device: torch.device, repeats: int = 3) -> float:
    """Wall time of one network forward at this batch (2·batch when guided) on `device`: measured on at
    most MEASURED images (a plan is bounded in memory and time whatever the batch asked for) and scaled
    linearly to the batch."""
    want = 2 * batch if guided else batch
    b = min(want, MEASURED[device.type == "cuda"])
    return _seconds_per_forward(model, b, device, repeats) * want / b


MEASURED = {False: 4, True: 64}  # images a plan's forward is measured on: CPU, GPU


def _seconds_per_forward(model: SamplingModel, b: int, device: torch.device, repeats: int) -> float:
    r = model.resolution
    x = torch.randn(b, 3, r, r, device=device)
    lam = torch.zeros(b, dtype=torch.float64, device=device)
    labels = torch.zeros(b, dtype=torch.long, device=device)
    w = model.config.distill.w_min if model.config.distill is not None else None  # a student takes w
    eps = network_eps(model.net, model.diffusion_cfg, autocast=default_autocast(device), w=w)
    eps(x, lam, labels)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        eps(x, lam, labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / repeats
