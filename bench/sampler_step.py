"""One guided sampler step versus one network forward at batch 2B, side by side in one run.

The guided step (Eq. 6 + Eq. 4, per-sample noise, float64 state) should cost no more than the
2B forward it wraps: goal ratio <= 1.05. The network is the `tiny` U-Net preset when it exists,
else a small stand-in conv net.

    .venv/bin/python bench/sampler_step.py [--batch 64] [--res 32] [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cfgdiff.config import DiffusionConfig, SamplerConfig
from cfgdiff.diffusion import PerSampleNoise, ancestral_sample
from cfgdiff.diffusion.network import network_eps


def stand_in(num_classes: int) -> torch.nn.Module:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(num_classes + 1, 64)
            self.t = torch.nn.Linear(1, 64)
            self.inp = torch.nn.Conv2d(3, 64, 3, padding=1)
            layers = [torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Conv2d(64, 64, 3, padding=1)) for _ in range(4)]
            self.body = torch.nn.Sequential(*layers)
            self.out = torch.nn.Conv2d(64, 3, 3, padding=1)

        def forward(self, x, c_noise, labels):
            h = self.inp(x) + (self.emb(labels) + self.t(c_noise[:, None] / 1000))[:, :, None, None]
            return self.out(self.body(h))

    return Net()


def build_net(res: int, num_classes: int) -> tuple[torch.nn.Module, str]:
    try:
        from cfgdiff.config import PRESETS  # type: ignore[attr-defined]
        from cfgdiff.nn import build_unet  # type: ignore[attr-defined]
        import dataclasses

        cfg = dataclasses.replace(PRESETS["tiny"].model, resolution=res, num_classes=num_classes)
        return build_unet(cfg), "tiny U-Net preset"
    except (ImportError, KeyError, AttributeError, TypeError):
        return stand_in(num_classes), "stand-in conv net"


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
    eps = network_eps(net, diffusion)
    x2 = torch.randn(2 * b, *shape)
    c2 = torch.rand(2 * b) * 1000
    l2 = torch.cat([labels, torch.full_like(labels, k)])
    cfg = SamplerConfig(steps=args.steps, w=1.0)

    fwd, step = [], []
    with torch.inference_mode():
        net(x2, c2, l2)  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                net(x2, c2, l2)
            fwd.append((time.perf_counter() - t0) / args.steps)
            t0 = time.perf_counter()
            ancestral_sample(eps, labels, PerSampleNoise(range(b), shape), cfg, diffusion, null_label=k)
            step.append((time.perf_counter() - t0) / args.steps)
    f, s = statistics.median(fwd), statistics.median(step)
    print(f"network: {name}, {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params, batch B={b}, {args.res}px")
    print(f"forward at 2B:   {1e3 * f:8.2f} ms")
    print(f"guided step:     {1e3 * s:8.2f} ms   ({b / s:.1f} img-steps/s)")
    print(f"ratio step/forward: {s / f:.3f}   (goal <= 1.05)")


if __name__ == "__main__":
    main()
