"""The layers of ADM's U-Net (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", Sec. 3 and App. A).

Every layer takes `(x, emb)` so that a stage of the U-Net is a plain sequence; only residual blocks
use the embedding. `emb` arrives already passed through SiLU: each of ADM's blocks starts its
embedding projection with SiLU, so the U-Net applies it once for all of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[cos(t·f_k), sin(t·f_k)] with f_k = max_period^(−k/(dim/2)): the Transformer position code
    of a real-valued t (B,), as ADM's `timestep_embedding`. Returns (B, dim) float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters, so a residual branch starts as the identity (ADM's `zero_module`)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _resample(x: Tensor, mode: str | None) -> Tensor:
    if mode == "down":
        return F.avg_pool2d(x, 2)
    if mode == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return x


class ResBlock(nn.Module):
    """Residual block with scale-shift norm: h = conv(SiLU(GN(x))); h = GN(h)·(1 + scale) + shift,
    with (scale, shift) = Linear(emb); out = skip(x) + conv₀(Dropout(SiLU(h))) where conv₀ starts at 0.

    With `resample` = "down"/"up" it is BigGAN's residual resampling block (Brock et al. 2019): both
    paths are average-pooled / nearest-upsampled after the first norm and activation.
    """

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, resample: str | None = None,
                 groups: int = 32):
        super().__init__()
        self.resample = resample
        self.norm0 = nn.GroupNorm(groups, cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm1 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = zero_init(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = F.silu(self.norm0(x))
        h = self.conv0(_resample(h, self.resample))
        x = _resample(x, self.resample)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        h = torch.addcmul(shift, self.norm1(h), 1 + scale)  # scale-shift norm
        h = self.conv1(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions, heads of `head_channels` channels, with a
    residual connection; q, k, v are split before the heads (ADM's "new attention order").

    The projections are Linear layers on (B, L, C) (ADM: 1×1 convolutions, the same parameters):
    CPU 1×1 convolutions take a slow im2col path, and (B, L, C) gives q, k, v with contiguous head
    channels, which the fused (flash) SDPA kernels need.
    """

    def __init__(self, channels: int, head_channels: int, groups: int = 32):
        super().__init__()
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).flatten(2).transpose(1, 2))  # (B, L, 3C)
        q, k, v = qkv.reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, heads, L, d)
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ/√d)·v
        out = self.proj(a.transpose(1, 2).reshape(b, h * w, c))  # (B, L, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """A 3×3 convolution with stride 2 (DDPM's resampling, when BigGAN blocks are off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 followed by a 3×3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(_resample(x, "up"))


class Stage(nn.ModuleList):
    """A sequence of layers that all take (x, emb)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, emb)
        return x
