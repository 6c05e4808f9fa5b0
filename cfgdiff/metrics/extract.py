"""Images -> Statistics: every rank reads its contiguous shard, runs the detector, and the sums are all-reduced.

Contiguous shards (rank r reads [r·N/W, (r+1)·N/W)) keep the gathered per-image features in the
input's order, so IS splits are the same on one GPU or eight.
"""

from __future__ import annotations

import numpy as np

from cfgdiff import dist
from cfgdiff.console import Progress
from cfgdiff.errors import DataError
from cfgdiff.metrics.detector import InceptionDetector
from cfgdiff.metrics.sources import ImageSource
from cfgdiff.metrics.stats import FeatureAccumulator, Moments, Statistics


def shard(count: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of `count` items."""
    return count * rank // world, count * (rank + 1) // world


def statistics_of(source: ImageSource, detector: InceptionDetector, *, keep_pool: bool, keep_logits: bool,
                  batch_size: int = 64, desc: str = "inception") -> Statistics:
    """Statistics of all images of `source` (a collective call under torchrun)."""
    start, stop = shard(source.count, dist.rank(), dist.world_size())
    acc = FeatureAccumulator(keep_pool=keep_pool, keep_logits=keep_logits)
    # Rank 0 reports its own shard; the others run at the same pace.
    with Progress(f"{desc} {source.path.name}", total=stop - start, unit="img") as bar:
        for images in source.batches(start, stop, batch_size):
            acc.add_images(detector, images)
            bar.advance(len(images))
    return acc.finalize(detector.sha256)


def statistics_from_arrays(stats: dict[str, np.ndarray]) -> Statistics:
    """Statistics from stored mu/sigma (and mu_s/sigma_s, count) arrays; no per-image features."""
    if stats["mu"].ndim != 1:
        raise DataError(f"stored mu must be a vector, got shape {stats['mu'].shape}")
    spatial = Moments(stats["mu_s"], stats["sigma_s"]) if "mu_s" in stats else None
    count = int(stats["count"]) if "count" in stats else None
    return Statistics(count, Moments(stats["mu"], stats["sigma"]), spatial)
