"""The dataset file (docs/architecture.md, "Dataset file"): its layout, and writing it from parts.

    images  (N, S, S, 3) uint8, one chunk per image (a random read touches one chunk, uncompressed)
    labels  (N,) int64
    names   (N,) variable-length UTF-8: the source name of every image, for traceability
    attributes: format = "cfgdiff-dataset", size, num_classes, class_ids, class_names, resize,
        source, label_order, count, skipped, cfgdiff_version, and more (see `write_dataset`)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cfgdiff.data.parts import PartStore

FORMAT = "cfgdiff-dataset"
DATASETS = ("images", "labels", "names")
REQUIRED_ATTRS = ("format", "size", "num_classes", "class_ids", "class_names", "count")


def _attr(value: Any) -> Any:
    """Lists of strings as HDF5 variable-length UTF-8 arrays; everything else as is."""
    if isinstance(value, (list, tuple)):
        return np.array(value, dtype=h5py.string_dtype())
    return value


def write_dataset(path: Path, store: PartStore, parts: Sequence[int], size: int, attrs: dict[str, Any]) -> int:
    """Write the parts (in the order given) as a dataset file at `path` (a temporary name); its count."""
    counts = [len(store.read(k, "labels")["labels"]) for k in parts]
    n = sum(counts)
    # libver v110: chunked datasets of fixed shape get a fixed-array chunk index (one lookup per read)
    with h5py.File(path, "w", libver="v110") as f:
        images = f.create_dataset("images", (n, size, size, 3), dtype=np.uint8, chunks=(1, size, size, 3))
        labels = f.create_dataset("labels", (n,), dtype=np.int64)
        names = f.create_dataset("names", (n,), dtype=h5py.string_dtype("utf-8"))
        i = 0
        for k, m in zip(parts, counts):
            if m:
                part = store.read(k, "images", "labels", "names")
                images[i : i + m] = part["images"]
                labels[i : i + m] = part["labels"]
                names[i : i + m] = part["names"].astype(object)
            i += m
        for key, value in attrs.items():
            f.attrs[key] = _attr(value)
        f.attrs["format"] = FORMAT
        f.attrs["count"] = n
    return n

