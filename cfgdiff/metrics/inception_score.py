"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)), mean ± std over splits.

Conventions (the same number as ADM's evaluator for 50,000 images, and as torch-fidelity without its
shuffle): softmax of the 1008 logits *without* the head's bias, in float64; the images in their given
order (no shuffling) cut into `splits` contiguous splits of N // splits images (a remainder of fewer
than `splits` images is dropped, as torch-fidelity does); p(y) is the mean prediction within each split;
std is the population standard deviation (ddof = 0) of the per-split scores.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp

from cfgdiff.errors import MetricsError


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the Inception Score of (N, K) logits over `splits` contiguous splits."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2:
        raise MetricsError(f"logits must be (N, K), got shape {logits.shape}")
    if splits < 1 or logits.shape[0] < splits:
        raise MetricsError(f"IS needs at least one image per split: {logits.shape[0]} images, {splits} splits")
    if not np.isfinite(logits).all():
        raise MetricsError("logits contain NaN or inf")
    size = logits.shape[0] // splits
    scores = []
    for k in range(splits):
        log_p = log_softmax(logits[k * size : (k + 1) * size], axis=1)  # log p(y|x), (size, K)
        log_py = logsumexp(log_p, axis=0) - np.log(size)  # log p(y) over the split, (K,), finite
        kl = (np.exp(log_p) * (log_p - log_py)).sum(axis=1)  # KL(p(y|x) ‖ p(y)); 0·log 0 terms are 0·finite
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
