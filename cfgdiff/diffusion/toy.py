"""A mixture of Gaussians whose exact ε is known in closed form: the core's test bed and example.

Data: c ~ Uniform{0..K−1}, x | c ~ N(μ_c, s² I). Then z_λ | c ~ N(α μ_c, τ² I) with
τ² = α² s² + σ², so the exact conditional and unconditional ε (ε = −σ ∇ log p) are

    ε*(z, c) = σ (z − α μ_c) / τ²,       ε*(z) = Σ_c p(c | z) ε*(z, c),

with p(c | z) the posterior of the mixture at noise level λ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cfgdiff.diffusion.schedule import alpha, sigma


@dataclass(frozen=True)
class GaussianMixture:
    """K classes with means `mu` (K, D) and a shared isotropic standard deviation `s`."""

    mu: Tensor
    s: float

    @property
    def num_classes(self) -> int:
        return self.mu.shape[0]

    def sample(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(labels.shape[0], self.mu.shape[1], generator=generator, dtype=torch.float64)
        return self.mu[labels] + self.s * noise

    def log_posterior(self, z: Tensor, lam: Tensor) -> Tensor:
        """log p(c | z_λ) for every class, (B, K); λ = +∞ (pass x, lam=inf) gives log p(c | x)."""
        a, s2 = _alpha_sigma2(lam)
        tau2 = a**2 * self.s**2 + s2  # (B, 1)
        d2 = (z[:, None, :] - a[:, :, None] * self.mu[None]).square().sum(-1)  # (B, K)
        return torch.log_softmax(-d2 / (2 * tau2), dim=1)

    def eps(self, z: Tensor, lam: Tensor, labels: Tensor) -> Tensor:
        """ε*(z, c) for labels < K and ε*(z) for labels == K (∅): an exact ε-predictor."""
        a, s2 = _alpha_sigma2(lam)
        tau2 = a**2 * self.s**2 + s2
        sig = s2.sqrt()
        eps_c = sig[:, :, None] * (z[:, None, :] - a[:, :, None] * self.mu[None]) / tau2[:, :, None]  # (B, K, D)
        post = self.log_posterior(z, lam).exp()  # (B, K)
        eps_u = (post[:, :, None] * eps_c).sum(1)  # (B, D)
        uncond = labels >= self.num_classes
        idx = labels.clamp(max=self.num_classes - 1)
        eps_cond = eps_c[torch.arange(z.shape[0]), idx]
        return torch.where(uncond[:, None], eps_u, eps_cond)


def _alpha_sigma2(lam: Tensor) -> tuple[Tensor, Tensor]:
    lam = lam.double().reshape(-1, 1)
    return alpha(lam), sigma(lam) ** 2


def default_mixture() -> GaussianMixture:
    """Three overlapping classes in 2-D, inside [−1, 1]: guidance visibly separates them."""
    mu = torch.tensor([[-0.4, 0.0], [0.4, 0.0], [0.0, 0.4]], dtype=torch.float64)
    return GaussianMixture(mu=mu, s=0.25)
