"""Built-in data sets, generated procedurally: no download, and the same seed gives the same pixels.

`builtin:shapes` has ten classes, each a shape in its own colour family (a red disc, a blue
square, ...) on a smooth two-colour gradient background. Within a class the position, size,
rotation, hue, saturation, brightness, shading and background vary, so every class has real
diversity while classes stay visibly distinct. Edges are anti-aliased (one-pixel coverage ramp from
a signed distance), so the images are smooth enough for a tiny U-Net at 32×32 or 16×16.

Image i has label i mod K and parameters drawn from `default_rng([seed, i // CHUNK])`, so the first
N images are the same whatever --limit and however the work is split between processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cfgdiff.data.decode import Decoded, ImageSpec
from cfgdiff.data.sources import Member, Source, Task
from cfgdiff.errors import DataError

CHUNK = 256  # images per random stream and per task
DEFAULT_COUNT = 20_000

Sdf = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _box(x: np.ndarray, y: np.ndarray, half: float) -> np.ndarray:
    return np.maximum(np.abs(x), np.abs(y)) - half


def _disc(x: np.ndarray, y: np.ndarray, cx: float = 0.0, radius: float = 1.0) -> np.ndarray:
    return np.hypot(x - cx, y) - radius


def _bar(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A horizontal bar, half-length 0.95 and half-width 0.28 (two of them make the cross)."""
    return np.maximum(np.abs(x) - 0.95, np.abs(y) - 0.28)


def _triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # equilateral, circumradius 1: the inradius 1/2 along each of the three edge normals
    angles = [math.pi / 2 + 2 * math.pi / 3 * k for k in range(3)]  # python floats keep the grid float32
    return np.max([math.cos(a) * x + math.sin(a) * y for a in angles], axis=0) - 0.5


def _stripes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    period = 0.6
    return np.maximum(_box(x, y, 0.85), np.abs(x - period * np.round(x / period)) - period / 4)


