"""Downsampling a whole RGB image to size × size: area, Pillow's box, and ADM's centre crop.

`area` is the exact area (fractional-coverage) mean: every output pixel is the mean of the input
area it covers, with fractional weights for the pixels cut by the cell edges; the semantics of
TensorFlow's `method="area"` and OpenCV's `INTER_AREA`. It is computed exactly in integer
arithmetic and rounded half up, so an image whose sides are multiples of the size gives exactly the
rounded block means.

`box` is Pillow's `Image.resize((size, size), Image.BOX)`, bit for bit: what Chrabaszcz et al.
2017 ran (`image_resizer_imagent.py`, after `convert("RGB")`) to make the downsampled ImageNet
(Imagenet64_*.npz, TFDS `imagenet_resized`). It differs from `area` mainly because Pillow's box
takes each source pixel whole, into the one output cell that holds its centre (a pixel cut by a
cell edge counts fully on one side, not in part on both), and only slightly through its fixed-point
weights and 8-bit result between the horizontal and vertical passes. When the sides are multiples
of the size, no pixel is cut and the two agree up to that rounding.

`center-crop-adm` is ADM's `center_crop_arr` (openai/guided-diffusion,
`guided_diffusion/image_datasets.py`), which ADM and EDM2 trained on.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

try:  # the same numbers in C, 5-8x faster (cfgdiff/data/_area.c); absent where the install had no compiler
    from cfgdiff.data import _area
except ImportError:  # pragma: no cover - the numpy form below is then the only one
    _area = None


def _area_sums(a: np.ndarray, n_out: int, axis: int, dtype: type) -> np.ndarray:
    """n_in × the area means of `a` over n_out equal cells along `axis`, as exact integers.

    Cell j covers [j·n_in/n_out, (j+1)·n_in/n_out) in input pixels. Measured in units of 1/n_out
    pixel its edges are the integers b = j·n_in = q·n_out + r, so n_out × (the area-weighted sum)
    is n_out·Σ a[q_j : q_{j+1}] − r_j·a[q_j] + r_{j+1}·a[q_{j+1}], and each cell's weights sum to n_in.
    """
    n_in = a.shape[axis]
    q, r = np.divmod(np.arange(n_out + 1, dtype=np.int64) * n_in, n_out)
    start, lengths = q[:-1], q[1:] - q[:-1]  # whole pixels per cell: ⌊n_in/n_out⌋ or one more (0 upsampling)
    # Σ a[q_j : q_{j+1}] as a few gathers of whole rows, accumulated in place: 6x faster than
    # np.add.reduceat, and few large temporaries (fresh pages are what such small images cost).
    # 8-bit pixels are summed in uint16 while a cell's sum fits (≤ 257 whole pixels): 5x faster
    # than widening every gather to int32.
    narrow = a.dtype == np.uint8 and int(lengths.max()) * 255 <= np.iinfo(np.uint16).max
    shape = list(a.shape)
    shape[axis] = n_out
    acc = np.zeros(shape, dtype=np.uint16 if narrow else dtype)
    for t in range(int(lengths.max())):
        cells = np.flatnonzero(lengths > t)
        if cells.size == n_out:
            acc += np.take(a, start + t, axis=axis)
        else:
            index = [slice(None)] * a.ndim
            index[axis] = cells
            acc[tuple(index)] += np.take(a, start[cells] + t, axis=axis)
    acc = acc.astype(dtype, copy=False)
    acc *= n_out
    weights = (1,) * axis + (-1,) + (1,) * (a.ndim - axis - 1)
    # the fractions of each cell's first pixel, taken off, and of the next one, added (r = 0 at the end)
    acc -= np.take(a, start, axis=axis) * r[:-1].astype(dtype).reshape(weights)
    acc += np.take(a, np.minimum(q[1:], n_in - 1), axis=axis) * r[1:].astype(dtype).reshape(weights)
    return acc


def area_resize(a: np.ndarray, size: int) -> np.ndarray:
    """The exact area (box) resize of an (H, W, C) uint8 image to (size, size, C), rounded half up."""
    h, w = a.shape[:2]
    if h == size and w == size:
        return np.ascontiguousarray(a)
    if _area is not None and a.dtype == np.uint8 and a.ndim == 3:
        out = np.empty((size, size, a.shape[2]), dtype=np.uint8)
        _area.resize(np.ascontiguousarray(a), h, w, a.shape[2], size, out)
        return out
    return area_resize_numpy(a, size)


def area_resize_numpy(a: np.ndarray, size: int) -> np.ndarray:
    """area_resize in numpy: any integer dtype and rank (H, W[, C]); the C kernel's oracle in the tests."""
    h, w = a.shape[:2]
    if h == size and w == size:
        return np.ascontiguousarray(a)
    # the first pass's values are at most 255·(h + size), the second's 255·(h + size)·(w + size)
    wide = np.int32 if 255 * (h + size) * (w + size) < 2**31 else np.int64
    rows = _area_sums(a, size, 0, np.int32)  # (size, w, C)
    both = _area_sums(rows, size, 1, wide)  # (size, size, C)
    den = h * w  # each value is h·w × its area mean
    return ((2 * both + den) // (2 * den)).astype(np.uint8)


def adm_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """ADM's centre crop of an RGB image (guided-diffusion `center_crop_arr`), as (size, size, 3) uint8.

    Halve with a box filter while the short side is at least 2·size, resize with bicubic so the short
    side is `size` (the long side rounded), then take the central size × size window.
    """
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), resample=Image.Resampling.BICUBIC)
    a = np.asarray(img)
    top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
    return np.ascontiguousarray(a[top : top + size, left : left + size])


FAST_RESIZES = ("area", "box")  # the methods that take a decoded array as well as a PIL image


def resize_array(a: np.ndarray, size: int, method: str) -> np.ndarray:
    """An (H, W, 3) uint8 array resized by `method` (one of FAST_RESIZES), as resize_rgb would."""
    if method == "area":
        return area_resize(a, size)
    if method == "box":
        return np.asarray(Image.fromarray(a).resize((size, size), resample=Image.Resampling.BOX))
    raise ValueError(f"resize_array takes {', '.join(FAST_RESIZES)}, not {method!r}")


def resize_rgb(img: Image.Image, size: int, method: str) -> np.ndarray:
    """An RGB PIL image resized by `method` (one of config.RESIZE_METHODS, which PrepareConfig checks) to a
    (size, size, 3) uint8 array."""
    if method == "area":
        return area_resize(np.asarray(img), size)
    if method == "center-crop-adm":
        return adm_center_crop(img, size)
    if method == "box":
        return np.asarray(img.resize((size, size), resample=Image.Resampling.BOX))
    raise ValueError(f"unknown resize method {method!r}")
