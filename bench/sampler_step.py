"""One guided sampler step versus one network forward at batch 2B, side by side in one run.

The guided step (Eq. 6 + Eq. 4, per-sample noise, float64 state) should cost no more than the
2B forward it wraps: goal ratio <= 1.05. Both sides use the same precision (bf16 autocast where
the device computes bf16 natively, as `cfgdiff sample` does). Also prints guided sampling img/s.

    .venv/bin/python bench/sampler_step.py                                  # tiny preset, 32px, CPU
    python bench/sampler_step.py --preset adm64 --res 64 --batch 256 --steps 10 --classes 1000   # GPU
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
from cfgdiff.nn.unet import for_sampling


def build_net(preset: str, res: int, num_classes: int, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The preset's U-Net at this resolution, laid out as `cfgdiff sample` lays it out, with a non-zero
    output layer (a trained net's cost)."""
    cfg = dataclasses.replace(TRAIN_PRESETS[preset].model, resolution=res, num_classes=num_classes)
    net = for_sampling(build_unet(cfg), device)
    torch.nn.init.normal_(net.conv_out.weight, std=0.02)
    return net, f"{preset} U-Net ({count_params(net) / 1e6:.2f}M params)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="B (the guided forward is 2B)")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps timed per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    device = dist.device()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    k = args.classes
    net, name = build_net(args.preset, args.res, k, device)
    diffusion = DiffusionConfig()
    b, shape = args.batch, (3, args.res, args.res)
    labels = torch.arange(b, device=device) % k
    autocast = torch.bfloat16 if dist.native_bf16(device) else None
    eps = network_eps(net, diffusion, autocast=autocast)
    x2 = torch.randn(2 * b, *shape, device=device)
    c2 = torch.rand(2 * b, device=device) * 1000
    l2 = torch.cat([labels, torch.full_like(labels, k)])
    cfg = SamplerConfig(steps=args.steps, w=1.0)
    forward = torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None)

    fwd, step = [], []
    with torch.inference_mode():
        with forward:
            net(x2, c2, l2)  # warm-up
        ancestral_sample(eps, labels, PerSampleNoise(range(b), shape, device), SamplerConfig(steps=2, w=1.0),
                         diffusion, null_label=k)
        for _ in range(args.repeats):
            sync(device)
            t0 = time.perf_counter()
            with forward:
                for _ in range(args.steps):
                    net(x2, c2, l2)
            sync(device)
            fwd.append((time.perf_counter() - t0) / args.steps)
            t0 = time.perf_counter()
            ancestral_sample(eps, labels, PerSampleNoise(range(b), shape, device), cfg, diffusion, null_label=k)
            sync(device)
            step.append((time.perf_counter() - t0) / args.steps)
    f, s = statistics.median(fwd), statistics.median(step)
    print(f"network: {name}, batch B={b}, {args.res}px, device={device}, autocast={autocast}")
    print(f"forward at 2B:   {1e3 * f:9.2f} ms")
    print(f"guided step:     {1e3 * s:9.2f} ms   ({b / s:.1f} img-steps/s; {b / s / 256:.3f} img/s at T = 256)")
    print(f"ratio step/forward: {s / f:.3f}   (goal <= 1.05)")


if __name__ == "__main__":
    main()
