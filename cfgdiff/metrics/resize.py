"""The Inception input pipeline of TF's graph: uint8 NHWC -> TF1 `resize_bilinear` to 299x299 -> (x - 128) / 128.

TF1 `tf.image.resize_bilinear(align_corners=False)` (no half-pixel centres, the op inside the
inception-2015-12-05 graph and the one TTUR/ADM feed) samples output pixel i at source coordinate
`i * in / out`, computed in float32 (TF's `CalculateResizeScale`, `compute_interpolation_weights` in
`resize_bilinear_op.cc`), interpolating between floor and floor + 1 clamped to the last pixel. There is
no antialiasing when downsampling. torch's `F.interpolate(align_corners=False)` uses half-pixel
centres instead, which shifts the image by half a pixel; that is why pytorch-fid's features differ.

Bilinear resizing is separable, so it is two small matrix products: out = Wy @ img @ Wx^T.
"""

from __future__ import annotations

import numpy as np
import torch

INCEPTION_SIZE = 299


def tf1_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 interpolation matrix of TF1 resize_bilinear along one axis."""
    scale = np.float32(n_in) / np.float32(n_out)  # float32 like TF
    src = np.arange(n_out, dtype=np.float32) * scale  # (n_out,) float32 products, as TF computes them
    lower = np.floor(src).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    lerp = src - lower.astype(np.float32)
    w = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    np.add.at(w, (rows, lower), 1.0 - lerp)
    np.add.at(w, (rows, upper), lerp)  # upper == lower at the last pixel: the weights sum to 1 there too
    return w


def tf1_resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize float (B, C, H, W) to (B, C, *size) like TF1 resize_bilinear(align_corners=False)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    wy = torch.from_numpy(tf1_bilinear_matrix(h, size[0])).to(x.device, x.dtype)  # (H', H)
    wx = torch.from_numpy(tf1_bilinear_matrix(w, size[1])).to(x.device, x.dtype)  # (W', W)
    return torch.einsum("yh,bchw,xw->bcyx", wy, x, wx)


def inception_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) on any device -> float32 (B, 3, 299, 299) scaled to [-1, 1)."""
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    x = tf1_resize_bilinear(x, (INCEPTION_SIZE, INCEPTION_SIZE))
    return (x - 128.0) / 128.0
