"""Parsing of seed ranges (`0-49999,7`) and guidance grids (`0:5:0.1` or `0,0.5,1`).

Grids are parsed with decimal arithmetic, so `0:5:0.1` is exactly the 51 values 0.0, 0.1, …, 5.0
with no float drift (0.30000000000000004 never appears) and an inclusive stop.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from cfgdiff.errors import ConfigError

MAX_SEED = 2**63 - 1  # seeds are stored as int64 in the samples' metadata and parts


def parse_seeds(text: str) -> list[int]:
    """`"0-3,10"` -> [0, 1, 2, 3, 10]. Ranges are inclusive; seeds must be distinct and >= 0."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ConfigError(f"seeds {text!r}: empty item")
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ConfigError(f"seeds {text!r}: {part!r} is not an integer or a range a-b") from None
        if a < 0 or b < a:
            raise ConfigError(f"seeds {text!r}: {part!r} must be an increasing range of non-negative integers")
        if b > MAX_SEED:
            raise ConfigError(f"seeds {text!r}: {part!r} is above the largest seed {MAX_SEED} (int64, as recorded)")
        seeds.extend(range(a, b + 1))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {text!r}: a seed appears twice")
    return seeds


def _decimal(text: str, whole: str) -> Decimal:
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(f"guidance grid {whole!r}: {text.strip()!r} is not a number") from None
    if not d.is_finite():
        raise ConfigError(f"guidance grid {whole!r}: {text.strip()!r} is not finite")
    return d


def parse_grid(text: str) -> list[float]:
    """`"start:stop:step"` (inclusive stop) or a comma list -> sorted distinct w values >= 0."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ConfigError(f"guidance grid {text!r}: use start:stop:step (e.g. 0:5:0.1) or a comma list")
        start, stop, step = (_decimal(p, text) for p in parts)
        if step <= 0:
            raise ConfigError(f"guidance grid {text!r}: step must be positive")
        if stop < start:
            raise ConfigError(f"guidance grid {text!r}: stop is below start")
        n = int((stop - start) / step)  # exact in Decimal
        values = [start + i * step for i in range(n + 1)]
    else:
        values = [_decimal(p, text) for p in text.split(",") if p.strip()]
        if not values:
            raise ConfigError(f"guidance grid {text!r}: no values")
    out = sorted({float(v) for v in values})
    if any(v < 0 or not math.isfinite(v) for v in out):
        raise ConfigError(f"guidance grid {text!r}: w must be >= 0 (w = 0 is the plain conditional model)")
    return out
