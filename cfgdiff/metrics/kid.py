"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel.

    k(x, y) = (xᵀy / D + 1)³
    MMD²_u = Σ_{i≠j} k(xᵢ,xⱼ) / m(m−1) + Σ_{i≠j} k(yᵢ,yⱼ) / m(m−1) − 2 Σ_{i,j} k(xᵢ,yⱼ) / m²

averaged over `subsets` random subsets of m = min(N, M, subset_size) features from each set, drawn
without replacement (StyleGAN2-ADA's and torch-fidelity's defaults: 100 subsets of 1000; the seed is
torch-fidelity's 2020).
"""

from __future__ import annotations

import numpy as np

from cfgdiff.errors import MetricsError


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of two equal-sized float64 samples (m, D) under the cubic polynomial kernel."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / m**2)


def kernel_inception_distance(gen: np.ndarray, ref: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 2020) -> tuple[float, float]:
    """(mean, std) of MMD²_u over random subsets of generated (N, D) and reference (M, D) features."""
    gen, ref = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise MetricsError(f"KID needs (N, D) and (M, D) features, got {gen.shape} and {ref.shape}")
    m = min(len(gen), len(ref), subset_size)
    if m < 2:
        raise MetricsError(f"KID needs at least 2 features in each set, got {len(gen)} and {len(ref)}")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(gen[rng.choice(len(gen), m, replace=False)], ref[rng.choice(len(ref), m, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
