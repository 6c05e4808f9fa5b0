"""The training objective, Eq. 5, with the label dropout of Sec. 3.2."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cfgdiff.config import DiffusionConfig
from cfgdiff.diffusion.schedule import alpha, sample_lambda, sigma


def drop_labels(labels: Tensor, p_uncond: float, null_label: int, generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by ∅ (= `null_label`) with probability p_uncond (Sec. 3.2)."""
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def diffusion_loss(
    eps_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    x: Tensor,
    labels: Tensor,
    num_classes: int,
    cfg: DiffusionConfig = DiffusionConfig(),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-example loss of Eq. 5, ‖ε_θ(z_λ, c) − ε‖² averaged over dimensions, shape (B,).

    λ ~ p(λ), ε ~ N(0, I), z_λ = α_λ x + σ_λ ε, and c → ∅ with probability p_uncond. The mean over
    dimensions (ADM's `mean_flat`) instead of the sum of Eq. 5 only rescales the loss by a constant.
    All randomness comes from `generator`, so training is reproducible and resumable.
    """
    b = x.shape[0]
    lam = sample_lambda(b, cfg.lam_min, cfg.lam_max, generator=generator, device=x.device)  # (B,) float64
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    bcast = (b,) + (1,) * (x.dim() - 1)
    z = alpha(lam).view(bcast).to(x.dtype) * x + sigma(lam).view(bcast).to(x.dtype) * eps
    c = drop_labels(labels, cfg.p_uncond, num_classes, generator)
    eps_hat = eps_fn(z, lam.to(x.dtype), c)
    return (eps_hat.float() - eps.float()).square().flatten(1).mean(1)
