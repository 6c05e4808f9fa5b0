"""The option-value parsers (cfgdiff.parse): examples, and properties over generated text.

Every property checks the parser against an independent re-derivation written here (integer
arithmetic on scaled decimals for grids, pairwise interval checks for seeds, json for --set), and
that any other input is a one-line ConfigError, never another exception, never a value past the bound.
"""

from __future__ import annotations

import itertools
import json
import math
import tracemalloc
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfgdiff.errors import ConfigError
from cfgdiff.parse import (
    MAX_GRID,
    MAX_SEED,
    MAX_SEEDS,
    count_seeds,
    first_seeds,
    parse_grid,
    parse_interval,
    parse_seeds,
    parse_set,
    seeds_for,
)

# Derandomized and without an example database: the same examples on every run and machine, so the suite
# cannot flake on a newly drawn input (a failure found while developing is kept as an explicit example above).
FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def one_line_error(fn, *args):
    """fn(*args), or the ConfigError's message; the message must be one line."""
    try:
        return fn(*args), None
    except ConfigError as e:
        assert "\n" not in str(e) and str(e)
        return None, str(e)


# ---- examples ------------------------------------------------------------------------------------------------------
def test_grid_is_exact_and_inclusive():
    g = parse_grid("0:5:0.1")
    assert len(g) == 51 and g[0] == 0.0 and g[-1] == 5.0
    assert g[3] == 0.3 and g[7] == 0.7  # no 0.30000000000000004
    assert parse_grid("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_grid("0:1:0.3") == [0.0, 0.3, 0.6, 0.9]
    assert parse_grid("2, 0.5,0") == [0.0, 0.5, 2.0]


@pytest.mark.parametrize("bad, reason", [
    ("0:5", "start:stop:step"), ("5:0:0.1", "stop is below start"), ("a,b", "not a number"), ("0:5:0", "positive"),
    ("-1,2", ">= 0"), ("0:1:-0.1", "positive"), ("", "no values"), ("nan", "not finite"), ("1:inf:1", "not finite"),
    ("0,1e400", "not finite"), ("1e400:1e401:1", "not finite"), ("0:1000000:0.000001", "more than 10,000"),
    ("0:1:1e-400", "rounds to 0"), ("0x10", "not a number"), ("1_0", "not a number"),
])
def test_bad_grids_say_why_in_one_line(bad, reason):
    _, err = one_line_error(parse_grid, bad)
    assert err is not None and err.startswith("guidance grid") and reason in err, err


def test_seeds():
    assert parse_seeds("0-3,10") == (range(0, 4), range(10, 11))
    assert first_seeds(parse_seeds("10, 0 - 3"), 5) == [10, 0, 1, 2, 3]
    assert parse_seeds("7") == (range(7, 8),)
    assert count_seeds(parse_seeds(f"0-{MAX_SEEDS - 1}")) == MAX_SEEDS
    assert parse_seeds(f"{MAX_SEED}") == (range(MAX_SEED, MAX_SEED + 1),)
    for bad, reason in [("", "empty"), ("a", "not a non-negative integer"), ("3-1", "decreasing"),
                        ("1,1", "appears twice"), ("0-5,3-9", "appears twice"), ("-2", "not a non-negative"),
                        ("0-2,,4", "empty"), (f"0-{MAX_SEEDS}", "more than 100,000,000"),
                        (f"{MAX_SEED + 1}", "int64"), ("1" * 5000, "int64"), ("٣", "not a non-negative")]:
        _, err = one_line_error(parse_seeds, bad)
        assert err is not None and reason in err, (bad, err)


def test_seed_count_is_checked_against_n():
    assert first_seeds(seeds_for(None, 3), 3) == [0, 1, 2]
    with pytest.raises(ConfigError, match="fewer than --n 5"):
        seeds_for("0-2", 5)
    with pytest.raises(ConfigError, match="n must be in"):
        seeds_for(None, MAX_SEEDS + 1)


@pytest.mark.parametrize("text", ["0-99999999999", f"0-{MAX_SEED}", "0:1000000:0.000001", "0:1e300:1e-300",
                                  "0-49999999,50000000-99999999", ",".join(str(i) for i in range(0, 20000, 2))])
def test_huge_requests_are_refused_or_parsed_within_a_small_allocation(text):
    parser = parse_grid if ":" in text else parse_seeds
    tracemalloc.start()
    try:
        one_line_error(parser, text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # the bounds keep every parse far below this


def test_interval_and_set_examples():
    assert parse_interval("-5:2.5") == (-5.0, 2.5)
    for bad, reason in [("2:1", "below"), ("1:1", "below"), ("0:inf", "not finite"), ("1", "LO:HI"), ("a:1", "number")]:
        _, err = one_line_error(parse_interval, bad)
        assert err is not None and reason in err, (bad, err)
    assert parse_set("model.channel_mult=[1,2,2]") == ("model.channel_mult", [1, 2, 2])
    assert parse_set("dataset=data/x.h5") == ("dataset", "data/x.h5")
    assert parse_set(" lr =0.5") == ("lr", 0.5)
    for bad, reason in [("lr", "KEY=VALUE"), ("=1", "KEY=VALUE"), ("lr=NaN", "not finite"), ("lr=1e400", "not finite"),
                        ("lr=[1,-Infinity]", "not finite"), ("a b=1", "not a config key"),
                        ("a..b=1", "not a config key")]:
        _, err = one_line_error(parse_set, bad)
        assert err is not None and reason in err, (bad, err)


# ---- properties: seeds ---------------------------------------------------------------------------------------------
ends = st.one_of(st.integers(0, 50), st.integers(0, 2 * MAX_SEEDS), st.integers(MAX_SEED - 5, MAX_SEED + 5))
items = st.tuples(ends, st.one_of(st.none(), ends))
space = st.sampled_from(["", " ", "  "])


@FAST
@given(st.lists(st.tuples(items, space, space), min_size=1, max_size=6))
def test_seed_ranges_parse_to_their_definition_or_say_why(spec):
    text = ",".join(f"{s1}{a}{s2}" if b is None else f"{s1}{a}-{b}{s2}" for (a, b), s1, s2 in spec)
    pairs = [(a, a if b is None else b) for (a, b), _, _ in spec]
    got, err = one_line_error(parse_seeds, text)
    # The definition, re-derived: items read in order, each within int64 and increasing, the running total at
    # most MAX_SEEDS; then no two ranges may share a seed.
    why, total = None, 0
    for a, b in pairs:
        total += b - a + 1
        why = "int64" if max(a, b) > MAX_SEED else "decreasing" if b < a else "more than" if total > MAX_SEEDS else None
        if why:
            break
    if why is None and any(p[0] <= q[1] and q[0] <= p[1] for p, q in itertools.combinations(pairs, 2)):
        why = "appears twice"
    if why:
        assert err is not None and why in err, (why, err)
    else:
        assert err is None, err
        assert count_seeds(got) == sum(b - a + 1 for a, b in pairs)
        want = list(itertools.islice(itertools.chain.from_iterable(range(a, b + 1) for a, b in pairs), 300))
        assert first_seeds(got, 300) == want


@FAST
@given(st.text(alphabet="0123456789-, x.+e", max_size=40))
def test_any_seed_text_parses_or_is_one_line(text):
    got, err = one_line_error(parse_seeds, text)
    if err is None:
        assert 0 < count_seeds(got) <= MAX_SEEDS and all(0 <= r.start and r.stop - 1 <= MAX_SEED for r in got)


# ---- properties: guidance grids ------------------------------------------------------------------------------------
def decimal_text(units: int, scale: int, style: int) -> str:
    """units / 10**scale written as a decimal, in one of three spellings."""
    value = Fraction(units, 10**scale)
    if style == 0 or scale == 0:
        whole, frac = divmod(abs(units), 10**scale)
        digits = f"{whole}" + (f".{frac:0{scale}d}" if scale else "")
        return ("-" if units < 0 else "") + digits
    if style == 1:
        return f"{units}e-{scale}"
    return f"{units * 10}E-{scale + 1}" if value else "0.0"


decimals = st.tuples(st.integers(-3, 5000), st.integers(0, 4), st.integers(0, 2))


@FAST
@given(decimals, decimals, decimals)
def test_ranges_give_the_exact_decimal_values_or_say_why(start, stop, step):
    K = 10**4  # a common scale: every value below is an integer number of 1e-4
    a, b, s = (u * K // 10**k for u, k, _ in (start, stop, step))
    text = ":".join(decimal_text(*x) for x in (start, stop, step))
    got, err = one_line_error(parse_grid, text)
    if a < 0 or b < 0:
        assert err is not None and ">= 0" in err, err
    elif s <= 0:
        assert err is not None and "positive" in err, err
    elif b < a:
        assert err is not None and "below start" in err, err
    elif (b - a) // s + 1 > MAX_GRID:
        assert err is not None and "more than" in err, err
    else:
        assert err is None, err
        assert got == sorted({float(Fraction(a + i * s, K)) for i in range((b - a) // s + 1)})


@FAST
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=8))
def test_comma_lists_give_their_values_or_say_why(ws):
    text = ",".join(repr(w) for w in ws)
    got, err = one_line_error(parse_grid, text)
    if any(not math.isfinite(w) for w in ws):
        assert err is not None and "not finite" in err, err
    elif any(w < 0 for w in ws):
        assert err is not None and ">= 0" in err, err
    else:
        assert err is None, err
        assert got == sorted({w + 0.0 for w in ws})  # -0.0 is 0


@FAST
@given(st.text(alphabet="0123456789:,.-+eE infa", max_size=30))
def test_any_grid_text_parses_or_is_one_line(text):
    got, err = one_line_error(parse_grid, text)
    if err is None:
        assert 0 < len(got) <= MAX_GRID and got == sorted(set(got))
        assert all(math.isfinite(w) and w >= 0 for w in got)


# ---- properties: λ intervals and --set -----------------------------------------------------------------------------
@FAST
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_intervals_are_ordered_finite_pairs(lo, hi):
    got, err = one_line_error(parse_interval, f"{lo!r}:{hi!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        assert err is not None and "not finite" in err, err
    elif not lo < hi:
        assert err is not None and "below" in err, err
    else:
        assert got == (lo, hi)


keys = st.from_regex(r"[a-z_][a-z0-9_]{0,8}(\.[a-z_][a-z0-9_]{0,8})?", fullmatch=True)
json_values = st.one_of(st.integers(-10**6, 10**6), st.floats(), st.booleans(), st.lists(st.integers(0, 9), max_size=4),
                        st.text(alphabet="abcxyz/._", min_size=1, max_size=8))


@FAST
@given(keys, json_values)
def test_set_items_give_their_key_and_json_value_or_say_why(key, value):
    text = value if isinstance(value, str) else json.dumps(value)
    got, err = one_line_error(parse_set, f"{key}={text}")
    if isinstance(value, float) and not math.isfinite(value):
        assert err is not None and "not finite" in err, err
    else:
        assert err is None, err
        want = value
        if isinstance(value, str):  # a plain string stays a string unless it happens to be JSON
            try:
                want = json.loads(value)
            except ValueError:
                pass
        assert got == (key, want)


@FAST
@given(st.text(max_size=30))
def test_any_set_text_parses_or_is_one_line(text):
    got, err = one_line_error(parse_set, text)
    if err is None:
        assert got[0] and "=" in text
