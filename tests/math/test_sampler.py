"""The ancestral sampler (Eq. 3, 4) and guidance (Eq. 6) driven by the exact ε of a Gaussian mixture."""

import math

import pytest
import torch

from cfgdiff.config import SamplerConfig
from cfgdiff.diffusion import BatchNoise, PerSampleNoise, ancestral_sample
from cfgdiff.diffusion.schedule import alpha, sampling_lambdas, sigma
from cfgdiff.diffusion.toy import GaussianMixture, default_mixture

MIX = default_mixture()
K = MIX.num_classes


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % K


def _sample(n, cfg, seed=0, mix=MIX):
    noise = BatchNoise(n, (mix.mu.shape[1],), torch.Generator().manual_seed(seed))
    return ancestral_sample(mix.eps, _labels(n), noise, cfg, null_label=mix.num_classes)


@pytest.mark.parametrize("v", [0.0, 0.3, 1.0])
def test_sampler_reproduces_class_mean_and_covariance(v):
    n = 21_000
    x = _sample(n, SamplerConfig(steps=256, sampler_settings={"v": v}, clip_x=False))
    labels = _labels(n)
    for c in range(K):
        xc = x[labels == c]
        m = xc.shape[0]
        mean_se = MIX.s / math.sqrt(m)
        assert torch.allclose(xc.mean(0), MIX.mu[c], atol=5 * mean_se), (c, xc.mean(0))
        cov = torch.cov(xc.T)
        var_se = MIX.s**2 * math.sqrt(2 / m)
        target = MIX.s**2 * torch.eye(2, dtype=torch.float64)
        assert torch.allclose(cov, target, atol=6 * var_se), (c, cov)


def _reference_sampler(eps_fn, labels, noise, steps, v):
    """Eq. 3/4 written out step by step, without precomputed coefficients."""
    lams = sampling_lambdas(steps)
    z = noise()
    for i in range(steps):
        lam = lams[i]
        a, s = alpha(lam), sigma(lam)
        x_hat = ((z - s * eps_fn(z, lam.expand(z.shape[0]), labels)) / a).clamp(-1, 1)
        if i == steps - 1:
            return x_hat
        lam2 = lams[i + 1]
        a2, s2 = alpha(lam2), sigma(lam2)
        r = torch.exp(lam - lam2)
        mean = r * (a2 / a) * z + (1 - r) * a2 * x_hat
        var = ((1 - r) * s2**2) ** (1 - v) * ((1 - r) * s**2) ** v
        z = mean + var.sqrt() * noise()


def test_w0_equals_the_plain_conditional_sampler_sample_for_sample():
    n, steps = 64, 50
    x = _sample(n, SamplerConfig(steps=steps, sampler_settings={"v": 0.3}, w=0.0), seed=3)
    noise = BatchNoise(n, (2,), torch.Generator().manual_seed(3))
    ref = _reference_sampler(MIX.eps, _labels(n), noise, steps, 0.3)
    assert torch.allclose(x, ref, atol=1e-10, rtol=0)


def test_guidance_strength_is_monotone():
    n = 6000
    labels = _labels(n)
    logp, spread = [], []
    for w in [0.0, 0.5, 1.0, 2.0, 4.0]:
        x = _sample(n, SamplerConfig(steps=128, w=w, clip_x=False), seed=1)
        lp = MIX.log_posterior(x, torch.full((n,), float("inf"), dtype=torch.float64))
        logp.append(lp[torch.arange(n), labels].mean().item())
        # within-class spread: guidance tilts p(x|c) by p(c|x)^w, which is log-concave here
        # (equal covariances make log p(c|x) a log-softmax of linear functions), so it shrinks
        spread.append(sum(torch.cov(x[labels == c].T).trace().item() for c in range(K)))
    assert all(b > a + 0.01 for a, b in zip(logp, logp[1:])), logp
    assert all(b < 0.97 * a for a, b in zip(spread, spread[1:])), spread


class CountingEps:
    def __init__(self, fn):
        self.fn, self.batches = fn, []

    def __call__(self, z, lam, labels):
        self.batches.append((z.shape[0], labels.clone()))
        return self.fn(z, lam, labels)


@pytest.mark.parametrize("w", [0.0, 1.5])
def test_one_predictor_call_per_step_with_2b_batch_when_guided(w):
    b, steps = 5, 17
    eps = CountingEps(MIX.eps)
    noise = BatchNoise(b, (2,), torch.Generator().manual_seed(0))
    ancestral_sample(eps, _labels(b), noise, SamplerConfig(steps=steps, w=w), null_label=K)
    assert len(eps.batches) == steps
    assert all(size == (2 * b if w else b) for size, _ in eps.batches)
    labels = eps.batches[0][1]
    if w:
        assert labels[b:].eq(K).all() and labels[:b].eq(_labels(b)).all()
    else:
        assert not labels.eq(K).any()


def test_guided_eps_is_eq6():
    z = torch.randn(4, 2, dtype=torch.float64)
    lam = torch.zeros(4, dtype=torch.float64)
    labels = _labels(4)
    from cfgdiff.diffusion import guided_eps

    w = 2.5
    got = guided_eps(MIX.eps, w, K)(z, lam, labels)
    want = (1 + w) * MIX.eps(z, lam, labels) - w * MIX.eps(z, lam, torch.full_like(labels, K))
    assert torch.allclose(got, want, atol=1e-14)


def test_sample_does_not_depend_on_batch():
    seeds = list(range(100, 164))
    labels = _labels(64)
    cfg = SamplerConfig(steps=32, w=1.0)
    whole = ancestral_sample(MIX.eps, labels, PerSampleNoise(seeds, (2,)), cfg, null_label=K)
    single = torch.cat([
        ancestral_sample(MIX.eps, labels[i : i + 1], PerSampleNoise(seeds[i : i + 1], (2,)), cfg, null_label=K)
        for i in range(64)
    ])
    assert torch.equal(whole, single)


def test_clipping_and_finite_output():
    far = GaussianMixture(mu=torch.tensor([[3.0, 3.0], [-3.0, 0.0]], dtype=torch.float64), s=0.5)
    x = _sample(200, SamplerConfig(steps=64, w=4.0), mix=far)
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0
    x = _sample(200, SamplerConfig(steps=64, clip_x=False), mix=far)
    assert x.abs().max() > 2.0


def test_exact_eps_of_the_mixture_matches_autograd_score():
    """ε*(z, c) = −σ ∇ log p(z | c) and ε*(z) = −σ ∇ log p(z), checked with autograd."""
    z = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    lam = torch.full((6,), 0.7, dtype=torch.float64)
    a, s = alpha(lam[0]), sigma(lam[0])
    tau2 = a**2 * MIX.s**2 + s**2
    logp_c = -((z[:, None] - a * MIX.mu[None]) ** 2).sum(-1) / (2 * tau2)  # (6, K) up to constants
    logp = torch.logsumexp(logp_c, dim=1)
    (g_u,) = torch.autograd.grad(logp.sum(), z)
    g_c = -(z.detach() - a * MIX.mu[1]) / tau2
    labels1 = torch.ones(6, dtype=torch.long)
    assert torch.allclose(MIX.eps(z.detach(), lam, labels1), -s * g_c, atol=1e-12)
    assert torch.allclose(MIX.eps(z.detach(), lam, torch.full((6,), K)), -s * g_u, atol=1e-12)
