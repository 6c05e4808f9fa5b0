"""Improved precision and recall (Kynkäänniemi et al. 2019), as ADM's evaluator computes them.

Each set of features is a union of hyperspheres: around every feature, radius = the distance to its
k-th nearest neighbour in the same set (k = 3, the feature itself not counted). Precision is the
fraction of generated features inside the reference manifold; recall, the fraction of reference
features inside the generated manifold. Distances are squared Euclidean, ‖u‖² − 2u·v + ‖v‖² clamped at
0, in blocks of `batch` rows so 50,000 × 50,000 never materialises. ADM computes the blocks in float16
(falling back to float32); here they are float32, on the given device.
"""

from __future__ import annotations

import numpy as np
import torch

from cfgdiff.errors import MetricsError
from cfgdiff.metrics.detector import full_fp32


def _sq_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(len(u), len(v)) squared Euclidean distances."""
    d = (u * u).sum(1, keepdim=True) - 2 * u @ v.T + (v * v).sum(1)[None]
    return d.clamp_(min=0)


def _as_features(x: np.ndarray, name: str, k: int, device: torch.device) -> torch.Tensor:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] <= k:
        raise MetricsError(f"{name}: precision/recall with k={k} needs more than {k} features (N, D), "
                           f"got shape {x.shape}")
    if not np.isfinite(x).all():
        raise MetricsError(f"{name}: features contain NaN or inf")
    return torch.as_tensor(x, dtype=torch.float32, device=device)


def knn_radii(x: torch.Tensor, k: int = 3, batch: int = 10000) -> torch.Tensor:
    """Squared distance of every row of x (N, D) to its k-th nearest other row."""
    radii = [torch.kthvalue(_sq_distances(x[i : i + batch], x), k + 1, dim=1).values  # +1: itself at 0
             for i in range(0, len(x), batch)]
    return torch.cat(radii)


def precision_recall(ref: np.ndarray, gen: np.ndarray, k: int = 3, batch: int = 10000,
                     device: torch.device | str = "cpu") -> tuple[float, float]:
    """(precision, recall) of generated features `gen` (N, D) against reference features `ref` (M, D)."""
    ref_t, gen_t = _as_features(ref, "reference", k, device), _as_features(gen, "samples", k, device)
    if ref_t.shape[1] != gen_t.shape[1]:
        raise MetricsError(f"feature dimensions differ: {ref_t.shape[1]} and {gen_t.shape[1]}")
    with full_fp32():  # TF32's 10-bit products would move features across the radii's boundaries
        r_ref, r_gen = knn_radii(ref_t, k, batch), knn_radii(gen_t, k, batch)
        gen_in = torch.zeros(len(gen_t), dtype=torch.bool, device=gen_t.device)
        ref_in = torch.zeros(len(ref_t), dtype=torch.bool, device=ref_t.device)
        for i in range(0, len(gen_t), batch):
            d = _sq_distances(gen_t[i : i + batch], ref_t)  # (b, M)
            gen_in[i : i + batch] = (d <= r_ref[None]).any(1)  # inside some reference sphere
            ref_in |= (d <= r_gen[i : i + batch, None]).any(0)  # reference inside some generated sphere
    return float(gen_in.double().mean()), float(ref_in.double().mean())
