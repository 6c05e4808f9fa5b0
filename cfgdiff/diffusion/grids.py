"""λ grids for the samplers: T log-SNR values λ_1 = λ_min < … < λ_T = λ_max, float64, shape (T,).

A grid is built apart from the step loop, so every sampler runs on every grid. Each grid starts and
ends exactly on the DiffusionConfig range, so a network is never asked about a λ it was not
trained on.

- `paper`: uniformly spaced u of p(λ) (Ho & Salimans 2022, Sec. 2), today's grid and the default.
- `linear`: uniformly spaced λ, DPM-Solver's "logSNR" grid (Lu et al. 2022, Sec. 3.3; there in
  λ/2, the same points).
- `edm`: Karras et al. 2022, Eq. 5 with ρ = 7: σ_i = (σ_max^{1/ρ} + i/(T−1)(σ_min^{1/ρ} −
  σ_max^{1/ρ}))^ρ in EDM's σ = σ_λ/α_λ = e^{−λ/2} (their VP-as-VE scaling, Sec. 3 and Table 1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cfgdiff.diffusion.schedule import sampling_lambdas
from cfgdiff.errors import ConfigError

GridFn = Callable[[int, float, float, torch.device | str], Tensor]

EDM_RHO = 7.0


def paper_grid(steps: int, lam_min: float, lam_max: float, device: torch.device | str) -> Tensor:
    """Uniform in u of p(λ): the paper's sampling grid (`schedule.sampling_lambdas`)."""
    return sampling_lambdas(steps, lam_min, lam_max, device=device)


def linear_grid(steps: int, lam_min: float, lam_max: float, device: torch.device | str) -> Tensor:
    """Uniform in λ."""
    lam = torch.linspace(lam_min, lam_max, steps, dtype=torch.float64, device=device)
    lam[0], lam[-1] = lam_min, lam_max
    return lam


def edm_grid(steps: int, lam_min: float, lam_max: float, device: torch.device | str) -> Tensor:
    """Karras et al. 2022, Eq. 5 (ρ = 7) in σ = e^{−λ/2}, mapped back by λ = −2 log σ."""
    inv_rho = 1.0 / EDM_RHO
    # σ^{1/ρ} = e^{−λ/(2ρ)} at the two ends; the grid is uniform in σ^{1/ρ}
    s_max = torch.tensor(-lam_min / 2 * inv_rho, dtype=torch.float64, device=device).exp()
    s_min = torch.tensor(-lam_max / 2 * inv_rho, dtype=torch.float64, device=device).exp()
    frac = torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device=device)
    root = s_max + frac * (s_min - s_max)  # σ_i^{1/ρ}, decreasing
    lam = -2.0 * EDM_RHO * torch.log(root)  # λ = −2 log σ = −2ρ log σ^{1/ρ}
    lam[0], lam[-1] = lam_min, lam_max
    return lam


GRIDS: dict[str, GridFn] = {"paper": paper_grid, "linear": linear_grid, "edm": edm_grid}


def check_grid(name: str) -> None:
    """Raise ConfigError unless `name` is a known grid."""
    if name not in GRIDS:
        raise ConfigError(f"unknown grid {name!r}; choose one of {', '.join(GRIDS)}")


def make_grid(name: str, steps: int, lam_min: float, lam_max: float, device: torch.device | str = "cpu") -> Tensor:
    """The grid `name` with T = `steps` points on [λ_min, λ_max]."""
    check_grid(name)
    if not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"steps (T) must be an integer >= 2, got {steps!r}")
    return GRIDS[name](steps, lam_min, lam_max, device)
