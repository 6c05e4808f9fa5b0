"""The resumable work of an unfinished `prepare`: finished parts beside the output, then one HDF5.

The planned images are cut into parts of `part_length(size)` images. Each finished part is one
`.npz` (written to a temporary name, then renamed), in the hidden folder `.<output>.partial/`
beside the output, with `plan.json` saying which options and members it belongs to. A rerun with
the same plan skips the parts already there (Ctrl-C or kill -9 lose at most the parts in flight);
a rerun with another plan discards them. Assembling the HDF5 reads the parts in order.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfgdiff import dist


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


def write_atomic(path: Path, text: str) -> None:
    """Write a text file under a temporary name in the same folder, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class PartStore:
    """Finished parts of one plan, in `.<output name>.partial/` beside the output."""

    def __init__(self, out: Path, plan: dict[str, Any]):
        self.dir = out.parent / f".{out.name}.partial"
        self.plan = plan

    def open(self) -> set[int]:
        """Create the folder, or keep the parts of the same plan; the indices of the finished parts."""
        plan_file = self.dir / "plan.json"
        if self.dir.exists():
            try:
                same = json.loads(plan_file.read_text()) == self.plan
            except (OSError, ValueError):
                same = False
            if not same:
                dist.print0(f"prepare: discarding partial work in {self.dir} (made with other options)")
                shutil.rmtree(self.dir)
        if not self.dir.exists():
            self.dir.mkdir()
            write_atomic(plan_file, json.dumps(self.plan, indent=2) + "\n")
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("part-*.npz")}

    def _path(self, k: int) -> Path:
        return self.dir / f"part-{k:06d}.npz"

    def write(self, k: int, part: Part) -> None:
        tmp = self.dir / f".part-{k:06d}.tmp"
        try:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **part.__dict__)
        except BaseException:  # disk full, Ctrl-C: no half-written part left to take space
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self._path(k))

    def read(self, k: int, *keys: str) -> dict[str, np.ndarray]:
        """Arrays of part k (all of them, or only `keys`)."""
        with np.load(self._path(k), allow_pickle=False) as npz:
            return {key: npz[key] for key in (keys or npz.files)}

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