def _checker(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(_box(x, y, 0.85), -np.sign(x * y) * np.minimum(np.abs(x), np.abs(y)))


# Signed distances of unit shapes (negative inside; one unit = the shape's radius)
SHAPE_SDF: dict[str, Sdf] = {
    "disc": _disc,
    "square": lambda x, y: _box(x, y, 0.8),
    "triangle": _triangle,
    "ring": lambda x, y: np.abs(np.hypot(x, y) - 0.75) - 0.22,
    "cross": lambda x, y: np.minimum(_bar(x, y), _bar(y, x)),
    "stripes": _stripes,
    "frame": lambda x, y: np.abs(_box(x, y, 0.68)) - 0.2,
    "crescent": lambda x, y: np.maximum(_disc(x, y), -_disc(x, y, cx=0.45, radius=0.8)),
    "checker": _checker,
    "pair": lambda x, y: np.minimum(_disc(x, y, cx=0.5, radius=0.45), _disc(x, y, cx=-0.5, radius=0.45)),
}


@dataclass(frozen=True)
class ShapeClass:
    """One class: a shape and the centre of its colour family in HSV."""

    shape: str
    colour: str
    hue: float
    sat: float
    val: float


SHAPES = (
    ShapeClass("disc", "red", 0.00, 0.85, 0.90),
    ShapeClass("square", "blue", 0.62, 0.80, 0.90),
    ShapeClass("triangle", "green", 0.33, 0.80, 0.80),
    ShapeClass("ring", "yellow", 0.15, 0.85, 0.95),
    ShapeClass("cross", "magenta", 0.85, 0.70, 0.90),
    ShapeClass("stripes", "cyan", 0.50, 0.80, 0.90),
    ShapeClass("frame", "orange", 0.07, 0.90, 0.95),
    ShapeClass("crescent", "white", 0.00, 0.05, 0.95),
    ShapeClass("checker", "violet", 0.75, 0.70, 0.85),
    ShapeClass("pair", "pink", 0.93, 0.50, 1.00),
)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] from hue (cycles), saturation and value in [0, 1] (the hexcone model)."""
    h6 = (h % 1.0) * 6
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return np.take_along_axis(table, i[None, ..., None], axis=0)[0]


@dataclass(frozen=True)
class ShapeParams:
    """Per-image parameters of one chunk, each an array of length CHUNK."""

    labels: np.ndarray
    centre: np.ndarray  # (n, 2) in [-1, 1] image coordinates
    radius: np.ndarray
    angle: np.ndarray
    fg_hsv: np.ndarray  # (n, 3)
    bg_hsv: np.ndarray  # (n, 2, 3): the gradient's two ends
    bg_angle: np.ndarray
    light: np.ndarray  # shading direction


def chunk_params(seed: int, chunk: int, num_classes: int) -> ShapeParams:
    """The parameters of images chunk·CHUNK … (chunk+1)·CHUNK − 1, from their own random stream."""
    rng = np.random.default_rng([seed, chunk])
    n = CHUNK
    labels = (chunk * CHUNK + np.arange(n)) % num_classes
    family = np.array([[c.hue, c.sat, c.val] for c in SHAPES])[labels]
    jitter = np.stack([rng.uniform(-0.03, 0.03, n), rng.uniform(-0.12, 0.12, n), rng.uniform(-0.15, 0.05, n)], -1)
    fg = family + jitter
    fg[:, 1:] = fg[:, 1:].clip(0, 1)
    bg_h = rng.uniform(0, 1, n)[:, None] + rng.uniform(-0.12, 0.12, (n, 2))
    bg = np.stack([bg_h, rng.uniform(0.0, 0.35, (n, 2)), rng.uniform(0.12, 0.5, (n, 2))], -1)
    return ShapeParams(
        labels=labels,
        centre=rng.uniform(-0.25, 0.25, (n, 2)),
        radius=rng.uniform(0.42, 0.62, n),
        angle=rng.uniform(0, 2 * np.pi, n),
        fg_hsv=fg,
        bg_hsv=bg,
        bg_angle=rng.uniform(0, 2 * np.pi, n),
        light=rng.uniform(0, 2 * np.pi, n),
    )


def _per_image(a: np.ndarray) -> np.ndarray:
    """(n,) or (n, C) float64 parameters -> float32 broadcastable against (n, S, S[, C])."""
    a = a.astype(np.float32)
    return a[:, None, None] if a.ndim == 1 else a[:, None, None, :]


def render(p: ShapeParams, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 images of the parameters `p`.

    float32 on the (n, S, S) grids (this is the generator's whole cost); trigonometry only on the
    float64 per-image parameters, so the pixels do not depend on a SIMD implementation of sin/cos.
    """
    u = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)  # pixel centres in [-1, 1]
    X, Y = u[None, None, :], u[None, :, None]  # (1, 1, S) columns, (1, S, 1) rows
    dx, dy = X - _per_image(p.centre[:, 0]), Y - _per_image(p.centre[:, 1])
    cos, sin = _per_image(np.cos(p.angle) / p.radius), _per_image(np.sin(p.angle) / p.radius)
    x, y = cos * dx + sin * dy, cos * dy - sin * dx  # (n, S, S) in the shape's frame, radius 1
    d = np.empty_like(x)
    for k, cls in enumerate(SHAPES):
        sel = np.flatnonzero(p.labels == k)
        if sel.size:
            d[sel] = SHAPE_SDF[cls.shape](x[sel], y[sel])
    # signed distance in pixels -> coverage in [0, 1] over a one-pixel ramp (anti-aliasing)
    coverage = np.clip(0.5 - d * _per_image(p.radius * size / 2), 0, 1)[..., None]
    g = (_per_image(np.cos(p.bg_angle) / 3) * X + _per_image(np.sin(p.bg_angle) / 3) * Y + 0.5)[..., None]
    ends = hsv_to_rgb(p.bg_hsv[..., 0], p.bg_hsv[..., 1], p.bg_hsv[..., 2])  # (n, 2, 3): the gradient's ends
    bg = _per_image(ends[:, 0]) + g * _per_image(ends[:, 1] - ends[:, 0])
    shade = 1 + _per_image(0.15 * np.cos(p.light)) * x + _per_image(0.15 * np.sin(p.light)) * y  # soft light
    fg = np.minimum(_per_image(hsv_to_rgb(p.fg_hsv[:, 0], p.fg_hsv[:, 1], p.fg_hsv[:, 2])) * shade[..., None], 1)
    rgb = bg + coverage * (fg - bg)
    return (rgb * 255 + 0.5).astype(np.uint8)  # values are >= 0, so truncation rounds half up


@dataclass(frozen=True)
class ShapesBatch:
    """A task: images [lo, hi) of one chunk of builtin:shapes."""

    seed: int
    chunk: int
    lo: int
    hi: int
    num_classes: int
    spec: ImageSpec

    def run(self) -> Decoded:
        images = render(chunk_params(self.seed, self.chunk, self.num_classes), self.spec.size)[self.lo : self.hi]
        return Decoded(images, [""] * len(images))


class ShapesSource(Source):
    """builtin:shapes: `count` images of the first `classes` classes, labels i mod classes."""

    kind = "builtin"

    def __init__(self, count: int, classes: int, seed: int):
        if not 1 <= classes <= len(SHAPES):
            raise DataError(f"builtin:shapes has {len(SHAPES)} classes; --classes {classes} is out of range")
        members = [Member(f"shapes/{i:06d}", i % classes, i) for i in range(count)]
        ids = [c.shape for c in SHAPES[:classes]]
        names = [f"{c.colour} {c.shape}" for c in SHAPES[:classes]]
        super().__init__("shapes", ids, names, members, label_order="builtin (image i has label i mod K)")
        self.seed, self.num_classes = seed, classes

    def tasks(self, parts: Sequence[Sequence[Member]], spec: ImageSpec) -> Iterator[Task]:
        for members in parts:
            i, end = members[0].ref, members[-1].ref + 1  # builtin members are consecutive indices
            while i < end:
                chunk = i // CHUNK
                hi = min(end, (chunk + 1) * CHUNK)
                yield ShapesBatch(self.seed, chunk, i - chunk * CHUNK, hi - chunk * CHUNK, self.num_classes, spec)
                i = hi


BUILTINS = {"shapes": ShapesSource}
