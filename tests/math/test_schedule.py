"""Eq. 1 identities and the training distribution p(λ) of Sec. 2."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from cfgdiff.diffusion.schedule import (
    alpha,
    lambda_cdf,
    lambda_density,
    lambda_of_u,
    sample_lambda,
    sampling_lambdas,
    sigma,
    u_of_lambda,
)

LAM = torch.linspace(-20, 20, 4001, dtype=torch.float64)


def test_alpha_sigma_identities():
    a, s = alpha(LAM), sigma(LAM)
    assert torch.allclose(a**2 + s**2, torch.ones_like(LAM), atol=1e-15, rtol=0)
    assert torch.allclose(torch.log(a**2 / s**2), LAM, atol=1e-12, rtol=0)


def test_sigma_does_not_underflow_at_lambda_max():
    exact = math.exp(-20) / (1 + math.exp(-20))
    s2 = sigma(torch.tensor(20.0, dtype=torch.float64)) ** 2
    assert abs(s2.item() - exact) / exact < 1e-12
    s2_32 = sigma(torch.tensor(20.0, dtype=torch.float32)) ** 2
    assert s2_32.item() > 0 and abs(s2_32.item() - exact) / exact < 1e-5


def test_lambda_of_u_endpoints_and_inverse():
    assert lambda_of_u(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(20.0, abs=1e-9)
    assert lambda_of_u(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(-20.0, abs=1e-9)
    u = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.allclose(u_of_lambda(lambda_of_u(u)), u, atol=1e-12)
    lam = lambda_of_u(u, -5.0, 7.0)
    assert lam[0].item() == pytest.approx(7.0) and lam[-1].item() == pytest.approx(-5.0)


def test_density_integrates_to_one_and_matches_cdf():
    lam = torch.linspace(-20, 20, 200001, dtype=torch.float64)
    p = lambda_density(lam)
    assert torch.trapezoid(p, lam).item() == pytest.approx(1.0, abs=1e-8)
    # dF/dλ = p(λ)
    h = 1e-5
    x = torch.tensor([-7.0, 0.0, 3.0], dtype=torch.float64)
    num = (lambda_cdf(x + h) - lambda_cdf(x - h)) / (2 * h)
    assert torch.allclose(num, lambda_density(x), rtol=1e-6)


def test_samples_follow_p_lambda_kolmogorov_smirnov():
    g = torch.Generator().manual_seed(0)
    lam = sample_lambda(100_000, generator=g).numpy()
    assert lam.min() >= -20 and lam.max() <= 20
    # the defaults are the paper's range, draw for draw
    again = sample_lambda(100_000, -20.0, 20.0, generator=torch.Generator().manual_seed(0)).numpy()
    assert np.array_equal(lam, again)
    cdf = lambda lx: lambda_cdf(torch.from_numpy(np.asarray(lx, dtype=np.float64))).numpy()
    assert stats.kstest(lam, cdf).pvalue > 0.01
    # the test can fail: uniform λ on [-20, 20] is rejected
    wrong = np.random.default_rng(0).uniform(-20, 20, 100_000)
    assert stats.kstest(wrong, cdf).pvalue < 1e-6


def test_sampling_grid():
    lam = sampling_lambdas(256)
    assert lam.shape == (256,) and lam.dtype == torch.float64
    assert lam[0].item() == -20.0 and lam[-1].item() == 20.0
    assert bool((lam[1:] > lam[:-1]).all())
    u = u_of_lambda(lam)
    assert torch.allclose(u, torch.linspace(1, 0, 256, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("lo,hi", [(-20.0, 20.0), (-5.0, 7.0)])
def test_p_lambda_is_the_truncated_sech_by_quadrature(lo, hi):
    """Oracle independent of the module: u ~ U[0, 1] through λ = −2 log tan(au + b) has density
    ∝ sech(λ/2) on [λ_min, λ_max] (dλ/du ∝ 1/(sin·cos) = 2/sin(2·), and sin(2 arctan e^{−λ/2}) =
    sech(λ/2)); its normaliser and CDF come from trapezoidal quadrature here, not from `_a_b`."""
    grid = torch.linspace(lo, hi, 400_001, dtype=torch.float64)
    sech = 1 / torch.cosh(grid / 2)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(sech, grid)])
    total = cdf[-1]
    quad_cdf = lambda x: np.interp(x, grid.numpy(), (cdf / total).numpy())  # noqa: E731
    pts = torch.linspace(lo, hi, 41, dtype=torch.float64)
    assert torch.allclose(lambda_density(pts, lo, hi), 1 / torch.cosh(pts / 2) / total, rtol=1e-9)
    assert np.allclose(lambda_cdf(pts, lo, hi).numpy(), quad_cdf(pts.numpy()), atol=1e-8)
    # the draws against the quadrature CDF
    lam = sample_lambda(50_000, lo, hi, generator=torch.Generator().manual_seed(1)).numpy()
    assert stats.kstest(lam, quad_cdf).pvalue > 0.01


def test_lambda_of_u_is_the_papers_formula():
    """Sec. 2, written here with `math`: λ = −2 log tan(au + b), b = arctan e^{−λ_max/2},
    a = arctan e^{−λ_min/2} − b."""
    for lo, hi in [(-20.0, 20.0), (-6.0, 9.0)]:
        b = math.atan(math.exp(-hi / 2))
        a = math.atan(math.exp(-lo / 2)) - b
        u = [0.0, 0.1, 0.37, 0.5, 0.9, 1.0]
        want = torch.tensor([-2 * math.log(math.tan(a * x + b)) for x in u], dtype=torch.float64)
        assert torch.allclose(lambda_of_u(torch.tensor(u, dtype=torch.float64), lo, hi), want, atol=1e-12)
