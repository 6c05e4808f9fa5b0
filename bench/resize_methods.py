"""How far `--resize area` and `--resize box` lie from the exact area mean, and from each other, on photos.

    .venv/bin/python bench/resize_methods.py --crops 300 PHOTO.jpg [PHOTO.jpg ...]

Each photo is used whole and as random crops (sides 200-500 px, about ImageNet's); every image is
resized to 64² and 32² by `area`, by `box` (Pillow's BOX) and by a float64 fractional-coverage
reference (coverage matrices, no rounding); the script prints mean and max absolute differences in
uint8 levels. The figures in docs/prepare.md come from this script.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from cfgdiff.data.resize import resize_rgb


def coverage(n: int, size: int) -> np.ndarray:
    """(size, n): the share of input pixel i in output cell j (rows sum to 1)."""
    edges = np.arange(size + 1) * n / size
    lo, hi = np.maximum(edges[:-1, None], np.arange(n)), np.minimum(edges[1:, None], np.arange(n) + 1)
    return np.clip(hi - lo, 0, None) * size / n


def float_area(a: np.ndarray, size: int) -> np.ndarray:
    ch, cw = coverage(a.shape[0], size), coverage(a.shape[1], size)
    rows = np.tensordot(ch, a.astype(np.float64), axes=(1, 0))  # (size, w, 3)
    return np.tensordot(rows, cw, axes=(1, 1)).transpose(0, 2, 1)  # (size, size, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="+")
    ap.add_argument("--crops", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    photos = [Image.open(p).convert("RGB") for p in args.photos]
    images = list(photos)
    for _ in range(args.crops):
        p = photos[rng.integers(len(photos))]
        w, h = (int(rng.integers(200, min(500, s) + 1)) for s in p.size)
        x, y = int(rng.integers(0, p.width - w + 1)), int(rng.integers(0, p.height - h + 1))
        images.append(p.crop((x, y, x + w, y + h)))
    print(f"{len(images)} images: {len(photos)} photos ({', '.join(f'{p.width}x{p.height}' for p in photos)}) "
          f"and {args.crops} crops of 200-500 px")
    for size in (64, 32):
        diffs: dict[str, list[np.ndarray]] = {"area - exact": [], "box - exact": [], "box - area": []}
        for img in images:
            ref = float_area(np.asarray(img), size)
            area, box = (resize_rgb(img, size, m).astype(np.float64) for m in ("area", "box"))
            diffs["area - exact"].append(np.abs(area - ref))
            diffs["box - exact"].append(np.abs(box - ref))
            diffs["box - area"].append(np.abs(box - area))
        for name, d in diffs.items():
            d = np.concatenate([x.ravel() for x in d])
            print(f"{size}²  {name:13s} mean {d.mean():.3f}  p99 {np.percentile(d, 99):.1f}  max {d.max():.1f}")


if __name__ == "__main__":
    main()
