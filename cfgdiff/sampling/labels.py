"""Class labels for a list of seeds, fixed by the seeds alone (not by batch size or process count).

- uniform: each seed draws its own label, uniformly over the classes, from a generator keyed by
  the seed, so the same seed always gets the same label;
- balanced: position i in the seed list gets class i mod K, so N = m·K seeds give m of each class;
- classes: position i gets `classes[i mod len(classes)]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cfgdiff.errors import ConfigError

_LABEL_STREAM = 0x1ABE1  # separates the label draw from the seed's noise stream


def labels_for_seeds(
    seeds: Sequence[int], num_classes: int, mode: str = "uniform", classes: Sequence[int] | None = None
) -> np.ndarray:
    """int64 labels (N,) for `seeds`; `mode` is "uniform", "balanced" or "classes"."""
    n = len(seeds)
    if mode == "uniform":
        return np.array([np.random.default_rng([s, _LABEL_STREAM]).integers(num_classes) for s in seeds], np.int64)
    if mode == "balanced":
        if n % num_classes:
            raise ConfigError(f"--balanced needs a number of samples divisible by {num_classes} classes, got {n}")
        return np.arange(n, dtype=np.int64) % num_classes
    if mode == "classes":
        if not classes:
            raise ConfigError("--classes needs at least one class index")
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise ConfigError(f"--classes: {bad} outside 0..{num_classes - 1}")
        return np.array(classes, np.int64)[np.arange(n) % len(classes)]
    raise ConfigError(f"unknown label mode {mode!r}")
