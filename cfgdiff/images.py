"""Images in and out: float tensors in [−1, 1] to uint8, and uint8 images tiled into one PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cfgdiff.files import Owner, atomic_write


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [−1, 1] → (N, H, W, C) uint8: round(127.5·(x + 1)), clipped to [0, 255]."""
    y = ((x.detach().double() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return y.permute(0, 2, 3, 1).cpu().numpy()


def tile(images: np.ndarray, ncols: int) -> np.ndarray:
    """(N, H, W, C) uint8 → one (rows·H, ncols·W, C) image, row-major; empty cells are black."""
    n, h, w, c = images.shape
    rows = math.ceil(n / ncols)
    canvas = np.zeros((rows * ncols, h, w, c), dtype=np.uint8)
    canvas[:n] = images
    return canvas.reshape(rows, ncols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, ncols * w, c)


def save_grid(images: np.ndarray, path: str | Path, ncols: int, owner: Owner | None = None) -> Path:
    """Tile (N, H, W, C) uint8 images into a PNG at `path`, written atomically."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected (N, H, W, 1|3) uint8 images, got {images.dtype} {images.shape}")
    grid = tile(images, max(1, ncols))
    path = Path(path)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    atomic_write(path, lambda f: picture.save(f, format="PNG"), owner=owner)
    return path
