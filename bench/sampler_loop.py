"""cfgdiff's guided sampling loop against a diffusers loop of the same job (issue 12, last goal).

Both sides: a class-conditional U-Net of ≈1.37M parameters at 32², B images, T steps, w = 0.3,
guidance as ONE forward of a 2B batch (labels, then ∅), deterministic samplers:
- cfgdiff: `cfgdiff.diffusion.sample` with `dpmpp-2m` or `ddim` (η = 0), the `tiny` preset's U-Net,
  `network_eps` (float64 state, the network in float32 or under bf16 autocast);
- diffusers: `UNet2DModel` sized to match, `DPMSolverMultistepScheduler` (2M, dpmsolver++) or
  `DDIMScheduler`, the usual diffusers loop (float32 state, `scheduler.step`).
Each side is also timed as T bare forwards of its network at 2B, so that
loop overhead = loop time − network time. Repeats are interleaved; medians are reported.
`speed ratio` = diffusers time / cfgdiff time (≥ 1.0: cfgdiff is as fast or faster). Matched
parameters are not matched work, so each network's forward FLOPs are counted too (FlopCounterMode)
and the ratio is also given per FLOP.
With --profile, a torch.profiler table of one loop of each side is written to --profile.

    pip install -e '.[bench]'
    python bench/sampler_loop.py                        # B = 64, 20 steps, fp32 and bf16
    python bench/sampler_loop.py --repeats 3 --profile bench-out/loop_profile.txt
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from cfgdiff.config import DiffusionConfig, SamplerConfig
from cfgdiff.diffusion import BatchNoise, sample
from cfgdiff.diffusion.network import network_eps
from cfgdiff.nn import count_params
from cfgdiff.nn.unet import SAMPLING_LAYOUT
from sampler_step import build_net, sync  # bench/ sibling (run as a script)


def diffusers_unet(res: int, classes: int, resample: str = "conv") -> torch.nn.Module:
    """A UNet2DModel shaped like the tiny preset: widths 32/64/72 (1.34M), one block a level, attention at 8².

    resample="conv" is diffusers' default (a strided conv down, upsample + conv up); "resnet" resamples
    inside a residual block, as `tiny` does (BigGAN-style `resblock_updown`): the same work as cfgdiff's.
    """
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=res, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(32, 64, 72), norm_num_groups=8, attention_head_dim=36,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        num_class_embeds=classes + 1, resnet_time_scale_shift="scale_shift",
        downsample_type=resample, upsample_type=resample,
    ).eval()


def diffusers_scheduler(name: str, steps: int):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name == "dpmpp-2m":
        s = DPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=2, algorithm_type="dpmsolver++",
                                        prediction_type="epsilon")
    else:
        s = DDIMScheduler(num_train_timesteps=1000, prediction_type="epsilon", clip_sample=False)
    s.set_timesteps(steps)
    return s


def diffusers_loop(unet: torch.nn.Module, sampler: str, steps: int, b: int, res: int, classes: int, w: float,
                   amp: bool) -> Callable[[], torch.Tensor]:
    labels = torch.arange(b) % classes
    labels2 = torch.cat([labels, torch.full_like(labels, classes)])

    def run() -> torch.Tensor:
        sched = diffusers_scheduler(sampler, steps)
        x = torch.randn(b, 3, res, res, generator=torch.Generator().manual_seed(0))
        for t in sched.timesteps:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = unet(torch.cat([x, x]), t, class_labels=labels2).sample
            e_c, e_u = out.float().chunk(2)
            x = sched.step((1 + w) * e_c - w * e_u, t, x).prev_sample
        return x

    return run


def cfgdiff_loop(net: torch.nn.Module, sampler: str, steps: int, b: int, res: int, classes: int, w: float,
                 amp: bool) -> Callable[[], torch.Tensor]:
    diffusion = DiffusionConfig()
    eps = network_eps(net, diffusion, autocast=torch.bfloat16 if amp else None)
    labels = torch.arange(b) % classes
    cfg = SamplerConfig(sampler=sampler, steps=steps, w=w)

    def run() -> torch.Tensor:
        noise = BatchNoise(b, (3, res, res), torch.Generator().manual_seed(0))
        return sample(eps, labels, noise, cfg, diffusion, null_label=classes)

    return run


def forwards(fn: Callable[[], object], steps: int, amp: bool) -> Callable[[], None]:
    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            for _ in range(steps):
                fn()

    return run


def call_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (2 per multiply-add), counted by torch's FlopCounterMode. Both networks
    are counted this way, on a real CPU call: `cfgdiff.nn.forward_flops` counts on the meta device,
    where attention dispatches another kernel (603.8M there against 599.6M here for `tiny` at 32²)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def timed(fn: Callable[[], object]) -> float:
    sync(torch.device("cpu"))
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--w", type=float, default=0.3)
    ap.add_argument("--samplers", default="dpmpp-2m,ddim")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resample", choices=("conv", "resnet"), default="conv",
                    help="diffusers' down/upsampling: its default conv, or resnet blocks like cfgdiff's tiny")
    ap.add_argument("--diffusers-layout", choices=("default", "channels_last"), default="default",
                    help="diffusers' memory format: its default (NCHW, what its users run) or channels_last")
    ap.add_argument("--profile", default=None, help="append a torch.profiler table of one loop per side to this file")
    args = ap.parse_args()
    torch.manual_seed(0)
    b, r, k, t = args.batch, args.res, args.classes, args.steps
    ours, name = build_net("tiny", r, k, torch.device("cpu"))
    theirs = diffusers_unet(r, k, args.resample)
    if args.diffusers_layout == "channels_last":
        theirs = theirs.to(memory_format=torch.channels_last)
    print(f"cfgdiff: {name}, {SAMPLING_LAYOUT}; diffusers UNet2DModel ({args.resample} resampling, "
          f"{args.diffusers_layout} layout): {count_params(theirs) / 1e6:.2f}M params; "
          f"B={b}, {r}px, {t} steps, w={args.w}, {torch.get_num_threads()} threads")
    x2 = torch.randn(2 * b, 3, r, r)
    l2 = torch.cat([torch.arange(b) % k, torch.full((b,), k)])
    c2 = torch.full((2 * b,), 500.0)
    with torch.inference_mode():  # matched parameters are not matched work: count each network's FLOPs
        x1, l1 = x2[:1], l2[:1]  # one image
        flops = {"cfgdiff": call_flops(lambda: ours(x1, c2[:1], l1)),
                 "diffusers": call_flops(lambda: theirs(x1, 500, class_labels=l1).sample)}
    print("forward FLOPs per image: " + ", ".join(f"{s} {f / 1e6:.1f}M" for s, f in flops.items()) +
          f"; diffusers/cfgdiff {flops['diffusers'] / flops['cfgdiff']:.3f}")
    with torch.inference_mode():
        for prec in args.precisions.split(","):
            amp = prec == "bf16"
            bare = {"cfgdiff": forwards(lambda: ours(x2, c2, l2), t, amp),
                    "diffusers": forwards(lambda: theirs(x2, 500, class_labels=l2).sample, t, amp)}
            for sampler in args.samplers.split(","):
                loops = {"cfgdiff": cfgdiff_loop(ours, sampler, t, b, r, k, args.w, amp),
                         "diffusers": diffusers_loop(theirs, sampler, t, b, r, k, args.w, amp)}
                warm = (cfgdiff_loop(ours, sampler, 2, b, r, k, args.w, amp),
                        diffusers_loop(theirs, sampler, 2, b, r, k, args.w, amp),
                        forwards(lambda: ours(x2, c2, l2), 2, amp),
                        forwards(lambda: theirs(x2, 500, class_labels=l2).sample, 2, amp))
                for fn in warm:
                    fn()  # warm-up, 2 steps each (oneDNN primitive caches, autocast weight casts)
                times: dict[str, list[float]] = {f"{s} {what}": [] for s in loops for what in ("loop", "network")}
                for _ in range(args.repeats):
                    for side in loops:
                        times[f"{side} loop"].append(timed(loops[side]))
                        times[f"{side} network"].append(timed(bare[side]))
                med = {key: statistics.median(v) for key, v in times.items()}
                print(f"\n[{sampler}, {prec}]  median of {args.repeats} (all: " +
                      "; ".join(f"{key} " + ",".join(f"{x:.2f}" for x in v) for key, v in times.items()) + ")")
                for side in loops:
                    loop, net = med[f"{side} loop"], med[f"{side} network"]
                    print(f"  {side:9s} loop {loop:7.3f} s   network {net:7.3f} s   overhead {loop - net:+7.3f} s "
                          f"({100 * (loop - net) / net:+.1f}%)")
                ratio = med["diffusers loop"] / med["cfgdiff loop"]
                print(f"  speed ratio diffusers/cfgdiff: {ratio:.3f}   "
                      f"network-only ratio: {med['diffusers network'] / med['cfgdiff network']:.3f}   "
                      f"per FLOP (loop ratio × cfgdiff/diffusers FLOPs): {ratio * flops['cfgdiff'] / flops['diffusers']:.3f}")
                if args.profile:
                    for side, fn in loops.items():
                        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                            fn()
                        with open(args.profile, "a") as f:  # appended as each one finishes
                            f.write(f"===== {side} {sampler} {prec} =====\n" +
                                    prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18) + "\n\n")
                    print(f"  profile appended to {args.profile}")


if __name__ == "__main__":
    main()
