"""The FID Inception-v3: TF's inception-2015-12-05 graph as a PyTorch module, in the project's own code.

This is the network every published FID/IS is computed with (TTUR, ADM's evaluator, StyleGAN/EDM's
TorchScript export). It differs from torchvision's Inception-v3 in four places:

- batch norm has no learned scale, only a shift `beta`, and eps = 1e-3;
- the average pools of the A, C and first E blocks exclude the zero padding (TF's AvgPool);
- the last E block (`mixed_10`) pools its fourth branch with a max pool;
- the head is a 1008-way linear layer; IS uses its weight without the bias (ADM's evaluator).

Module and buffer names follow the TF graph as NVIDIA's TorchScript export spells them (`conv`,
`conv_1`, ..., `mixed`, `mixed_1`, ..., `mixed_10`, `tower`, `tower_1`, ...), so the TF tensor
`mixed_6/conv` used by sFID is the module `mixed_6.conv` here. `cfgdiff.metrics.weights` maps the other
weight files' names onto these.

Input: float32 (B, 3, 299, 299) already scaled to (x - 128) / 128 (see `cfgdiff.metrics.resize`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

POOL_DIM = 2048  # pool_3
NUM_LOGITS = 1008  # softmax/logits
SPATIAL_CHANNELS = 7  # ADM's sFID keeps mixed_6/conv[..., :7]
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS  # 2023
BN_EPS = 1e-3


class Features(NamedTuple):
    """Detector outputs for a batch of B images (float32)."""

    pool: torch.Tensor  # (B, 2048) pool_3
    logits: torch.Tensor | None  # (B, 1008) pool_3 @ W^T, no bias; None without the head
    spatial: torch.Tensor  # (B, 2023) mixed_6/conv[..., :7] flattened in TF's NHWC order


class ConvBN(nn.Module):
    """TF's conv -> batch norm (shift only, eps 1e-3) -> ReLU; buffers named as NVIDIA's export."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride, self.padding = stride, padding
        self.register_buffer("weight", torch.zeros(cout, cin, kh, kw))
        self.register_buffer("beta", torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)
        x = F.batch_norm(x, self.mean, self.var, weight=None, bias=self.beta, training=False, eps=BN_EPS)
        return F.relu(x)


def _tower(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def _avg_pool() -> nn.AvgPool2d:
    # TF's 3x3 'SAME' average pool divides by the number of real pixels, not by 9.
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


def _conv_seq(cin: int, specs: list[tuple[int, tuple[int, int], tuple[int, int], int]]) -> nn.Sequential:
    """A tower of ConvBN named conv, conv_1, ...; spec = (cout, kernel, padding, stride)."""
    layers = []
    for i, (cout, kernel, padding, stride) in enumerate(specs):
        layers.append(("conv" if i == 0 else f"conv_{i}", ConvBN(cin, cout, kernel, stride, padding)))
        cin = cout
    return _tower(*layers)


ONE, THREE, FIVE = (1, 1), (3, 3), (5, 5)
ROW7, COL7, ROW3, COL3 = (1, 7), (7, 1), (1, 3), (3, 1)
NOPAD, PAD1, PAD2 = (0, 0), (1, 1), (2, 2)
PAD_ROW7, PAD_COL7, PAD_ROW3, PAD_COL3 = (0, 3), (3, 0), (0, 1), (1, 0)


class _FourTowers(nn.Module):
    """The A and C blocks' shape: a 1x1 conv, two conv towers and an avg-pool tower, concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class BlockA(_FourTowers):
    """mixed, mixed_1, mixed_2 (torchvision Mixed_5b/c/d): 1x1, 5x5, double 3x3, avg-pool branches."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.conv = ConvBN(cin, 64, 1)
        self.tower = _conv_seq(cin, [(48, ONE, NOPAD, 1), (64, FIVE, PAD2, 1)])
        self.tower_1 = _conv_seq(cin, [(64, ONE, NOPAD, 1), (96, THREE, PAD1, 1), (96, THREE, PAD1, 1)])
        self.tower_2 = _tower(("pool", _avg_pool()), ("conv", ConvBN(cin, pool_features, 1)))


class BlockB(nn.Module):
    """mixed_3 (Mixed_6a): the 35 -> 17 grid reduction."""

    def __init__(self, cin: int):
        super().__init__()
        self.conv = ConvBN(cin, 384, 3, stride=2)
        self.tower = _conv_seq(cin, [(64, ONE, NOPAD, 1), (96, THREE, PAD1, 1), (96, THREE, NOPAD, 2)])
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], 1)


