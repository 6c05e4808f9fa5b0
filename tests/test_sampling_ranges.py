"""Seed ranges, guidance grids and per-seed labels."""

import numpy as np
import pytest

from cfgdiff.errors import ConfigError
from cfgdiff.sampling.labels import labels_for_seeds
from cfgdiff.sampling.ranges import parse_grid, parse_seeds


def test_grid_is_exact_and_inclusive():
    g = parse_grid("0:5:0.1")
    assert len(g) == 51 and g[0] == 0.0 and g[-1] == 5.0
    assert g[3] == 0.3 and g[7] == 0.7  # no 0.30000000000000004
    assert parse_grid("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_grid("0:1:0.3") == [0.0, 0.3, 0.6, 0.9]
    assert parse_grid("2, 0.5,0") == [0.0, 0.5, 2.0]


@pytest.mark.parametrize("bad", ["0:5", "5:0:0.1", "a,b", "0:5:0", "-1,2", "0:1:-0.1", "", "nan", "1:inf:1"])
def test_bad_grids_are_one_clear_error(bad):
    with pytest.raises(ConfigError, match="guidance grid"):
        parse_grid(bad)


def test_seeds():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert parse_seeds("7") == [7]
    for bad in ["", "a", "3-1", "1,1", "-2", "0-2,,4"]:
        with pytest.raises(ConfigError, match="seeds"):
            parse_seeds(bad)


def test_labels_depend_on_seeds_only():
    seeds = list(range(100, 400))
    full = labels_for_seeds(seeds, 10)
    part = np.concatenate([labels_for_seeds(seeds[i : i + 7], 10) for i in range(0, 300, 7)])
    assert np.array_equal(full, part)
    assert full.min() >= 0 and full.max() <= 9 and len(np.unique(full)) == 10
    counts = np.bincount(labels_for_seeds(list(range(20000)), 10), minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200


def test_balanced_and_explicit_classes():
    lab = labels_for_seeds(list(range(30)), 10, "balanced")
    assert np.array_equal(np.bincount(lab), np.full(10, 3))
    with pytest.raises(ConfigError, match="divisible"):
        labels_for_seeds(list(range(31)), 10, "balanced")
    assert labels_for_seeds([5, 6, 7], 10, "classes", [3, 9]).tolist() == [3, 9, 3]
    with pytest.raises(ConfigError, match="outside"):
        labels_for_seeds([1], 10, "classes", [10])
