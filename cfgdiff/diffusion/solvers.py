"""The built-in samplers. Each one takes the sampler contract's arguments (see `sampler.py`):

    run(eps, lams, labels, noise, cfg) -> x

`eps(z, lam, labels)` is the guided ε̃ at the Python float λ (already float64), `lams` the λ grid
λ_1 = λ_min < … < λ_T = λ_max (T,) float64 on the labels' device, `noise()` the next standard normal
draw (B, ...) float64 (the first call gives z_{λ_min}). The state z is float64 throughout, and every
sampler ends by returning x̂ at λ_T without noise. x̂ is clipped to [−1, 1] (cfg.clip_x) or dynamically
thresholded (cfg.threshold) inside every step, so that value is what enters the update.

Notation map (papers → code): λ (log-SNR, log α²/σ²) → lam; α_λ, σ_λ → alpha, sigma; ε_θ → eps_hat;
x_θ → x_hat; DPM-Solver's λ = log α/σ → lam / 2; EDM's σ = σ_λ/α_λ → sigma_e, EDM's x = z/α → x_e.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from cfgdiff.config import SamplerConfig
from cfgdiff.diffusion.methods import get_method
from cfgdiff.diffusion.schedule import alpha_sigma_at, log_alpha2, log_sigma2

StepEps = Callable[[Tensor, float, Tensor], Tensor]
Noise = Callable[[], Tensor]




def dynamic_threshold(x_hat: Tensor, pct: float) -> Tensor:
    """Dynamic thresholding (Saharia et al. 2022, Sec. 2.3; DPM-Solver++ Sec. 4): per sample,
    s = max(1, the pct-quantile of |x̂|), then x̂ → clamp(x̂, −s, s)/s."""
    s = torch.quantile(x_hat.abs().flatten(1), pct, dim=1).clamp(min=1.0)
    s = s.view((-1,) + (1,) * (x_hat.dim() - 1))
    return torch.maximum(torch.minimum(x_hat, s), -s) / s


def threshold_x(x_hat: Tensor, cfg: SamplerConfig) -> Tensor:
    """x̂ as it enters an update: dynamically thresholded (cfg.threshold), else clipped to [−1, 1]
    (cfg.clip_x, static thresholding), else as is."""
    if cfg.threshold:
        return dynamic_threshold(x_hat, cfg.threshold)
    return x_hat.clamp(-1.0, 1.0) if cfg.clip_x else x_hat


def _x_hat(z: Tensor, eps_hat: Tensor, alpha: float, sigma: float, cfg: SamplerConfig) -> Tensor:
    """x_θ = (z − σ ε̂)/α, thresholded by `threshold_x`."""
    return threshold_x((z - sigma * eps_hat) / alpha, cfg)


# ---------------------------------------------------------------------------------------------
# ancestral: Ho & Salimans 2022, Eq. 3 and Eq. 4 (with v)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepCoefficients:
    """Per-step scalars of the sampler, float64: alpha, sigma of shape (T,), one per λ_i; c_z, c_x,
    std of shape (T − 1,), one per transition λ_i → λ_{i+1}.

    x̂_i = (z − sigma[i]·ε̂) / alpha[i];  z' = c_z[i]·z + c_x[i]·x̂ + std[i]·noise.
    """

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
    return StepCoefficients(alpha=alpha, sigma=sigma, c_z=c_z, c_x=c_x, std=std)


def ancestral(eps: StepEps, lams: Tensor, labels: Tensor, noise: Noise, cfg: SamplerConfig) -> Tensor:
    """Ho & Salimans 2022, Sec. 2: from λ to λ' > λ,

        μ̃_{λ'|λ}(z_λ, x̂) = e^{λ−λ'} (α_{λ'}/α_λ) z_λ + (1 − e^{λ−λ'}) α_{λ'} x̂        (Eq. 3)
        z_{λ'} ~ N(μ̃, (σ̃²_{λ'|λ})^{1−v} (σ²_{λ|λ'})^v)                                 (Eq. 4)
        σ̃²_{λ'|λ} = (1 − e^{λ−λ'}) σ²_{λ'},   σ²_{λ|λ'} = (1 − e^{λ−λ'}) σ²_λ

    T − 1 stochastic transitions, one noise draw each. Bit-identical to cfgdiff 0.1's sampler on the same CPU.
    """
    z = noise()  # z_{λ_min} ~ N(0, I)
    k = step_coefficients(lams, cfg.setting("v"))
    lam_list = lams.tolist()
    steps = len(lam_list)

    def x_hat_at(i: int, z: Tensor) -> Tensor:
        return threshold_x((z - k.sigma[i] * eps(z, lam_list[i], labels)) / k.alpha[i], cfg)

    for i in range(steps - 1):
        x_hat = x_hat_at(i, z)
        z = k.c_z[i] * z + k.c_x[i] * x_hat + k.std[i] * noise()  # Eq. 4
    return x_hat_at(steps - 1, z)  # the last step returns x̂ without noise


# ---------------------------------------------------------------------------------------------
# ddim: Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", Eq. 12 and Eq. 16, in λ
# ---------------------------------------------------------------------------------------------


def ddim(eps: StepEps, lams: Tensor, labels: Tensor, noise: Noise, cfg: SamplerConfig) -> Tensor:
    """DDIM (Song et al. 2021, Eq. 12) with their σ_t(η) of Eq. 16, written in λ:

        z_{λ'} = α_{λ'} x̂ + √(σ²_{λ'} − s²) ε̂ + s·noise,    s² = η² (1 − e^{λ−λ'}) σ²_{λ'}

    (Eq. 16's (1−ᾱ_{t−1})/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_{t−1}) is (1 − e^{λ−λ'}) σ²_{λ'}: at η = 1 this is
    the ancestral sampler with v = 0.) η = 0 is deterministic and draws no noise after z_{λ_min}.
    With clipping, ε̂ is recomputed from the clipped x̂ (ε̂ = (z − α x̂)/σ), so the step stays
    consistent with z. A renoising guidance method (CFG++) replaces ε̂ in the direction term
    √(σ²_{λ'} − s²)·ε̂ by the ε it returns beside ε̃ (ε_u), clipped or not.
    """
    z = noise()
    lam_list = lams.tolist()
    eta = cfg.setting("eta")
    renoising = get_method(cfg.guidance).renoise  # CFG++: the direction term takes ε_u (methods.py)
    for lam, lam_next in zip(lam_list[:-1], lam_list[1:]):
        alpha, sigma = alpha_sigma_at(lam)
        eps_hat, renoise = eps(z, lam, labels, with_renoise=True) if renoising else (eps(z, lam, labels), None)
        x_hat = _x_hat(z, eps_hat, alpha, sigma, cfg)
        if cfg.clip_x or cfg.threshold:
            eps_hat = (z - alpha * x_hat) / sigma
        direction = eps_hat if renoise is None else renoise
        alpha_next, sigma_next = alpha_sigma_at(lam_next)
        var = eta**2 * -math.expm1(lam - lam_next) * sigma_next**2  # s², Eq. 16 in λ
        z = alpha_next * x_hat + math.sqrt(sigma_next**2 - var) * direction  # Eq. 12
        if eta > 0:
            z = z + math.sqrt(var) * noise()
    alpha, sigma = alpha_sigma_at(lam_list[-1])
    return _x_hat(z, eps(z, lam_list[-1], labels), alpha, sigma, cfg)


# ---------------------------------------------------------------------------------------------
# distill-sde: Meng et al. 2023, "On Distillation of Guided Diffusion Models", Sec. 4.2
# ---------------------------------------------------------------------------------------------


def distill_sde(eps: StepEps, lams: Tensor, labels: Tensor, noise: Noise, cfg: SamplerConfig) -> Tensor:
    """The distilled models' stochastic sampler: from λ_i, one deterministic DDIM step of twice the
    length, to λ_{i+2}, then one stochastic step back to λ_{i+1} with the forward process,

        z_{i+1} = (α_{i+1}/α_{i+2}) z_{i+2} + √(σ²_{i+1} − (α_{i+1}/α_{i+2})² σ²_{i+2}) · noise

    (q(z_{λ} | z_{λ'}) for λ < λ'). The step into the last grid point has no point beyond it and is
    plain DDIM. One evaluation per grid point, as DDIM; x̂ clipped or thresholded as everywhere.
    """
    z = noise()
    lam = lams.tolist()
    steps = len(lam)
    for i in range(steps - 1):
        alpha, sigma = alpha_sigma_at(lam[i])
        x_hat = _x_hat(z, eps(z, lam[i], labels), alpha, sigma, cfg)
        j = min(i + 2, steps - 1)  # twice the step where the grid allows
        alpha_j, sigma_j = alpha_sigma_at(lam[j])
        z = alpha_j * x_hat + sigma_j * (z - alpha * x_hat) / sigma  # DDIM (η = 0) from x̂
        if j == i + 2:  # noise back to λ_{i+1}
            alpha_b, sigma_b = alpha_sigma_at(lam[i + 1])
            ratio = alpha_b / alpha_j
            z = ratio * z + math.sqrt(sigma_b**2 - ratio**2 * sigma_j**2) * noise()
    alpha, sigma = alpha_sigma_at(lam[-1])
    return _x_hat(z, eps(z, lam[-1], labels), alpha, sigma, cfg)


# ---------------------------------------------------------------------------------------------
# dpmpp-2m: Lu et al. 2022, "DPM-Solver++", Algorithm 2 (multistep, data prediction)
# ---------------------------------------------------------------------------------------------


# z_{i+1} from z_i, D_i, h_i = λ̄_{i+1} − λ̄_i and α_{i+1}, σ_i, σ_{i+1}
Update2M = Callable[[Tensor, Tensor, float, float, float, float], Tensor]


def _multistep_2m(eps: StepEps, lams: Tensor, labels: Tensor, noise: Noise, cfg: SamplerConfig,
                  update: Update2M) -> Tensor:
    """The loop both DPM-Solver++(2M) variants share (Lu et al. 2022, Alg. 2): x̂_i at each λ, then
    D_0 = x̂_0;  D_i = (1 + 1/(2r_i)) x̂_i − 1/(2r_i) x̂_{i−1},  r_i = h_{i−1}/h_i,
    then z_{i+1} = update(z_i, D_i, h_i, α_{i+1}, σ_i, σ_{i+1}). Returns x̂ at λ_T.

    The step into λ_T is first order, D = x̂, at every T: cfgdiff's own choice (DPM-Solver's code
    lowers the final order only below 10 steps; k-diffusion and diffusers only for the final step to
    σ = 0; docs/math.md). Grids that widen toward λ_max make the last step many times its
    predecessor: on the paper's grid at T = 16,
    r = 0.09, and the 2M extrapolation would be D = 6.5 x̂_i − 5.5 x̂_{i−1}, which leaves the
    network's error in x̂ amplified in the image (docs/benchmarks.md measures it).
    """
    z = noise()
    lam_list = lams.tolist()
    x_prev: Tensor | None = None
    h_prev = 0.0
    last = len(lam_list) - 1
    for i in range(last):
        lam, lam_next = lam_list[i], lam_list[i + 1]
        alpha, sigma = alpha_sigma_at(lam)
        x_hat = _x_hat(z, eps(z, lam, labels), alpha, sigma, cfg)
        alpha_next, sigma_next = alpha_sigma_at(lam_next)
        h = (lam_next - lam) / 2
        if x_prev is None or i == last - 1:  # first order on the first and the last step
            d = x_hat
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x_hat - (1 / (2 * r)) * x_prev
        z = update(z, d, h, alpha_next, sigma, sigma_next)
        x_prev, h_prev = x_hat, h
    alpha, sigma = alpha_sigma_at(lam_list[-1])
    return _x_hat(z, eps(z, lam_list[-1], labels), alpha, sigma, cfg)


def dpmpp_2m(eps: StepEps, lams: Tensor, labels: Tensor, noise: Noise, cfg: SamplerConfig) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2). In their half log-SNR λ̄ = λ/2, h_i = λ̄_{i+1} − λ̄_i:

        z_{i+1} = (σ_{i+1}/σ_i) z_i − α_{i+1} (e^{−h_i} − 1) D_i
        D_0 = x̂_0;  D_i = (1 + 1/(2r_i)) x̂_i − 1/(2r_i) x̂_{i−1},  r_i = h_{i−1}/h_i

    The first and the last step are first order (DDIM with η = 0). x̂ is the data prediction x_θ of the guided ε̃,
    clipped when cfg.clip_x before it enters D_i: the paper's thresholding of x_θ (Sec. 4),
    static (clip_x), or Saharia et al.'s dynamic thresholding at cfg.threshold (the paper's 0.995).
    """

    def update(z: Tensor, d: Tensor, h: float, alpha_next: float, sigma: float, sigma_next: float) -> Tensor:
        return (sigma_next / sigma) * z - alpha_next * math.expm1(-h) * d

    return _multistep_2m(eps, lams, labels, noise, cfg, update)


# ---------------------------------------------------------------------------------------------
# dpmpp-2m-sde: the stochastic DPM-Solver++(2M) (Lu et al. 2022, SDE-DPM-Solver++ with η = 1)
# ---------------------------------------------------------------------------------------------


def dpmpp_2m_sde(eps: StepEps, lams: Tensor, labels: Tensor, noise: Noise, cfg: SamplerConfig) -> Tensor:
    """The second-order multistep solver of the diffusion SDE in data prediction (Lu et al. 2022,
    SDE-DPM-Solver++(2M), midpoint form; k-diffusion's `dpmpp_2m_sde`, diffusers' `sde-dpmsolver++`).
    With λ̄ = λ/2 and h_i = λ̄_{i+1} − λ̄_i:

        z_{i+1} = (σ_{i+1}/σ_i) e^{−h_i} z_i + α_{i+1} (1 − e^{−2h_i}) D_i + σ_{i+1} √(1 − e^{−2h_i}) · noise

    with D_i as in `dpmpp_2m`. Its first and last steps are exactly the ancestral step with v = 0
    (Eq. 3/4: e^{−2h} = e^{λ−λ'}); the others add DPM-Solver++'s second-order correction to x̂. The noise it
    injects corrects the errors of a weak network as ancestral sampling does (EDM Sec. 4), at the
    NFE of `dpmpp-2m`: one ε̃ a step. x̂ is clipped or thresholded before it enters D_i.
    """

    def update(z: Tensor, d: Tensor, h: float, alpha_next: float, sigma: float, sigma_next: float) -> Tensor:
        one_minus = -math.expm1(-2 * h)  # 1 − e^{−2h}
        return ((sigma_next / sigma) * math.exp(-h) * z + alpha_next * one_minus * d
                + sigma_next * math.sqrt(one_minus) * noise())

    return _multistep_2m(eps, lams, labels, noise, cfg, update)


# ---------------------------------------------------------------------------------------------
# heun: Karras et al. 2022, "Elucidating the Design Space...", Algorithm 1 (deterministic)
# ---------------------------------------------------------------------------------------------


def heun(eps: StepEps, lams: Tensor, labels: Tensor, noise: Noise, cfg: SamplerConfig) -> Tensor:
    """EDM's Heun sampler (Karras et al. 2022, Alg. 1), in their VP-as-VE variables
    x_e = z/α_λ, σ_e = σ_λ/α_λ = e^{−λ/2}, with D(x_e; σ_e) = x̂ (Sec. 3, Eq. 4 with s = 1):

        d_i  = (x_i − D(x_i; σ_i)) / σ_i
        x̃    = x_i + (σ_{i+1} − σ_i) d_i                                  (Euler)
        d'_i = (x̃ − D(x̃; σ_{i+1})) / σ_{i+1}
        x_{i+1} = x_i + (σ_{i+1} − σ_i)(d_i + d'_i)/2                      (2nd-order correction)

    over the T − 1 intervals of the grid, then x̂ = D(x_T; σ_T) (EDM's final Euler step to σ = 0).
    So NFE = 2T − 1. Without clipping d = ε̂.
    """
    lam_list = lams.tolist()
    sig_e = [math.exp(-lam / 2) for lam in lam_list]

    def denoise(x_e: Tensor, lam: float) -> Tensor:
        alpha, sigma = alpha_sigma_at(lam)
        z = alpha * x_e
        return _x_hat(z, eps(z, lam, labels), alpha, sigma, cfg)

    alpha0, _ = alpha_sigma_at(lam_list[0])
    x_e = noise() / alpha0
    for i in range(len(lam_list) - 1):
        d = (x_e - denoise(x_e, lam_list[i])) / sig_e[i]
        dt = sig_e[i + 1] - sig_e[i]
        x_euler = x_e + dt * d
        d2 = (x_euler - denoise(x_euler, lam_list[i + 1])) / sig_e[i + 1]
        x_e = x_e + dt * (0.5 * d + 0.5 * d2)
    return denoise(x_e, lam_list[-1])
