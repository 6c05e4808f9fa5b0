"""The training objective, Eq. 5, and label dropout (Sec. 3.2)."""

import math

import pytest
import torch

from cfgdiff.config import DiffusionConfig
from cfgdiff.diffusion import diffusion_loss, drop_labels
from cfgdiff.diffusion.toy import default_mixture

MIX = default_mixture()


def test_label_dropout_rate():
    labels = torch.zeros(200_000, dtype=torch.long)
    out = drop_labels(labels, 0.1, null_label=7, generator=torch.Generator().manual_seed(0))
    frac = out.eq(7).double().mean().item()
    assert abs(frac - 0.1) < 0.003
    assert set(out.unique().tolist()) == {0, 7}


def test_loss_of_exact_eps_is_below_a_zero_predictor():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(50_000) % 3
    x = MIX.sample(labels, generator=g)
    zero = diffusion_loss(lambda z, lam, c: torch.zeros_like(z), x, labels, 3, generator=g).mean().item()
    assert abs(zero - 1.0) < 0.02  # E‖ε‖²/D = 1
    exact = diffusion_loss(MIX.eps, x, labels, 3, generator=g).mean().item()
    assert exact < 0.5 * zero


def test_loss_is_reproducible_and_uses_the_null_label():
    seen = []

    def eps(z, lam, c):
        seen.append(c.clone())
        return torch.zeros_like(z)

    labels = torch.arange(1000) % 3
    x = MIX.sample(labels, generator=torch.Generator().manual_seed(1))
    cfg = DiffusionConfig(p_uncond=0.5)
    a = diffusion_loss(eps, x, labels, 3, cfg, generator=torch.Generator().manual_seed(5))
    b = diffusion_loss(eps, x, labels, 3, cfg, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert 400 < seen[0].eq(3).sum().item() < 600


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_loss_replays_the_rng_stream(dtype):
    """Replay the generator: u → λ by the paper's formula, ε ~ N(0, I), the dropout draw; then
    z_λ = α_λ x + σ_λ ε (Eq. 1 in `math`) and the predictor must see exactly (z_λ, λ, c), in x's
    dtype (a float32 batch gives the network float32 z and λ)."""
    n, p_uncond, seed = 64, 0.3, 11
    labels = torch.arange(n) % 3
    x = MIX.sample(labels, generator=torch.Generator().manual_seed(2)).to(dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    seen = []

    def eps(z, lam, c):
        seen.append((z.clone(), lam.clone(), c.clone()))
        return torch.full_like(z, 0.25)

    cfg = DiffusionConfig(lam_min=-9.0, lam_max=13.0, p_uncond=p_uncond)
    loss = diffusion_loss(eps, x, labels, 3, cfg, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    b = math.atan(math.exp(-cfg.lam_max / 2))
    a = math.atan(math.exp(-cfg.lam_min / 2)) - b
    lam = torch.tensor([-2 * math.log(math.tan(a * ui + b)) for ui in u.tolist()], dtype=torch.float64)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    drop = torch.rand(n, generator=g) < p_uncond
    alpha = torch.tensor([math.sqrt(1 / (1 + math.exp(-v))) for v in lam.tolist()], dtype=torch.float64)[:, None]
    sigma = torch.tensor([math.sqrt(1 / (1 + math.exp(v))) for v in lam.tolist()], dtype=torch.float64)[:, None]
    z, lam_seen, c = seen[0]
    assert z.dtype == lam_seen.dtype == dtype
    assert torch.allclose(lam_seen.double(), lam, atol=max(tol, 1e-10), rtol=tol)
    assert torch.allclose(z.double(), alpha * x.double() + sigma * noise.double(), atol=tol)
    assert torch.equal(c, torch.where(drop, torch.full_like(labels, 3), labels))
    assert torch.allclose(loss, (0.25 - noise).square().mean(1).float(), atol=1e-6)
