"""Training throughput: cfgdiff's cifar32 preset vs diffusers' UNet2DModel at matching size, and the
GPU MFU of adm64.

    python bench/train.py                    # CPU: img/s side by side, ratios, both parameter counts
    python bench/train.py --mfu --preset adm64 --batch 128 --steps 20     # GPU: MFU in bf16

Both networks run through the SAME training step (cfgdiff.train.step: Eq. 5 loss, backward, AdamW,
EMA), same batch, alternating in one process, so only the network differs. It also times the
convolutions alone (the two networks have the same ones, 11.42 GMAC per image), which bounds the
ratio any implementation on the same convolution kernels can reach. diffusers is optional:
    .venv/bin/pip install diffusers
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn

from cfgdiff.config import TRAIN_PRESETS, TrainConfig, override
from cfgdiff.nn import build_unet, count_params
from cfgdiff.train.throughput import make_step, measure_mfu, time_steps


class DiffusersUNet(nn.Module):
    """diffusers' UNet2DModel configured like cfgdiff's cifar32 (same resolution, widths 128·(1,2,2,2),
    2 blocks per level, attention at 16² with 64-channel heads, scale-shift norm, conv resampling,
    dropout, a K + 1 row class table), behind cfgdiff's `net(x, c_noise, labels)` interface."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        from diffusers import UNet2DModel

        m = cfg.model
        widths = tuple(m.model_channels * k for k in m.channel_mult)
        sizes = [m.resolution // 2**i for i in range(len(widths))]
        attn = [s in m.attention_resolutions for s in sizes]
        self.unet = UNet2DModel(
            sample_size=m.resolution, in_channels=m.in_channels, out_channels=m.out_channels,
            block_out_channels=widths, layers_per_block=m.num_res_blocks,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
            attention_head_dim=m.head_channels, norm_num_groups=32, dropout=m.dropout,
            resnet_time_scale_shift="scale_shift", num_class_embeds=m.num_classes + 1,
        )

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x, c_noise, class_labels=labels).sample


def conv_seconds(net: nn.Module, cfg: TrainConfig, batch: int, amp: bool, repeats: int = 3) -> float:
    """Seconds of forward + backward of `net`'s convolutions alone (each on a random input of the shape
    it sees in training, under the same autocast): the floor under any implementation of this network
    that uses the same convolution kernels. Both networks here have the same convolutions."""
    shapes: dict[nn.Conv2d, torch.Size] = {}

    def record(conv: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        shapes[conv] = inputs[0].shape

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.Conv2d)]
    s = cfg.model.resolution
    with torch.no_grad():
        net(torch.randn(batch, cfg.model.in_channels, s, s), torch.rand(batch) * 1000, torch.zeros(batch, dtype=torch.long))
    for h in hooks:
        h.remove()
    total = 0.0
    for conv, shape in shapes.items():
        x = torch.randn(shape, requires_grad=conv is not getattr(net, "conv_in", None))  # no grad for the images
        params = [*conv.parameters(), *([x] if x.requires_grad else [])]

        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                y = conv(x)
            torch.autograd.grad(y.float().sum(), params)

        run()
        t0 = time.perf_counter()
        for _ in range(repeats):
            run()
        total += (time.perf_counter() - t0) / repeats
    return total


def compare(batch: int, rounds: int) -> dict:
    """img/s of both networks under fp32 and bf16 autocast, alternating; the best of `rounds`."""
    base = override(TRAIN_PRESETS["cifar32"], batch=batch)
    device = torch.device("cpu")
    runs = {}
    for amp in (False, True):
        cfg = override(base, amp=amp)
        torch.manual_seed(0)
        runs[f"cfgdiff{'_bf16' if amp else '_fp32'}"] = (build_unet(cfg.model), cfg)
        runs[f"diffusers{'_bf16' if amp else '_fp32'}"] = (DiffusersUNet(cfg), cfg)
    params = {k.split("_")[0]: count_params(net) for k, (net, _) in runs.items()}
    steps = {k: make_step(cfg, net, device) for k, (net, cfg) in runs.items()}
    for step in steps.values():
        step(0)  # warm-up
    best = {k: float("inf") for k in steps}
    for r in range(rounds):
        for k, step in steps.items():
            best[k] = min(best[k], time_steps(step, 1, device))
            print(f"round {r + 1}/{rounds} {k}: {batch / best[k]:.2f} img/s", file=sys.stderr, flush=True)
    img_s = {k: batch / v for k, v in best.items()}
    floor = {p: conv_seconds(runs[f"cfgdiff_{p}"][0], base, batch, amp=p == "bf16") for p in ("fp32", "bf16")}
    return {
        "batch": batch, "threads": torch.get_num_threads(), "params": params, "img_per_s": img_s,
        "ratio_same_precision_fp32": img_s["cfgdiff_fp32"] / img_s["diffusers_fp32"],
        "ratio_same_precision_bf16": img_s["cfgdiff_bf16"] / img_s["diffusers_bf16"],
        "ratio_defaults": img_s["cfgdiff_bf16"] / img_s["diffusers_fp32"],  # cfgdiff's trainer vs diffusers as shipped
        # Seconds of the shared convolutions alone, and the ratio a network with free everything-else
        # (norms, attention, dropout, optimiser) would reach against diffusers' measured step.
        "conv_seconds": floor,
        "conv_share": {p: floor[p] / best[f"cfgdiff_{p}"] for p in floor},
        "ratio_bound": {p: best[f"diffusers_{p}"] / floor[p] for p in floor},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16, help="images per step (both networks)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (best is kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--mfu", action="store_true", help="measure MFU of --preset instead (for bench/gpu.sh)")
    ap.add_argument("--preset", default="adm64", help="with --mfu: the preset")
    ap.add_argument("--steps", type=int, default=10, help="with --mfu: timed steps")
    ap.add_argument("--no-amp", action="store_true", help="with --mfu: float32 instead of bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="with --mfu: torch.compile the network")
    ap.add_argument("--peak-tflops", type=float, default=None, help="with --mfu: device peak (default: by name)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mfu:
        cfg = override(TRAIN_PRESETS[args.preset], batch=args.batch, amp=not args.no_amp, compile=args.compile)
        print(json.dumps(measure_mfu(cfg, steps=args.steps, peak=args.peak_tflops), indent=1))
        return
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("bench/train.py: diffusers is not installed (.venv/bin/pip install diffusers); skipped", file=sys.stderr)
        return
    result = compare(args.batch, args.rounds)
    print(json.dumps(result, indent=1))
    p = result["params"]
    print(f"params: cfgdiff {p['cfgdiff'] / 1e6:.2f}M, diffusers {p['diffusers'] / 1e6:.2f}M; "
          f"cfgdiff/diffusers img/s: fp32 {result['ratio_same_precision_fp32']:.2f}x, "
          f"bf16 {result['ratio_same_precision_bf16']:.2f}x, defaults {result['ratio_defaults']:.2f}x", file=sys.stderr)
    share, bound = result["conv_share"], result["ratio_bound"]
    print(f"convolutions alone: {share['fp32']:.0%} of cfgdiff's fp32 step, {share['bf16']:.0%} of bf16; "
          f"bound with everything else free: fp32 {bound['fp32']:.2f}x, bf16 {bound['bf16']:.2f}x", file=sys.stderr)


if __name__ == "__main__":
    main()
