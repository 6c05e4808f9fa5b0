"""ADM's U-Net (Dhariwal & Nichol 2021; layout of guided-diffusion's `UNetModel`), class-conditional
with a null label: `net(x, c_noise, labels) -> eps`. It knows nothing of diffusion: `c_noise` is
any real number per image (cfgdiff feeds 1000·u(λ), see cfgdiff.diffusion.network).

    emb = MLP(sinusoidal(c_noise)) + table[label]            table has K + 1 rows; row K is ∅
          (+ MLP_w(sinusoidal(W_SCALE·w)), last layer zero at init, for a w-conditioned student)
    down: conv_in, per level [ResBlock (+ Attention)] × n, then a resampling block
    middle: ResBlock, Attention, ResBlock
    up: per level [concat skip, ResBlock (+ Attention)] × (n + 1), then a resampling block
    out: GN, SiLU, conv (zero-initialised)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfgdiff.config import ModelConfig
from cfgdiff.nn.layers import Attention, Downsample, ResBlock, Stage, Upsample, sinusoidal_embedding, zero_init


# w enters like the noise level: Fourier (sinusoidal) features of c_w = W_SCALE·w, so the guidance
# weights of use (0 to ~10) span the embedding's frequencies as c_noise ∈ [0, 1000] does.
W_SCALE = 100.0


class UNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        ch, levels = cfg.model_channels, len(cfg.channel_mult)
        emb_dim = ch * cfg.emb_mult
        self.emb_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes > 0 else None
        # a distilled student's w input (Meng et al. 2023); zero at init: the student starts as its teacher
        self.w_mlp = (nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), zero_init(nn.Linear(emb_dim, emb_dim)))
                      if cfg.w_embedding else None)

        def res(cin: int, cout: int, resample: str | None = None) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, cfg.dropout, resample, cfg.norm_groups)

        def attn(width: int, size: int) -> list[nn.Module]:
            return [Attention(width, cfg.head_channels, cfg.norm_groups)] if size in cfg.attention_resolutions else []

        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, width, size = [ch], ch, cfg.resolution
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(Stage([res(width, ch * mult), *attn(ch * mult, size)]))
                width = ch * mult
                skips.append(width)
            if level != levels - 1:
                self.down.append(Stage([res(width, width, "down") if cfg.resblock_updown else Downsample(width)]))
                skips.append(width)
                size //= 2
        self.mid = Stage([res(width, width), Attention(width, cfg.head_channels, cfg.norm_groups), res(width, width)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(width + skips.pop(), ch * mult), *attn(ch * mult, size)]
                width = ch * mult
                if level and i == cfg.num_res_blocks:
                    layers.append(res(width, width, "up") if cfg.resblock_updown else Upsample(width))
                    size *= 2
                self.up.append(Stage(layers))
        self.norm_out = nn.GroupNorm(cfg.norm_groups, width)
        self.conv_out = zero_init(nn.Conv2d(width, cfg.out_channels, 3, padding=1))

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor, w: Tensor | None = None) -> Tensor:
        dtype = self.conv_in.weight.dtype
        emb = self.emb_mlp(sinusoidal_embedding(c_noise, self.cfg.model_channels).to(dtype))
        if self.label_emb is not None:
            emb = emb + self.label_emb(labels)
        if self.w_mlp is not None:
            if w is None:
                raise ValueError("this network takes the guidance weight w (model.w_embedding): pass w")
            emb = emb + self.w_mlp(sinusoidal_embedding(W_SCALE * w, self.cfg.model_channels).to(dtype))
        elif w is not None:
            raise ValueError("this network does not take w (model.w_embedding is off)")
        emb = F.silu(emb)  # the first op of every block's embedding projection
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down:
            h = stage(h, emb)
            skips.append(h)
        h = self.mid(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def build_unet(cfg: ModelConfig, device: torch.device | str = "cpu") -> UNet:
    """The network of `cfg`; on the "meta" device it allocates nothing (for counting)."""
    with torch.device(device):
        return UNet(cfg)


# The memory layout of a network that samples: channels_last on every device. cuDNN's and oneDNN's
# fast convolutions are NHWC; on a CPU (2 cores, AVX512-BF16) the `tiny` forward at 2B = 128 ran
# 1.5x faster in float32 and 1.2x in bf16 than NCHW, the outputs equal to float32 rounding (another
# summation order: |Δ| ≤ 5e-10 on a test net; bench/sampler_loop.py,
# docs/benchmarks.md). Training keeps NCHW on CPUs, where the backward gained nothing (0.94-1.11x).
SAMPLING_LAYOUT = torch.channels_last


def for_sampling(net: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """`net` on `device` in SAMPLING_LAYOUT, in eval mode and without gradients."""
    return net.to(device, memory_format=SAMPLING_LAYOUT).eval().requires_grad_(False)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def forward_flops(cfg: ModelConfig) -> int:
    """FLOPs of one image's forward pass (2 per multiply-add), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    net = build_unet(cfg, "meta")
    x = torch.empty(1, cfg.in_channels, cfg.resolution, cfg.resolution, device="meta")
    t = torch.empty(1, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        net(x, t, y)
    return int(counter.get_total_flops())
