"""The variance-preserving schedule in log-SNR λ (Eq. 1) and the training distribution p(λ) (Sec. 2).

Notation: α_λ² = 1/(1 + e^{−λ}) = sigmoid(λ), σ_λ² = 1 − α_λ² = sigmoid(−λ), λ = log α_λ²/σ_λ².
Everything is computed from log-sigmoids, so σ² at λ = 20 (≈ 2e−9) neither rounds to 0 nor goes
negative, as 1 − α² would in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


# Eq. 1: log α_λ² = log sigmoid(λ), log σ_λ² = log sigmoid(−λ)
def log_alpha2(lam: Tensor) -> Tensor:
    return F.logsigmoid(lam)


def log_sigma2(lam: Tensor) -> Tensor:
    return F.logsigmoid(-lam)


def alpha_sigma_at(lam: float) -> tuple[float, float]:
    """α_λ, σ_λ (Eq. 1) at one λ as float64 Python scalars, from the log-sigmoids below."""
    t = torch.tensor(lam, dtype=torch.float64)
    return math.exp(0.5 * log_alpha2(t).item()), math.exp(0.5 * log_sigma2(t).item())


def alpha(lam: Tensor) -> Tensor:
    """α_λ = sqrt(sigmoid(λ))."""
    return torch.exp(0.5 * log_alpha2(lam))


def sigma(lam: Tensor) -> Tensor:
    """σ_λ = sqrt(sigmoid(−λ))."""
    return torch.exp(0.5 * log_sigma2(lam))


# p(λ), Sec. 2: λ = −2 log tan(a·u + b), u ~ U[0, 1],
#   b = arctan(e^{−λ_max/2}),  a = arctan(e^{−λ_min/2}) − b.
# u = 0 gives λ_max and u = 1 gives λ_min: λ decreases in u.
def _a_b(lam_min: float, lam_max: float) -> tuple[float, float]:
    b = math.atan(math.exp(-lam_max / 2))
    a = math.atan(math.exp(-lam_min / 2)) - b
    return a, b


def lambda_of_u(u: Tensor, lam_min: float = -20.0, lam_max: float = 20.0) -> Tensor:
    """λ(u) = −2 log tan(a·u + b)."""
    a, b = _a_b(lam_min, lam_max)
    return -2.0 * torch.log(torch.tan(a * u + b))


def u_of_lambda(lam: Tensor, lam_min: float = -20.0, lam_max: float = 20.0) -> Tensor:
    """The inverse of `lambda_of_u`: u(λ) = (arctan(e^{−λ/2}) − b) / a."""
    a, b = _a_b(lam_min, lam_max)
    return (torch.atan(torch.exp(-lam / 2)) - b) / a


def lambda_cdf(lam: Tensor, lam_min: float = -20.0, lam_max: float = 20.0) -> Tensor:
    """P(Λ ≤ λ) under p(λ); λ is decreasing in u, so it is 1 − u(λ)."""
    return 1.0 - u_of_lambda(lam, lam_min, lam_max)


def lambda_density(lam: Tensor, lam_min: float = -20.0, lam_max: float = 20.0) -> Tensor:
    """p(λ) = 1 / (4a·cosh(λ/2)) on [λ_min, λ_max]: a truncated hyperbolic secant."""
    a, _ = _a_b(lam_min, lam_max)
    return 1.0 / (4.0 * a * torch.cosh(lam / 2))


def sample_lambda(
    n: int,
    lam_min: float = -20.0,
    lam_max: float = 20.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """n draws of λ ~ p(λ), float64, shape (n,)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
    return lambda_of_u(u, lam_min, lam_max)


def sampling_lambdas(
    steps: int, lam_min: float = -20.0, lam_max: float = 20.0, device: torch.device | str = "cpu"
) -> Tensor:
    """λ_1 = λ_min < … < λ_T = λ_max at uniformly spaced u from 1 to 0 (Sec. 2), float64, (T,).

    The endpoints are set exactly, so the grid starts and ends on λ_min and λ_max.
    """
    u = torch.linspace(1.0, 0.0, steps, dtype=torch.float64, device=device)
    lam = lambda_of_u(u, lam_min, lam_max)
    lam[0], lam[-1] = lam_min, lam_max
    return lam