class BlockC(_FourTowers):
    """mixed_4 .. mixed_7 (Mixed_6b..e): factorised 7x7 branches; channel 0..191 is `conv` (sFID)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.conv = ConvBN(cin, 192, 1)
        self.tower = _conv_seq(cin, [(c7, ONE, NOPAD, 1), (c7, ROW7, PAD_ROW7, 1), (192, COL7, PAD_COL7, 1)])
        self.tower_1 = _conv_seq(cin, [(c7, ONE, NOPAD, 1), (c7, COL7, PAD_COL7, 1), (c7, ROW7, PAD_ROW7, 1),
                                       (c7, COL7, PAD_COL7, 1), (192, ROW7, PAD_ROW7, 1)])
        self.tower_2 = _tower(("pool", _avg_pool()), ("conv", ConvBN(cin, 192, 1)))


class BlockD(nn.Module):
    """mixed_8 (Mixed_7a): the 17 -> 8 grid reduction."""

    def __init__(self, cin: int):
        super().__init__()
        self.tower = _conv_seq(cin, [(192, ONE, NOPAD, 1), (320, THREE, NOPAD, 2)])
        self.tower_1 = _conv_seq(cin, [(192, ONE, NOPAD, 1), (192, ROW7, PAD_ROW7, 1), (192, COL7, PAD_COL7, 1),
                                       (192, THREE, NOPAD, 2)])
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), self.pool(x)], 1)


class BlockE(nn.Module):
    """mixed_9 (avg pool, Mixed_7b) and mixed_10 (max pool, Mixed_7c): expanded 3x3 branches."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.conv = ConvBN(cin, 320, 1)
        self.tower_conv = ConvBN(cin, 384, 1)
        self.tower_mixed_conv = ConvBN(384, 384, ROW3, padding=PAD_ROW3)
        self.tower_mixed_conv_1 = ConvBN(384, 384, COL3, padding=PAD_COL3)
        self.tower_1_conv = ConvBN(cin, 448, 1)
        self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBN(384, 384, ROW3, padding=PAD_ROW3)
        self.tower_1_mixed_conv_1 = ConvBN(384, 384, COL3, padding=PAD_COL3)
        # The TF graph's last block max-pools here (a quirk of inception-2015-12-05 that FID keeps).
        self.tower_2_pool = nn.MaxPool2d(3, stride=1, padding=1) if max_pool else _avg_pool()
        self.tower_2_conv = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([
            self.conv(x),
            self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
            self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
            self.tower_2_conv(self.tower_2_pool(x)),
        ], 1)


class FIDInception(nn.Module):
    """Inception-v3 of TF's inception-2015-12-05 graph, returning pool_3, the unbiased logits and sFID features.

    `with_head=False` builds the features-only network (no `output` layer): IS is then unavailable.
    """

    def __init__(self, with_head: bool = True):
        super().__init__()
        self.conv = ConvBN(3, 32, 3, stride=2)
        self.conv_1 = ConvBN(32, 32, 3)
        self.conv_2 = ConvBN(32, 64, 3, padding=1)
        self.pool0 = nn.MaxPool2d(3, stride=2)
        self.conv_3 = ConvBN(64, 80, 1)
        self.conv_4 = ConvBN(80, 192, 3)
        self.pool1 = nn.MaxPool2d(3, stride=2)
        self.mixed = BlockA(192, 32)
        self.mixed_1 = BlockA(256, 64)
        self.mixed_2 = BlockA(288, 64)
        self.mixed_3 = BlockB(288)
        self.mixed_4 = BlockC(768, 128)
        self.mixed_5 = BlockC(768, 160)
        self.mixed_6 = BlockC(768, 160)
        self.mixed_7 = BlockC(768, 192)
        self.mixed_8 = BlockD(768)
        self.mixed_9 = BlockE(1280, max_pool=False)
        self.mixed_10 = BlockE(2048, max_pool=True)
        self.output = nn.Linear(POOL_DIM, NUM_LOGITS, bias=False) if with_head else None
        self.requires_grad_(False)
        self.eval()

    @property
    def has_logits(self) -> bool:
        return self.output is not None

    def forward(self, x: torch.Tensor) -> Features:
        """x: (B, 3, 299, 299) float32 in TF's input scaling (x - 128) / 128."""
        for stem in (self.conv, self.conv_1, self.conv_2, self.pool0, self.conv_3, self.conv_4, self.pool1):
            x = stem(x)
        for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4, self.mixed_5):
            x = block(x)
        x = self.mixed_6(x)  # (B, 768, 17, 17); channels 0..191 are mixed_6/conv
        spatial = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(x.shape[0], SPATIAL_DIM)  # TF is NHWC
        for block in (self.mixed_7, self.mixed_8, self.mixed_9, self.mixed_10):
            x = block(x)
        pool = x.mean(dim=(2, 3))  # pool_3: 8x8 average pool -> (B, 2048)
        logits = F.linear(pool, self.output.weight) if self.output is not None else None
        return Features(pool, logits, spatial)
