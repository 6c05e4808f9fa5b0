"""Reading a dataset file written by `cfgdiff prepare` (layout in h5file.py).

`ImageDataset` is the torch Dataset that training reads: uint8 -> float32 in [-1, 1], channels
first, an optional random horizontal flip, int64 labels. Its h5py handle is opened lazily, once per
process: handles do not survive fork, so each DataLoader worker opens its own. Indexing is plain
(no internal shuffling or sharding), so it works with any sampler, DistributedSampler included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from cfgdiff.data.h5file import DATASETS, FORMAT, REQUIRED_ATTRS
from cfgdiff.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """The attributes of a dataset file (what `train` needs to build a model for it)."""

    path: str
    size: int
    num_classes: int
    count: int
    class_ids: list[str]
    class_names: list[str]
    resize: str
    source: str
    label_order: str
    skipped: int
    cfgdiff_version: str


def _open(path: str | Path, labels: bool = True) -> h5py.File:
    """The file opened read-only, or DataError in one line saying what is wrong with it.

    labels: also check that every label lies in [0, num_classes) (N int64s: cheap; a DataLoader
    worker reopening a file its parent has checked skips it).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"dataset file not found: {p} (make one with `cfgdiff prepare`)")
    if not h5py.is_hdf5(p):
        raise DataError(f"{p} is not an HDF5 file (make a dataset with `cfgdiff prepare`)")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DataError(f"cannot read {p}: truncated or damaged HDF5 file ({str(exc).splitlines()[0]})") from None
    try:
        try:
            _check(f, p, labels)
        except (OSError, ValueError, TypeError, KeyError) as exc:  # an attribute or dataset h5py cannot read
            raise DataError(f"{p} is a damaged cfgdiff dataset: {_first_line(exc)}") from None
    except BaseException:
        f.close()
        raise
    return f


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _int_attr(f: h5py.File, p: Path, key: str, least: int) -> int:
    """Attribute `key` as an integer scalar >= least, or DataError naming it."""
    value = f.attrs[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        shown = f"an array of shape {value.shape}" if isinstance(value, np.ndarray) else repr(
            value.item() if isinstance(value, np.generic) else value)
        raise DataError(f"{p} is a damaged cfgdiff dataset: attribute {key} is {shown}, not an integer")
    if value < least:
        raise DataError(f"{p} is a damaged cfgdiff dataset: attribute {key} is {int(value)}, must be >= {least}")
    return int(value)


def _check(f: h5py.File, p: Path, labels: bool = True) -> None:
    """The layout of h5file.py: attributes present and well-typed, datasets of the right dtype and
    shape, count > 0, and (with `labels`) every label in [0, num_classes). DataError otherwise."""
    fmt = f.attrs.get("format")
    if not isinstance(fmt, (str, bytes)) or (fmt.decode(errors="replace") if isinstance(fmt, bytes) else fmt) != FORMAT:
        raise DataError(
            f"{p} is not a cfgdiff dataset (no format='{FORMAT}' attribute; make one with `cfgdiff prepare`)"
        )
    missing = [k for k in DATASETS if k not in f] + [k for k in REQUIRED_ATTRS if k not in f.attrs]
    if missing:
        raise DataError(f"{p} is a damaged cfgdiff dataset: {', '.join(missing)} missing")
    n, s = _int_attr(f, p, "count", 1), _int_attr(f, p, "size", 1)
    k = _int_attr(f, p, "num_classes", 1)
    for key in ("class_ids", "class_names"):
        if len(_strings(f.attrs[key])) != k:
            raise DataError(f"{p} is a damaged cfgdiff dataset: {key} does not hold num_classes = {k} names")
    not_arrays = [key for key in DATASETS if not isinstance(f[key], h5py.Dataset)]
    if not_arrays:
        raise DataError(f"{p} is a damaged cfgdiff dataset: {', '.join(not_arrays)} not an array")
    shapes = (f["images"].shape, f["labels"].shape, f["names"].shape)
    if shapes != ((n, s, s, 3), (n,), (n,)):
        raise DataError(f"{p} is a damaged cfgdiff dataset: shapes {shapes} do not match count {n}, size {s}")
    if f["images"].dtype != np.uint8:  # float pixels would train as ≈ -1 after the uint8 scaling
        raise DataError(f"{p} is a damaged cfgdiff dataset: images are {f['images'].dtype}, not uint8")
    if f["labels"].dtype.kind not in "iu":
        raise DataError(f"{p} is a damaged cfgdiff dataset: labels are {f['labels'].dtype}, not integers")
    if labels:
        y = f["labels"][:]
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= k:  # label K would train as the null class ∅, above K fail hours in
            bad = lo if lo < 0 else hi
            raise DataError(
                f"{p} is a damaged cfgdiff dataset: label {bad} is outside [0, {k}) for its num_classes = {k}"
            )


def _strings(value: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)]


def dataset_info(path: str | Path) -> DatasetInfo:
    """The attributes of the dataset file at `path`; DataError if it is missing, damaged or not one."""
    with _open(path) as f:
        a = f.attrs
        return DatasetInfo(
            path=str(path),
            size=int(a["size"]),
            num_classes=int(a["num_classes"]),
            count=int(a["count"]),
            class_ids=_strings(a["class_ids"]),
            class_names=_strings(a["class_names"]),
            resize=str(a.get("resize", "")),
            source=str(a.get("source", "")),
            label_order=str(a.get("label_order", "")),
            skipped=int(a.get("skipped", 0)),
            cfgdiff_version=str(a.get("cfgdiff_version", "")),
        )


def read_images(path: str | Path, start: int, stop: int) -> np.ndarray:
    """Images [start, stop) as (n, S, S, 3) uint8."""
    with _open(path) as f:
        n = f["images"].shape[0]
        if not 0 <= start <= stop <= n:
            raise DataError(f"images [{start}, {stop}) are outside the {n} images of {path}")
        return f["images"][start:stop]


def read_labels(path: str | Path) -> np.ndarray:
    """All labels, (N,) int64."""
    with _open(path) as f:
        return f["labels"][:].astype(np.int64)


class ImageDataset(Dataset):
    """`(x, label)` pairs: x float32 (3, S, S) in [-1, 1], label an int64 scalar tensor.

    flip: mirror each image left-right with probability 1/2 (torch's RNG, which DataLoader seeds
    per worker).
    """

    def __init__(self, path: str | Path, flip: bool = False):
        self.path, self.flip = str(path), flip
        self._file: h5py.File | None = None
        self._pid = -1
        self.info = dataset_info(path)
        self.labels = read_labels(path)  # (N,) int64, small enough to keep (10 MB for ImageNet)

    def __len__(self) -> int:
        return self.info.count

    def _images(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():  # first use in this process
            self._file, self._pid = _open(self.path, labels=False), os.getpid()  # checked in __init__
        return self._file["images"]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = int(i) % len(self)
        images = self._images()
        pixels = torch.from_numpy(images[i]).permute(2, 0, 1)  # (S, S, 3) uint8 -> (3, S, S)
        if self.flip and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
        x = pixels.to(torch.float32) / 127.5 - 1
        return x, torch.tensor(self.labels[i], dtype=torch.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1  # an h5py handle cannot be pickled (spawn workers)
        return state

    def __del__(self) -> None:
        if getattr(self, "_file", None) is not None and self._pid == os.getpid():
            self._file.close()
