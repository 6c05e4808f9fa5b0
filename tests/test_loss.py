"""The training objective, Eq. 5, and label dropout (Sec. 3.2)."""

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
