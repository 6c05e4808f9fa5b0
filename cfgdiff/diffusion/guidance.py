"""Classifier-free guidance, Eq. 6, as a wrapper around any ε-predictor.

    ε̃_θ(z_λ, c) = (1 + w) ε_θ(z_λ, c) − w ε_θ(z_λ, ∅)                                  (Eq. 6)

w = 0 is the plain conditional model. Other tools write the same rule with a "guidance scale"
s = 1 + w: ε̃ = s·ε(z, c) + (1 − s)·ε(z, ∅). cfgdiff's options always take the paper's w.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

EpsFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def guided_eps(eps_fn: EpsFn, w: float, null_label: int) -> EpsFn:
    """Return ε̃ of Eq. 6 for `eps_fn(z, lam, labels)`.

    The conditional and unconditional predictions come from ONE call on a 2B batch (z and λ
    repeated, labels followed by ∅ = `null_label`). For w = 0 the predictor itself is returned: a B
    batch and no unconditional pass. Every channel is guided.
    """
    if w == 0:
        return eps_fn

    def eps_tilde(z: Tensor, lam: Tensor, labels: Tensor) -> Tensor:
        null = torch.full_like(labels, null_label)
        eps = eps_fn(torch.cat([z, z]), torch.cat([lam, lam]), torch.cat([labels, null]))  # (2B, ...)
        eps_c, eps_u = eps.chunk(2)
        return (1 + w) * eps_c - w * eps_u  # Eq. 6

    return eps_tilde
