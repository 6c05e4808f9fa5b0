"""Throughput of the real training step (the loop's own functions) on synthetic data, and model
FLOPs utilisation (MFU): achieved FLOP/s ÷ the device's peak, with training ≈ 3 forward passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cfgdiff.config import TrainConfig
from cfgdiff.train.step import accumulate_gradients, apply_gradients, setup_model

# Dense bf16 tensor-core peaks (vendor data sheets), TFLOP/s, matched against the device name in
# this order (the PCIe and NVL cards before their SXM names). No pre-Ampere cards: they have no bf16.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.5, "H100 NVL": 835.5, "H200 NVL": 835.5, "H200": 989.4, "H100": 989.4,
                    "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_for_name(name: str) -> float | None:
    """The bf16 peak of the first PEAK_BF16_TFLOPS key in the device name `name`, else None."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def peak_tflops(device: torch.device) -> float | None:
    """The bf16 peak of a known CUDA device, else None (then MFU is not reported)."""
    return peak_for_name(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def make_step(cfg: TrainConfig, net: nn.Module, device: torch.device) -> Callable[[int], None]:
    """One full optimiser step of `net` (forward, Eq. 5, backward, clip, AdamW, EMA) on a fixed
    synthetic micro-batch of cfg.batch_per_device (or cfg.batch) images."""
    m = setup_model(cfg, net, device)
    b, s = cfg.batch_per_device or cfg.batch, cfg.model.resolution
    x = torch.rand(b, cfg.model.in_channels, s, s, device=device) * 2 - 1
    labels = torch.randint(0, max(cfg.model.num_classes, 1), (b,), device=device)

    def step(i: int) -> None:
        accumulate_gradients(m, cfg, [(x, labels, i)], rounds=1)
        apply_gradients(m, cfg, i)

    return step


def time_steps(step: Callable[[int], None], steps: int, device: torch.device) -> float:
    """Seconds per step over `steps` steps (the device synchronised around them)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / steps


def measure_mfu(cfg: TrainConfig, steps: int = 10, warmup: int = 3, device: torch.device | None = None,
                peak: float | None = None) -> dict[str, Any]:
    """Training img/s, TFLOP/s and MFU of cfg's network (bf16 autocast per cfg.amp, channels_last
    and TF32 on CUDA, torch.compile per cfg.compile), as the training loop runs it."""
    from cfgdiff import dist
    from cfgdiff.nn import build_unet, count_params, forward_flops

    device = device or dist.device()
    torch.manual_seed(cfg.seed)
    net = build_unet(cfg.model)
    params = count_params(net)
    step = make_step(cfg, net, device)
    time_steps(step, warmup, device)
    seconds = time_steps(step, steps, device)
    b = cfg.batch_per_device or cfg.batch
    flops = 3 * forward_flops(cfg.model)
    tflops = b / seconds * flops / 1e12
    peak = peak if peak is not None else peak_tflops(device)
    return {
        "preset": cfg.preset, "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "params": params, "batch": b, "amp": cfg.amp, "compile": cfg.compile, "train_flops_per_image": flops,
        "img_per_s": b / seconds, "tflops": tflops, "peak_tflops": peak, "mfu": tflops / peak if peak else None,
    }
