"""Streaming feature statistics: float64 sums per batch, all-reduced across ranks at the end (EDM2's pattern).

    acc = FeatureAccumulator(keep_pool=True, keep_logits=True)
    for images in batches:                  # uint8 (B, H, W, 3); the images themselves are not kept
        acc.add_images(detector, images)
    stats = acc.finalize(detector.sha256)   # every rank gets the same Statistics

Mean and covariance come from Σx and Σxxᵀ in float64 (covariance with N − 1, like `np.cov`), for pool_3
(FID) and the 2023-d spatial features (sFID). Precision/recall and KID need the pool features
themselves and IS needs the logits: those are kept per image (float32, on the CPU) only when asked,
and gathered across ranks in rank order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from cfgdiff import dist
from cfgdiff.errors import MetricsError
from cfgdiff.metrics.inception import NUM_LOGITS, POOL_DIM, SPATIAL_DIM, Features


@dataclasses.dataclass(frozen=True)
class Moments:
    """Mean (D,) and covariance (D, D) in float64, from `count` vectors."""

    mu: np.ndarray
    sigma: np.ndarray


@dataclasses.dataclass(frozen=True)
class Statistics:
    """Everything the metrics need about one set of images.

    pool/spatial: moments of pool_3 (FID) and mixed_6/conv[..., :7] (sFID; None for a stats file without it).
    pool_features: (N, 2048) float32 for precision/recall and KID, or None.
    logits: (N, 1008) float32 unbiased logits for IS, or None.
    weights_sha256: the detector's weights (None for statistics read from a file of unknown origin).
    """

    count: int | None  # None: read from a statistics file that does not say
    pool: Moments
    spatial: Moments | None = None
    pool_features: np.ndarray | None = None
    logits: np.ndarray | None = None
    weights_sha256: str | None = None


class _MomentSums:
    """n, Σx and Σxxᵀ of D-dimensional rows, float64 on the features' device."""

    def __init__(self) -> None:
        self.n = 0
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:  # x (B, D)
        x = x.to(torch.float64)
        if self.s1 is None:
            self.s1 = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            self.s2 = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        self.n += x.shape[0]
        self.s1 += x.sum(0)
        self.s2.addmm_(x.T, x)

    def reduce(self, count: int) -> Moments:
        """All-reduce the sums and turn them into mean and covariance (N − 1)."""
        s1, s2 = dist.all_reduce_sum(self.s1.clone()), dist.all_reduce_sum(self.s2.clone())
        mu = s1 / count
        sigma = (s2 - count * torch.outer(mu, mu)) / (count - 1)
        sigma = (sigma + sigma.T) / 2  # exact symmetry, as np.cov gives
        return Moments(mu.cpu().numpy(), sigma.cpu().numpy())


class FeatureAccumulator:
    """Accumulates detector features batch by batch; `finalize` reduces them across ranks."""

    def __init__(self, keep_pool: bool = False, keep_logits: bool = False):
        self.keep_pool, self.keep_logits = keep_pool, keep_logits
        self._pool, self._spatial = _MomentSums(), _MomentSums()
        self._pool_rows: list[np.ndarray] = []
        self._logit_rows: list[np.ndarray] = []
        self._has_logits = True

    @property
    def count(self) -> int:
        """Images added on this rank."""
        return self._pool.n

    def add(self, feats: Features) -> None:
        """Add one batch of detector features."""
        if not (torch.isfinite(feats.pool).all() and torch.isfinite(feats.spatial).all()):
            raise MetricsError("Inception features are not finite (NaN/inf in the input or the weights)")
        self._pool.add(feats.pool)
        self._spatial.add(feats.spatial)
        if self.keep_pool:
            self._pool_rows.append(feats.pool.float().cpu().numpy())
        self._has_logits &= feats.logits is not None
        if self.keep_logits and feats.logits is not None:
            self._logit_rows.append(feats.logits.float().cpu().numpy())

    def add_images(self, detector, images) -> None:
        """Run the detector on uint8 (B, H, W, 3) images and add their features."""
        self.add(detector.features(images))

    def finalize(self, weights_sha256: str | None = None) -> Statistics:
        """Statistics over all ranks' images (a collective call: every rank must call it)."""
        count = int(dist.all_reduce_sum(torch.tensor([self.count], dtype=torch.int64, device=dist.device())).item())
        if count < 1:  # one image gives NaN covariances: the metrics that need them say so (score --force)
            raise MetricsError("no images to compute statistics of")
        if self._pool.s1 is None:  # this rank got an empty shard: contribute zeros of the right size
            self._pool.add(torch.zeros(0, POOL_DIM, device=dist.device()))
            self._spatial.add(torch.zeros(0, SPATIAL_DIM, device=dist.device()))
        pool_features = self._gather(self._pool_rows, POOL_DIM) if self.keep_pool else None
        has_logits = bool(dist.all_reduce_sum(torch.tensor([int(not self._has_logits)], device=dist.device())) == 0)
        logits = self._gather(self._logit_rows, NUM_LOGITS) if self.keep_logits and has_logits else None
        return Statistics(count, self._pool.reduce(count), self._spatial.reduce(count), pool_features, logits,
                          weights_sha256)

    @staticmethod
    def _gather(rows: list[np.ndarray], dim: int) -> np.ndarray:
        local = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
        if dist.world_size() == 1:
            return local
        return dist.all_gather_rows(torch.from_numpy(local).to(dist.device())).cpu().numpy()
