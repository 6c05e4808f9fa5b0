"""Reference statistics from any input kind, cached on disk so a guidance sweep computes them once.

The cache key is the SHA-256 of the input's content and of the Inception weights: editing the dataset
or swapping the weights gives a new entry, renaming or moving the file does not. An ADM reference batch
(`arr_0` plus `mu`/`sigma`/`mu_s`/`sigma_s`) is used the way ADM's evaluator uses it: the stored
statistics for FID and sFID, features of `arr_0` for precision/recall and KID.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cfgdiff import dist
from cfgdiff.files import Owner, write_npz
from cfgdiff.metrics.cache import cache_root, cache_write, memo_content_sha256
from cfgdiff.metrics.detector import InceptionDetector
from cfgdiff.metrics.extract import statistics_from_arrays, statistics_of
from cfgdiff.errors import ConfigError
from cfgdiff.metrics.sources import AreaResized, SizeChecked, open_input
from cfgdiff.metrics.stats import Moments, Statistics


@dataclasses.dataclass(frozen=True)
class Reference:
    """Reference statistics and where they came from."""

    stats: Statistics
    path: str
    kind: str  # the input kind (see cfgdiff.metrics.sources.Input)
    sha256: str  # of the input's content
    cache_file: str | None = None  # the cached statistics used or written, if any
    resized: str | None = None  # "area64": its images were area-resized to 64x64 first

    def provenance(self) -> dict[str, object]:
        return {"path": self.path, "kind": self.kind, "sha256": self.sha256, "count": self.stats.count,
                "weights_sha256": self.stats.weights_sha256, "cache_file": self.cache_file, "resized": self.resized}


def default_reference(ref: str | Path | None, recorded: str | None) -> str | None:
    """The reference to score against: `ref` if given, else the training dataset that the samples'
    provenance records (a checkpoint's for `sweep`, the samples' `<npz>.json` for `score`), else None."""
    return str(ref) if ref else (recorded or None)


def load_reference(ref: str | Path, detector: InceptionDetector, cache_dir: str | Path | None = None, *,
                   need_pool: bool = True, batch_size: int = 64, size: tuple[int, int] | None = None,
                   resize: str | None = None, hint: str = "") -> Reference:
    """Reference statistics of `ref` (npz of images or statistics, HDF5 dataset, folder of images).

    need_pool: also keep the per-image pool features (precision/recall, KID; 8 KiB per image).
    cache_dir: the cache root (default `cfgdiff.metrics.cache.cache_root()`); entries go to `references/`.
    size: the samples' (H, W). Reference images of another size are refused (ConfigError, one line
        ending in `hint`) unless `resize` is "area" (each is area-resized to the samples' size, as
        `prepare` makes datasets) or "none" (compared as they are). See sources.REF_RESIZES.
    A collective call under torchrun: every rank computes its shard, rank 0 writes the cache.
    """
    inp = open_input(ref)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    sha256 = memo_content_sha256(inp.path, root)
    if inp.images is None:  # a statistics file: nothing to compute (and no size to check)
        return Reference(statistics_from_arrays(inp.stats), str(ref), inp.kind, sha256)
    images, tag = inp.images, ""
    if size is not None and resize == "area":
        if size[0] != size[1]:
            raise ConfigError(f"--ref-resize area needs square samples, these are {size[0]}x{size[1]}")
        images, tag = AreaResized(images, size[0]), f"-area{size[0]}"
    elif size is not None and resize != "none":
        images = SizeChecked(images, size, hint)
    cache_file = root / "references" / f"{sha256[:24]}-{detector.sha256[:12]}{tag}.npz"
    stats = read_cached(cache_file, need_pool)
    if stats is None:
        stats = statistics_of(images, detector, keep_pool=need_pool, keep_logits=False, batch_size=batch_size,
                              desc="reference")
        if dist.is_main():
            arrays = statistics_arrays(stats, with_features=True, extra={"content_sha256": sha256})
            cache_write(cache_file, lambda tmp: _savez(tmp, arrays))
    if inp.stats is not None:  # ADM's convention: stored mu/sigma win over recomputed ones
        stored = statistics_from_arrays(inp.stats)
        stats = dataclasses.replace(stats, pool=stored.pool, spatial=stored.spatial or stats.spatial)
    return Reference(stats, str(ref), inp.kind, sha256, str(cache_file), tag[1:] or None)


def save_statistics(stats: Statistics, path: str | Path, with_features: bool = False,
                    extra: dict[str, str] | None = None, owner: Owner | None = None) -> None:
    """Write an ADM-style statistics npz (mu, sigma, mu_s, sigma_s, count) atomically.

    `--ref` reads it back; so do pytorch-fid (mu, sigma) and ADM's `read_statistics`. With
    `with_features`, the pool features and the weights hash go in too (the reference cache's format).
    """
    write_npz(Path(path), owner=owner, **statistics_arrays(stats, with_features, extra))


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add .npz to a name
        np.savez(f, **arrays)


def statistics_arrays(stats: Statistics, with_features: bool = False,
                      extra: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a statistics npz (see `save_statistics`)."""
    arrays: dict[str, np.ndarray] = {"mu": stats.pool.mu, "sigma": stats.pool.sigma}
    if stats.spatial is not None:
        arrays.update(mu_s=stats.spatial.mu, sigma_s=stats.spatial.sigma)
    if stats.count is not None:
        arrays["count"] = np.array(stats.count)
    if with_features:
        if stats.pool_features is not None:
            arrays["pool_features"] = stats.pool_features
        arrays["weights_sha256"] = np.array(stats.weights_sha256 or "")
        arrays.update({k: np.array(v) for k, v in (extra or {}).items()})
    return arrays


def read_cached(path: Path, need_pool: bool) -> Statistics | None:
    """Statistics from a cache entry, or None if it is absent, unreadable or lacks the pool features."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if need_pool and "pool_features" not in z.files:
                return None
            spatial = Moments(z["mu_s"], z["sigma_s"]) if "mu_s" in z.files else None
            return Statistics(int(z["count"]), Moments(z["mu"], z["sigma"]), spatial,
                              z["pool_features"] if need_pool else None, None, str(z["weights_sha256"]) or None)
    except (OSError, ValueError, KeyError, EOFError, TypeError):
        return None  # a damaged entry is recomputed and overwritten, never trusted
