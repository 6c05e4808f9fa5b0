"""The published downsampled ImageNet (Chrabaszcz et al. 2017) as npz batches.

Files `train_data_batch_1.npz` … `train_data_batch_10.npz`, `val_data.npz` or `Imagenet64_*.npz`
hold `data` (N, 3·S·S) uint8, planar (the R plane, then G, then B) and `labels` 1-based in the
order of their `map_clsloc.txt` (kit fox n02119789 = 1, tench n01440764 = 449), which is not the
sorted-synset order every other ImageNet tool uses. The labels are remapped to sorted-synset order
(tench = 0) with that map, which must lie beside the files or be given with --class-map.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cfgdiff.data.decode import Decoded, ImageSpec
from cfgdiff.data.resize import resize_rgb
from cfgdiff.data.sources import ClassMap, Member, Source, Task, find_class_map
from cfgdiff.errors import DataError

ROWS_PER_TASK = 256


def _natural_key(path: Path) -> list[object]:
    """train_data_batch_2 before train_data_batch_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def npz_files(path: Path) -> list[Path]:
    """The npz files of a source: the file itself, or those in the folder, in natural order."""
    return [path] if path.is_file() else sorted(path.glob("*.npz"), key=_natural_key)


def _load(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key]
    except KeyError:
        raise DataError(f"{path} has no '{key}' array (expected the downsampled ImageNet keys data, labels)") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read npz file {path}: {exc}") from None


@dataclass(frozen=True)
class ArrayBatch:
    """A task: rows of planar (n, 3·S0·S0) uint8 pixels to reshape and resize in a worker."""

    rows: np.ndarray
    side: int
    spec: ImageSpec

    def run(self) -> Decoded:
        hwc = self.rows.reshape(-1, 3, self.side, self.side).transpose(0, 2, 3, 1)  # planar -> (n, S0, S0, 3)
        images = [resize_rgb(Image.fromarray(np.ascontiguousarray(a)), self.spec.size, self.spec.resize) for a in hwc]
        return Decoded(np.stack(images), [""] * len(images))


class NpzSource(Source):
    """Downsampled ImageNet npz batches, labels remapped from map_clsloc order to sorted synsets."""

    kind = "npz"

    def __init__(self, path: Path, class_map: str | None):
        files = npz_files(path)
        if not files:
            raise DataError(f"{path} contains no .npz files")
        cmap = find_class_map(path, class_map)
        if cmap is None or not cmap.index:
            raise DataError(
                f"{path}: the npz labels follow map_clsloc.txt; put it beside the files or pass --class-map"
            )
        class_ids = sorted(cmap.index.values())
        remap = self._remap(cmap, class_ids)
        members = []
        for k, f in enumerate(files):
            labels = _load(f, "labels").astype(np.int64).reshape(-1)
            if labels.size and (labels.min() < 1 or labels.max() >= len(remap) or (remap[labels] < 0).any()):
                raise DataError(f"{f}: labels outside the 1..{len(remap) - 1} of {cmap.path.name}")
            new = remap[labels]
            members += [Member(f"{f.name}:{row}", int(new[row]), (k, row)) for row in range(labels.size)]
        if not members:
            raise DataError(f"{path} contains no images")
        names = [cmap.names.get(c, c) for c in class_ids]
        order = f"sorted synset ids (remapped from the 1-based {cmap.path.name} order of the npz files)"
        super().__init__(path.name, class_ids, names, members, order)
        self.files = files
        self.class_map_path = str(cmap.path)

    @staticmethod
    def _remap(cmap: ClassMap, class_ids: list[str]) -> np.ndarray:
        """old 1-based label -> sorted-synset label (-1 where the map has no entry)."""
        sorted_index = {c: i for i, c in enumerate(class_ids)}
        remap = np.full(max(cmap.index) + 1, -1, dtype=np.int64)
        for old, synset in cmap.index.items():
            remap[old] = sorted_index[synset]
        return remap

    def _pixels(self, k: int) -> tuple[np.ndarray, int]:
        data = _load(self.files[k], "data")
        side = int(round((data.shape[1] / 3) ** 0.5)) if data.ndim == 2 else 0
        if data.dtype != np.uint8 or data.ndim != 2 or 3 * side * side != data.shape[1]:
            raise DataError(f"{self.files[k]}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3·S·S)")
        return data, side

    def tasks(self, parts: Sequence[Sequence[Member]], spec: ImageSpec) -> Iterator[Task]:
        loaded = (-1, np.zeros((0, 0), np.uint8), 0)  # one file's pixels at a time (a few GB at most)
        for members in parts:
            start = 0
            while start < len(members):
                k = members[start].ref[0]
                stop = start
                while stop < len(members) and members[stop].ref[0] == k and stop - start < ROWS_PER_TASK:
                    stop += 1
                if loaded[0] != k:
                    loaded = (k, *self._pixels(k))
                rows = np.array([m.ref[1] for m in members[start:stop]])
                yield ArrayBatch(loaded[1][rows], loaded[2], spec)
                start = stop
