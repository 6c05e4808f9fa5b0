"""The resumable work of an unfinished `prepare`: finished parts beside the output, then one HDF5.

The planned images are cut into parts of `part_length(size)` images, kept by `cfgdiff.files.PartStore`
(the one resumable-parts store, shared with `sample`): each finished part is one `.npz` in the hidden
folder `.<output>.partial/` beside the output, with `plan.json` saying which options and members it
belongs to. A rerun with the same plan skips the parts already there (Ctrl-C or kill -9 lose at most
the parts in flight); a rerun with another plan discards them. Assembling the HDF5 reads the parts in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cfgdiff.files import PartStore

__all__ = ["Part", "PartStore", "part_length"]


def part_length(size: int) -> int:
    """Images per part: about 32 MB of pixels, between 64 and 4096 images."""
    return int(np.clip((32 << 20) // (size * size * 3), 64, 4096))


@dataclass(frozen=True)
class Part:
    """The decoded images of one part, and the members that were skipped, with their reasons."""

    images: np.ndarray  # (n, S, S, 3) uint8
    labels: np.ndarray  # (n,) int64
    names: np.ndarray  # (n,) str
    skipped_names: np.ndarray  # (m,) str
    skipped_reasons: np.ndarray  # (m,) str
