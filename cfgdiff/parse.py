"""Option values from text: seed ranges, guidance grids, λ intervals and `--set KEY=VALUE`.

Standard library only, so the CLI checks every value in its option callbacks, before any model
loads. Each parser returns the documented value or raises ConfigError (one line; exit 2), and none
allocates more than its stated bound, whatever the text:

    seeds      "0-49999,7"        ranges of non-negative int64 seeds, inclusive, no seed twice,
                                  at most MAX_SEEDS in all (kept as `range`s, never expanded)
    grid       "0:5:0.1", "0,1,4" start:stop:step with an inclusive stop, or a comma list; exact
                                  decimal arithmetic (0.3, never 0.30000000000000004); every w
                                  finite and >= 0; at most MAX_GRID values
    interval   "-5:2.5"           LO:HI with LO < HI, both finite
    set        "model.dropout=0.1"  a config key (as in config.json, nested with a dot) and a JSON
                                  value (numbers, true/false, [1,2,2]; anything else is a string);
                                  NaN and infinities are refused

Numbers are written as decimals: an optional sign, digits with an optional point, an optional
exponent (`1e-3`); "inf", "nan" and `1e400` (beyond a float) are not finite.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from fractions import Fraction
from itertools import chain, islice
from typing import Any

from cfgdiff.errors import ConfigError

MAX_SEED = 2**63 - 1  # seeds are int64 in the part files and in torch generators
MAX_SEEDS = 10**8  # seeds one --seeds may name
MAX_GRID = 10**4  # w values one grid may hold

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)
_SEED_ITEM = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+))?")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


# ---- numbers and guidance weights ----------------------------------------------------------------------------------
def _decimal(text: str, what: str) -> Decimal:
    """`text` as an exact Decimal that is finite as a float, or ConfigError naming `what`."""
    text = text.strip()
    if _NOT_FINITE.fullmatch(text):
        raise ConfigError(f"{what}: {text!r} is not finite")
    if not _NUMBER.fullmatch(text):
        raise ConfigError(f"{what}: {text!r} is not a number")
    d = Decimal(text)
    f = float(d)
    if not math.isfinite(f):
        raise ConfigError(f"{what}: {text!r} is not finite (beyond the float range)")
    if f == 0 and d != 0:
        raise ConfigError(f"{what}: {text!r} rounds to 0 as a float; write 0")
    return d


def parse_number(text: str, what: str = "number") -> float:
    """A finite float written as a decimal (see the module docstring)."""
    return float(_decimal(text, what))


def check_w(w: float) -> float:
    """The rule for a guidance weight (Eq. 6): finite and >= 0. Returns w."""
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise ConfigError(f"w must be a number, got {w!r}")
    if not math.isfinite(w):
        raise ConfigError(f"w must be finite, got {w}")
    if w < 0:
        raise ConfigError(f"w must be >= 0 (w = 0 is the plain conditional model), got {w:g}")
    return w


# ---- seeds --------------------------------------------------------------------------------------------------------
def parse_seeds(text: str) -> tuple[range, ...]:
    """`"0-3,10"` -> (range(0, 4), range(10, 11)): inclusive ranges in the order given.

    Seeds are integers in [0, MAX_SEED]; no seed may appear twice; MAX_SEEDS at most in all.
    """
    what = f"seeds {text!r}" if len(text) <= 60 else f"seeds {text[:57]!r}..."
    ranges: list[range] = []
    total = 0
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ConfigError(f"{what}: empty item")
        m = _SEED_ITEM.fullmatch(part)
        if m is None:
            raise ConfigError(f"{what}: {part!r} is not a non-negative integer or a range a-b")
        ends = [g.lstrip("0") or "0" for g in m.groups() if g is not None]
        if any(len(g) > 19 or int(g) > MAX_SEED for g in ends):  # 19 digits at most: int() stays cheap
            raise ConfigError(f"{what}: {part!r} is above {MAX_SEED} (seeds are int64)")
        a, b = int(ends[0]), int(ends[-1])
        if b < a:
            raise ConfigError(f"{what}: {part!r} is a decreasing range; write it as {b}-{a}")
        total += b - a + 1
        if total > MAX_SEEDS:
            raise ConfigError(f"{what}: more than {MAX_SEEDS:,} seeds")
        ranges.append(range(a, b + 1))
    ordered = sorted(ranges, key=lambda r: r.start)
    for prev, cur in zip(ordered, ordered[1:]):
        if cur.start < prev.stop:
            raise ConfigError(f"{what}: seed {cur.start} appears twice")
    return tuple(ranges)


def count_seeds(ranges: tuple[range, ...]) -> int:
    return sum(r.stop - r.start for r in ranges)


def first_seeds(ranges: tuple[range, ...], n: int) -> list[int]:
    """The first n seeds of `ranges`, in order (only these are materialised)."""
    return list(islice(chain.from_iterable(ranges), n))


def seeds_for(text: str | None, n: int) -> tuple[range, ...]:
    """The seeds of `text` (default 0..n-1), checked to hold at least n (n itself at most MAX_SEEDS)."""
    if not 1 <= n <= MAX_SEEDS:
        raise ConfigError(f"n must be in [1, {MAX_SEEDS:,}], got {n}")
    ranges = parse_seeds(text) if text else (range(n),)
    if count_seeds(ranges) < n:
        raise ConfigError(f"--seeds gives {count_seeds(ranges)} seeds, fewer than --n {n}")
    return ranges


def parse_classes(text: str) -> list[int]:
    """`"3,7"` -> [3, 7]: class indices (non-negative integers) to cycle through."""
    items = [c.strip() for c in text.split(",") if c.strip()]
    if not items or any(not re.fullmatch(r"[0-9]{1,9}", c) for c in items):
        raise ConfigError(f"--classes {text!r}: expected a comma list of class indices")
    return [int(c) for c in items]


def label_mode(balanced: bool, classes: str | None) -> tuple[str, list[int] | None]:
    """How labels are drawn: ("balanced", None), ("classes", ids) or ("uniform", None)."""
    if balanced and classes:
        raise ConfigError("--balanced and --classes exclude each other")
    if classes:
        return "classes", parse_classes(classes)
    return ("balanced" if balanced else "uniform"), None


# ---- guidance grids -----------------------------------------------------------------------------------------------
def parse_grid(text: str) -> list[float]:
    """`"start:stop:step"` (inclusive stop) or a comma list -> sorted distinct w values, each finite and >= 0."""
    what = f"guidance grid {text.strip()!r}"
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ConfigError(f"{what}: use start:stop:step (e.g. 0:5:0.1) or a comma list")
        start, stop, step = (_decimal(p, what) for p in parts)
        for end in (start, stop):
            _check(check_w, float(end), what)
        if step <= 0:
            raise ConfigError(f"{what}: step must be positive")
        if stop < start:
            raise ConfigError(f"{what}: stop is below start")
        a, s = Fraction(start), Fraction(step)
        count = math.floor((Fraction(stop) - a) / s) + 1
        if count > MAX_GRID:
            raise ConfigError(f"{what}: {count:,} values, more than {MAX_GRID:,}")
        values = [float(a + i * s) for i in range(count)]
    else:
        items = [p for p in text.split(",") if p.strip()]
        if not items:
            raise ConfigError(f"{what}: no values")
        if len(items) > MAX_GRID:
            raise ConfigError(f"{what}: {len(items):,} values, more than {MAX_GRID:,}")
        values = [float(_decimal(p, what)) for p in items]
        for w in values:
            _check(check_w, w, what)
    return sorted(set(values))


def _check(rule: Any, value: Any, what: str) -> None:
    try:
        rule(value)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


# ---- λ intervals --------------------------------------------------------------------------------------------------
def parse_interval(text: str, name: str = "λ interval") -> tuple[float, float]:
    """`"LO:HI"` -> (LO, HI), finite with LO < HI (e.g. the log-SNR range where guidance applies)."""
    what = f"{name} {text.strip()!r}"
    parts = text.split(":")
    if len(parts) != 2:
        raise ConfigError(f"{what}: use LO:HI, e.g. -5:2.5")
    lo, hi = (parse_number(p, what) for p in parts)
    if not lo < hi:
        raise ConfigError(f"{what}: LO must be below HI")
    return lo, hi


def parse_w_range(text: str) -> tuple[float, float]:
    """`"LO:HI"` -> (LO, HI): guidance weights (each by `check_w`) with LO <= HI (a distillation's range)."""
    what = f"w range {text.strip()!r}"
    parts = text.split(":")
    if len(parts) != 2:
        raise ConfigError(f"{what}: use LO:HI, e.g. 0:4")
    lo, hi = (check_w(parse_number(p, what)) for p in parts)
    if not lo <= hi:
        raise ConfigError(f"{what}: LO must not be above HI")
    return lo, hi


# ---- --set KEY=VALUE ----------------------------------------------------------------------------------------------
def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def parse_set(item: str) -> tuple[str, Any]:
    """`"key=value"` -> (key, value): value as JSON (numbers, true/false, lists), else the plain string."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    if not _KEY.fullmatch(key):
        raise ConfigError(f"--set {item!r}: {key!r} is not a config key (e.g. lr or model.dropout)")
    try:
        parsed = json.loads(value, parse_constant=_refuse_constant)
    except ValueError as e:  # JSONDecodeError is a ValueError; so is a refused NaN/Infinity
        if str(e) in ("NaN", "Infinity", "-Infinity"):
            raise ConfigError(f"--set {item!r}: the value is not finite") from None
        return key, value
    if _has_non_finite(parsed):  # 1e400 decodes to inf
        raise ConfigError(f"--set {item!r}: the value is not finite")
    return key, parsed


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    return False


def parse_sets(items: list[str]) -> dict[str, Any]:
    """Several `--set` items -> {key: value}; a key given twice is an error."""
    out: dict[str, Any] = {}
    for item in items:
        key, value = parse_set(item)
        if key in out:
            raise ConfigError(f"--set {key} is given twice")
        out[key] = value
    return out
