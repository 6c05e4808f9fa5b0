"""Adapting a network to an ε-predictor: the one place where λ meets the network's input.

The network (cfgdiff.nn) knows nothing of diffusion: it takes images x (B, C, H, W), a noise
condition c_noise (B,) and labels (B,). The paper only says that x_θ "also receives λ"; cfgdiff
feeds c_noise = 1000·u(λ), where u(λ) ∈ [0, 1] inverts the map of p(λ) (Sec. 2). This keeps ADM's
time-embedding scale (t ∈ [0, 1000], sinusoidal embedding with max period 10000), and λ sampled
from p(λ) gives c_noise uniform on [0, 1000].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cfgdiff.config import DiffusionConfig
from cfgdiff.diffusion.guidance import EpsFn
from cfgdiff.diffusion.schedule import alpha, sigma, u_of_lambda


def noise_condition(lam: Tensor, diffusion: DiffusionConfig) -> Tensor:
    """c_noise = 1000·u(λ): 0 at λ_max (clean), 1000 at λ_min (pure noise)."""
    return 1000.0 * u_of_lambda(lam.double(), diffusion.lam_min, diffusion.lam_max)


def network_eps(net: torch.nn.Module, diffusion: DiffusionConfig, autocast: torch.dtype | None = None,
                w: float | None = None) -> EpsFn:
    """ε(z, λ, labels) from `net(x, c_noise, labels)`; the result has z's dtype.

    The input is cast to the network's parameter dtype; with `autocast` (e.g. torch.bfloat16 on
    CUDA) the forward runs under torch.autocast. `w`: the guidance weight fed to a w-conditioned
    student (model.w_embedding) at every call; its ε is then already the guided ε̃ (one B batch).
    """
    if w is None:
        return lambda z, lam, labels: _forward(net, diffusion, autocast, z, lam, labels, None)
    return lambda z, lam, labels: _forward(net, diffusion, autocast, z, lam, labels,
                                           torch.full((z.shape[0],), float(w), dtype=torch.float64, device=z.device))


def network_x(net: torch.nn.Module, diffusion: DiffusionConfig, autocast: torch.dtype | None = None
              ) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """x̂(z, λ, labels, w) in float64 of a w-conditioned student (distillation's training), w one per
    example: α z − σ v for a v-network (exact at every λ), (z − σ ε)/α for an ε one."""

    def x_hat(z: Tensor, lam: Tensor, labels: Tensor, w: Tensor) -> Tensor:
        out = _raw(net, diffusion, autocast, z, lam, labels, w).double()
        a, s = _column(alpha(lam.double()), z), _column(sigma(lam.double()), z)
        return a * z.double() - s * out if diffusion.prediction == "v" else (z.double() - s * out) / a

    return x_hat


def _column(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def _raw(net: torch.nn.Module, diffusion: DiffusionConfig, autocast: torch.dtype | None, z: Tensor, lam: Tensor,
         labels: Tensor, w: Tensor | None) -> Tensor:
    """The network's output (ε, or v with diffusion.prediction "v") in z's dtype."""
    dtype = next(net.parameters()).dtype
    c_noise = noise_condition(lam, diffusion).to(dtype)
    extra = () if w is None else (w.to(dtype),)
    with torch.autocast(z.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        out = net(z.to(dtype), c_noise, labels, *extra)
    return out.to(z.dtype)


def _forward(net: torch.nn.Module, diffusion: DiffusionConfig, autocast: torch.dtype | None, z: Tensor, lam: Tensor,
             labels: Tensor, w: Tensor | None) -> Tensor:
    """ε: the output itself, or from v as ε = σ z + α v (in float64, then z's dtype)."""
    out = _raw(net, diffusion, autocast, z, lam, labels, w)
    if diffusion.prediction != "v":
        return out
    lam = lam.double()
    eps = _column(sigma(lam), z) * z.double() + _column(alpha(lam), z) * out.double()
    return eps.to(z.dtype)
