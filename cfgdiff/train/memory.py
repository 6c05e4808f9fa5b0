"""The micro-batch a device can train: a memory model, checked against the memory available.

Training memory for a micro-batch of b images of a network with P parameters:

    need(b) = 20·P + 2·b·A

- 20·P: float32 weights, gradients, AdamW's two moments and the EMA (4 + 4 + 8 + 4 bytes a parameter).
- A: the bytes autograd saves for the backward pass, per image: every tensor the forward keeps
  (its storage counted once, parameters excluded), counted in float32 by running the forward on the
  meta device (no memory, no FLOPs) at batch 1 and 2, A = saved(2) − saved(1). bf16 autocast keeps
  about half of that; the model does not count on it.
- 2: the tensors that are not saved but alive at the peak (the backward's gradient buffers of the
  layers in flight, the loss's intermediates) and the allocator's slack.

Measured against it (CPU, float32, one optimiser step, growth of the peak RSS per image between
two micro-batches): tiny at 32² 12.2 MiB against A = 9.2 MiB (1.33·A), cifar32 22 MiB against
A = 55 MiB (0.40·A); tests/train/test_train_start.py checks the first against 2·A. The model is an upper
bound by design: it picks a smaller micro-batch than needed rather than one that fails.

The budget is 90% of what is available: on CUDA the free device memory
(`torch.cuda.mem_get_info`), on a CPU the kernel's `MemAvailable` (/proc/meminfo; elsewhere the
physical memory). The micro-batch is the largest divisor of batch / processes that fits, and the
global batch is reached by gradient accumulation: the optimiser step is the preset's.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from cfgdiff.config import ModelConfig, TrainConfig
from cfgdiff.errors import CfgdiffError

STATE_BYTES_PER_PARAM = 20
ACTIVATION_FACTOR = 2.0
BUDGET_FRACTION = 0.9


def saved_bytes_per_image(model: ModelConfig) -> int:
    """A: the bytes of the tensors the forward saves for the backward, per image, in float32."""
    return _saved_bytes(model, 2) - _saved_bytes(model, 1)


def _saved_bytes(model: ModelConfig, batch: int) -> int:
    from cfgdiff.nn import build_unet

    net = build_unet(model, "meta")
    params = {p.untyped_storage()._cdata for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            seen[storage._cdata] = storage.nbytes()
        return t

    x = torch.zeros(batch, model.in_channels, model.resolution, model.resolution, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        w = (torch.zeros(batch, device="meta"),) if model.w_embedding else ()  # a distilled student takes w
        net(x, torch.zeros(batch, device="meta"), torch.zeros(batch, dtype=torch.long, device="meta"), *w)
    return sum(seen.values())


def training_bytes(params: int, per_image: int, micro: int) -> int:
    """need(b) of the module docstring."""
    return STATE_BYTES_PER_PARAM * params + int(ACTIVATION_FACTOR * micro * per_image)


def available_bytes(device: torch.device) -> int:
    """Free memory of a CUDA device, else the kernel's MemAvailable (physical memory where there is none)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fit_micro_batch(per_process: int, params: int, per_image: int, budget: int) -> int | None:
    """The largest divisor b of `per_process` with need(b) ≤ budget; None when not even b = 1 fits."""
    small = [d for d in range(1, math.isqrt(per_process) + 1) if per_process % d == 0]
    divisors = {*small, *(per_process // d for d in small)}  # O(sqrt) of a batch up to 2^20
    fits = [b for b in divisors if training_bytes(params, per_image, b) <= budget]
    return max(fits) if fits else None


def resolve_micro_batch(cfg: TrainConfig, device: torch.device, world: int,
                        available: int | None = None) -> tuple[int, str]:
    """The micro-batch per process for cfg (cfg.batch_per_device when set) and a phrase saying why."""
    if cfg.batch_per_device:
        return cfg.batch_per_device, "as set"
    from cfgdiff.nn import build_unet, count_params

    per_process = max(1, cfg.batch // world)
    params = count_params(build_unet(cfg.model, "meta"))
    per_image = saved_bytes_per_image(cfg.model)
    available = available_bytes(device) if available is None else available
    budget = int(BUDGET_FRACTION * available)
    micro = fit_micro_batch(per_process, params, per_image, budget)
    gib = 2**30
    if micro is None:
        raise CfgdiffError(
            f"the {cfg.preset} network needs about {training_bytes(params, per_image, 1) / gib:.1f} GiB to train "
            f"even one image at a time and {device.type} has {available / gib:.1f} GiB available; "
            "choose a smaller --preset or another device")
    return micro, (f"memory model: {training_bytes(params, per_image, micro) / gib:.1f} of "
                   f"{available / gib:.1f} GiB available on {device.type}")
