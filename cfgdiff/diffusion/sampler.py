"""The ancestral sampler of Sec. 2 (Eq. 3 and Eq. 4) over any ε-predictor.

Notation map (paper → code): λ → lam, λ' → lam_next, α_λ → alpha, σ_λ → sigma, ε_θ → eps_hat,
x_θ → x_hat, z_λ → z, v → v, T → steps.

Starting from z ~ N(0, I) at λ_1 = λ_min, each step goes from λ to λ' > λ with

    x̂ = (z_λ − σ_λ ε̂) / α_λ                                                  (ε-parameterisation)
    μ̃_{λ'|λ}(z_λ, x̂) = e^{λ−λ'} (α_{λ'}/α_λ) z_λ + (1 − e^{λ−λ'}) α_{λ'} x̂   (Eq. 3)
    z_{λ'} ~ N(μ̃, (σ̃²_{λ'|λ})^{1−v} (σ²_{λ|λ'})^v)                                (Eq. 4)
    σ̃²_{λ'|λ} = (1 − e^{λ−λ'}) σ²_{λ'},   σ²_{λ|λ'} = (1 − e^{λ−λ'}) σ²_λ

and at λ_T = λ_max the sampler returns x̂ without noise. So T counts network evaluations per sample
(without guidance; guidance makes each one a 2B batch): T − 1 stochastic transitions and one final
denoising. The state z is kept in float64; the predictor may compute in any precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from cfgdiff.config import DiffusionConfig, SamplerConfig
from cfgdiff.diffusion.guidance import EpsFn, guided_eps
from cfgdiff.diffusion.schedule import log_alpha2, log_sigma2, sampling_lambdas


@dataclass(frozen=True)
class StepCoefficients:
    """Per-step scalars of the sampler, float64, each of shape (T,) (the last transition unused).

    x̂_i = (z − sigma[i]·ε̂) / alpha[i];  z' = c_z[i]·z + c_x[i]·x̂ + std[i]·noise.
    """

    lam: Tensor
    alpha: Tensor
    sigma: Tensor
    c_z: Tensor
    c_x: Tensor
    std: Tensor


def step_coefficients(lam: Tensor, v: float) -> StepCoefficients:
    """Precompute Eq. 3/Eq. 4 for the grid `lam` (T,), so a step is three fused multiply-adds."""
    la2, ls2 = log_alpha2(lam), log_sigma2(lam)
    alpha, sigma = torch.exp(0.5 * la2), torch.exp(0.5 * ls2)
    lam_cur, lam_next = lam[:-1], lam[1:]
    d = lam_cur - lam_next  # λ − λ' < 0
    r = torch.exp(d)  # e^{λ−λ'}
    one_minus_r = -torch.expm1(d)  # 1 − e^{λ−λ'}, exact for small steps
    c_z = r * torch.exp(0.5 * (la2[1:] - la2[:-1]))  # e^{λ−λ'} α_{λ'}/α_λ        (Eq. 3)
    c_x = one_minus_r * alpha[1:]  # (1 − e^{λ−λ'}) α_{λ'}                         (Eq. 3)
    log_var = torch.log(one_minus_r) + (1 - v) * ls2[1:] + v * ls2[:-1]  # log of Eq. 4's variance
    std = torch.exp(0.5 * log_var)
    pad = torch.zeros(1, dtype=lam.dtype, device=lam.device)
    return StepCoefficients(
        lam=lam,
        alpha=alpha,
        sigma=sigma,
        c_z=torch.cat([c_z, pad]),
        c_x=torch.cat([c_x, pad]),
        std=torch.cat([std, pad]),
    )


def ancestral_sample(
    eps_fn: EpsFn,
    labels: Tensor,
    noise: Callable[[], Tensor],
    cfg: SamplerConfig = SamplerConfig(),
    diffusion: DiffusionConfig = DiffusionConfig(),
    null_label: int | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Draw samples x (float64) with T = cfg.steps ε-evaluations, guided by cfg.w (Eq. 6).

    `noise()` returns the next standard normal draw (B, ...) in float64: the first call gives
    z_{λ_min}, each transition takes one more. `null_label` (∅) is needed when cfg.w > 0.
    `callback(i, T)` is called after each network evaluation.
    """
    if cfg.w != 0 and null_label is None:
        raise ValueError("guidance (w > 0) needs the null label ∅")
    eps = guided_eps(eps_fn, cfg.w, null_label if null_label is not None else -1)
    z = noise()  # z_{λ_min} ~ N(0, I)
    lam = sampling_lambdas(cfg.steps, diffusion.lam_min, diffusion.lam_max, device=z.device)
    k = step_coefficients(lam, cfg.v)
    b = z.shape[0]
    for i in range(cfg.steps):
        eps_hat = eps(z, k.lam[i].expand(b), labels).double()
        x_hat = (z - k.sigma[i] * eps_hat) / k.alpha[i]
        if cfg.clip_x:
            x_hat = x_hat.clamp(-1.0, 1.0)
        if callback is not None:
            callback(i + 1, cfg.steps)
        if i == cfg.steps - 1:
            return x_hat  # the last step returns x̂ without noise
        z = k.c_z[i] * z + k.c_x[i] * x_hat + k.std[i] * noise()  # Eq. 4
    raise AssertionError("unreachable")
