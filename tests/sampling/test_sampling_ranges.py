"""Per-seed labels (the seed and grid parsers are tested in test_parse.py)."""

import numpy as np
import pytest

from cfgdiff.errors import ConfigError
from cfgdiff.sampling.labels import labels_for_seeds


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
