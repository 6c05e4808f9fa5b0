"""One guided sampler step versus one network forward at batch 2B, side by side in one run.

The guided step (Eq. 6 + Eq. 4, per-sample noise, float64 state) should cost no more than the
2B forward it wraps: goal ratio <= 1.05. The network is the `tiny` U-Net preset; both sides
use the same precision (bf16 autocast where the CPU or GPU has native bf16, as `cfgdiff sample`).

    .venv/bin/python bench/sampler_step.py [--batch 64] [--res 32] [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from cfgdiff import dist
from cfgdiff.config import TRAIN_PRESETS, DiffusionConfig, SamplerConfig
from cfgdiff.diffusion import PerSampleNoise, ancestral_sample
from cfgdiff.diffusion.network import network_eps
from cfgdiff.nn import build_unet, count_params


def build_net(res: int, num_classes: int) -> tuple[torch.nn.Module, str]:
    """The `tiny` preset's U-Net at this resolution, with a non-zero output layer (a trained net's cost)."""
    cfg = dataclasses.replace(TRAIN_PRESETS["tiny"].model, resolution=res, num_classes=num_classes)
    net = build_unet(cfg)
    torch.nn.init.normal_(net.conv_out.weight, std=0.02)
    return net, f"tiny U-Net preset ({count_params(net) / 1e6:.2f}M params)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    k = 10
    net, name = build_net(args.res, k)
    net.eval()
    diffusion = DiffusionConfig()
    b, shape = args.batch, (3, args.res, args.res)
    labels = torch.arange(b) % k
    autocast = torch.bfloat16 if dist.native_bf16(torch.device("cpu")) else None
    eps = network_eps(net, diffusion, autocast=autocast)
    x2 = torch.randn(2 * b, *shape)
    c2 = torch.rand(2 * b) * 1000
    l2 = torch.cat([labels, torch.full_like(labels, k)])
    cfg = SamplerConfig(steps=args.steps, w=1.0)

    fwd, step = [], []
    with torch.inference_mode():
        forward = torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None)
        with forward:
            net(x2, c2, l2)  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with forward:
                for _ in range(args.steps):
                    net(x2, c2, l2)
            fwd.append((time.perf_counter() - t0) / args.steps)
            t0 = time.perf_counter()
            ancestral_sample(eps, labels, PerSampleNoise(range(b), shape), cfg, diffusion, null_label=k)
            step.append((time.perf_counter() - t0) / args.steps)
    f, s = statistics.median(fwd), statistics.median(step)
    print(f"network: {name}, batch B={b}, {args.res}px, autocast={autocast}")
    print(f"forward at 2B:   {1e3 * f:8.2f} ms")
    print(f"guided step:     {1e3 * s:8.2f} ms   ({b / s:.1f} img-steps/s = {b / s / 256:.3f} img/s at T = 256)")
    print(f"ratio step/forward: {s / f:.3f}   (goal <= 1.05)")


if __name__ == "__main__":
    main()
