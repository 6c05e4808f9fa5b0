"""Adapting a network to an ε-predictor: the one place where λ meets the network's input.

The network (cfgdiff.nn) knows nothing of diffusion: it takes images x (B, C, H, W), a noise
condition c_noise (B,) and labels (B,). The paper only says that x_θ "also receives λ"; cfgdiff
feeds c_noise = 1000·u(λ), where u(λ) ∈ [0, 1] inverts the map of p(λ) (Sec. 2). This keeps ADM's
time-embedding scale (t ∈ [0, 1000], sinusoidal embedding with max period 10000), and λ sampled
from p(λ) gives c_noise uniform on [0, 1000].
"""

from __future__ import annotations

import torch
from torch import Tensor

from cfgdiff.config import DiffusionConfig
from cfgdiff.diffusion.guidance import EpsFn
from cfgdiff.diffusion.schedule import u_of_lambda


def noise_condition(lam: Tensor, diffusion: DiffusionConfig) -> Tensor:
    """c_noise = 1000·u(λ): 0 at λ_max (clean), 1000 at λ_min (pure noise)."""
    return 1000.0 * u_of_lambda(lam.double(), diffusion.lam_min, diffusion.lam_max)


def network_eps(net: torch.nn.Module, diffusion: DiffusionConfig, autocast: torch.dtype | None = None) -> EpsFn:
    """ε(z, λ, labels) from `net(x, c_noise, labels)`; the result has z's dtype.

    The input is cast to the network's parameter dtype; with `autocast` (e.g. torch.bfloat16 on
    CUDA) the forward runs under torch.autocast.
    """
    dtype = next(net.parameters()).dtype

    def eps(z: Tensor, lam: Tensor, labels: Tensor) -> Tensor:
        c_noise = noise_condition(lam, diffusion).to(dtype)
        with torch.autocast(z.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            out = net(z.to(dtype), c_noise, labels)
        return out.to(z.dtype)

    return eps
