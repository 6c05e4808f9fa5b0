"""Guidance methods (cfgdiff.diffusion.methods): Eq. 6 bit for bit as before, APG and CFG++ against their
papers' formulas re-derived here in numpy, and the declarations that everything else reads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cfgdiff.config import SamplerConfig, from_dict, to_dict
from cfgdiff.diffusion import BatchNoise, make_grid, nfe_per_sample, sample
from cfgdiff.diffusion.guidance import Guidance
from cfgdiff.diffusion.methods import BUILTIN, MethodChoice
from cfgdiff.settings import option_name
from cfgdiff.diffusion.toy import GaussianMixture, default_mixture
from cfgdiff.errors import ConfigError

MIX = default_mixture()
K = MIX.num_classes
GUIDE = GaussianMixture(MIX.mu * 0.8, 0.35)

# Samples of the toy mixture drawn with the code before guidance methods existed (commit 5079195), as
# float.hex: the first four coordinates and the sum, computed on an AMD EPYC. Eq. 6 and its variants must
# not move: on one CPU they are bit for bit the old code's (checked on that EPYC and on an Intel Xeon),
# across CPUs the vector kernels differ in the last bits (the Xeon's: 2 units in the last place here),
# so the comparison allows 1e-12 relative, which no change of formula stays under.
PINNED_CASES = [
    (dict(sampler="ancestral", steps=16, w=2.0), None),
    (dict(sampler="ddim", steps=12, sampler_settings={"eta": 0.5}, w=1.0, rescale=0.5), None),
    (dict(sampler="dpmpp-2m", steps=10, w=3.0, guidance_interval=(-2.0, 4.0)), None),
    (dict(sampler="heun", steps=8, grid="linear", w=1.0), GUIDE.eps),
    (dict(sampler="dpmpp-2m-sde", steps=10, w=0.5, threshold=0.9), None),
]
PINNED = [
    (["-0x1.59a99d2a29c96p-1", "0x1.9a62807d86a70p-3", "0x1.a38a7b5dd25b2p-1", "-0x1.2f769165563bap-4"],
     "0x1.256c4f6976aecp+0"),
    (["-0x1.12407dedcc392p-1", "0x1.56dd4eac349cdp-5", "0x1.7409177732d1ep-2", "-0x1.e6df587fab6a5p-4"],
     "0x1.7928eded76344p-2"),
    (["-0x1.eb99cd3a2e27dp-2", "-0x1.a2aaa66772fc2p-3", "0x1.113381d552006p-1", "-0x1.dbec47698f406p-4"],
     "0x1.29af98b3974d3p-1"),
    (["0x1.58d316df88ff1p-1", "-0x1.853b43d44934bp-3", "-0x1.0000000000000p+0", "0x1.79029a3a0670fp-2"],
     "-0x1.4c90993332ac7p+0"),
    (["-0x1.3bf34a300f124p-1", "0x1.8a64dac8e1442p-3", "0x1.a9b12d8480495p-2", "-0x1.263c7a2af9281p-3"],
     "0x1.a2dfe7b8de2cbp-2"),
]
LABELS = torch.arange(6) % K


def _draw(guide=None, **kw) -> torch.Tensor:
    noise = BatchNoise(6, (2,), torch.Generator().manual_seed(0))
    return sample(MIX.eps, LABELS, noise, SamplerConfig(**kw), null_label=K, guide=guide)


@pytest.mark.parametrize("case, pinned", list(zip(PINNED_CASES, PINNED)))
def test_cfg_and_its_variants_are_bit_for_bit_what_they_were(case, pinned):
    kw, guide = case
    x = _draw(guide, **kw)
    got = [*x.flatten().tolist()[:4], x.sum().item()]
    want = [float.fromhex(v) for v in (*pinned[0], pinned[1])]
    assert all(math.isclose(g, v, rel_tol=1e-12, abs_tol=1e-13) for g, v in zip(got, want)), (got, want)
    assert torch.equal(_draw(guide, guidance="cfg", **kw), x)  # the explicit default is the same method


# ---- APG: Sadat, Hilliges, Weber 2025, Alg. 1, re-derived in numpy ------------------------------------------------
def apg_numpy(z, alpha, sigma, w, eps_c, eps_u, eta, beta, r, prev):
    """One APG step on float64 arrays (B, D); returns (ε̃, the new momentum term)."""
    x_c, x_u = (z - sigma * eps_c) / alpha, (z - sigma * eps_u) / alpha
    d = x_c - x_u
    if beta != 0 and prev is not None:
        d = d + beta * prev
    running = d
    if r > 0:
        n = np.sqrt((d * d).sum(1, keepdims=True))
        d = d * np.minimum(1.0, r / n)
    u = x_c / np.sqrt((x_c * x_c).sum(1, keepdims=True))
    par = (d * u).sum(1, keepdims=True) * u
    x = x_c + w * ((d - par) + eta * par)
    return (z - alpha * x) / sigma, running


@pytest.mark.parametrize("eta, beta, r", [(0.0, -0.75, 2.5), (0.5, 0.3, 0.4), (1.0, 0.0, 0.0), (0.0, 0.0, 0.05)])
def test_apg_matches_the_papers_update_over_several_steps(eta, beta, r):
    g = Guidance(w=3.0, null_label=K, method="apg", settings=MethodChoice.of(
        "apg", {"eta": eta, "momentum": beta, "norm_threshold": r}).settings)
    run = g.start()
    gen = torch.Generator().manual_seed(1)
    prev = None
    for lam in (-3.0, 0.5, 4.0):  # three guided steps of one run: the momentum carries over
        z = torch.randn(5, 2, generator=gen, dtype=torch.float64)
        labels = torch.arange(5) % K
        lam_b = torch.full((5,), lam, dtype=torch.float64)
        got, renoise = run(MIX.eps, z, lam, lam_b, labels)
        alpha, sigma = math.sqrt(1 / (1 + math.exp(-lam))), math.sqrt(1 / (1 + math.exp(lam)))
        eps_c = MIX.eps(z, lam_b, labels).numpy()
        eps_u = MIX.eps(z, lam_b, torch.full_like(labels, K)).numpy()
        want, prev = apg_numpy(z.numpy(), alpha, sigma, 3.0, eps_c, eps_u, eta, beta, r, prev)
        assert renoise is None
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)


def test_apg_with_eta_1_no_momentum_no_cap_is_cfg():
    settings = (("eta", 1.0), ("momentum", 0.0), ("norm_threshold", 0.0))
    for sampler in ("ancestral", "dpmpp-2m"):
        cfg = _draw(sampler=sampler, steps=12, w=2.5)
        apg = _draw(sampler=sampler, steps=12, w=2.5, guidance="apg", guidance_settings=settings)
        torch.testing.assert_close(apg, cfg, rtol=0, atol=1e-12)


def test_apgs_default_differs_from_cfg_and_w0_is_the_conditional_model():
    assert not torch.allclose(_draw(sampler="ddim", steps=12, w=2.5, guidance="apg"), _draw(sampler="ddim", steps=12, w=2.5))
    assert torch.equal(_draw(sampler="ddim", steps=12, w=0.0, guidance="apg"), _draw(sampler="ddim", steps=12, w=0.0))


# ---- CFG++: Chung et al. 2024, Alg. 1, a DDIM loop written out here --------------------------------------------------
def cfgpp_ddim_numpy(lam_grid, z, labels, scale):
    """DDIM (η = 0, no clipping) with CFG++: x̂ from ε_u + λ(ε_c − ε_u), renoised with ε_u."""
    def a_s(lam):
        return math.sqrt(1 / (1 + math.exp(-lam))), math.sqrt(1 / (1 + math.exp(lam)))

    for lam, lam_next in zip(lam_grid[:-1], lam_grid[1:]):
        lam_b = torch.full((z.shape[0],), lam, dtype=torch.float64)
        zt = torch.from_numpy(z)
        e_c = MIX.eps(zt, lam_b, labels).numpy()
        e_u = MIX.eps(zt, lam_b, torch.full_like(labels, K)).numpy()
        (a, s), (a2, s2) = a_s(lam), a_s(lam_next)
        x = (z - s * (e_u + scale * (e_c - e_u))) / a
        z = a2 * x + s2 * e_u
    lam = lam_grid[-1]
    lam_b = torch.full((z.shape[0],), lam, dtype=torch.float64)
    zt = torch.from_numpy(z)
    e_c, e_u = MIX.eps(zt, lam_b, labels).numpy(), MIX.eps(zt, lam_b, torch.full_like(labels, K)).numpy()
    a, s = a_s(lam)
    return (z - s * (e_u + scale * (e_c - e_u))) / a


@pytest.mark.parametrize("scale", [0.3, 1.0])
def test_cfgpp_is_the_papers_ddim_update(scale):
    cfg = SamplerConfig(sampler="ddim", steps=10, w=scale, guidance="cfgpp", clip_x=False, grid="linear")
    z0 = BatchNoise(6, (2,), torch.Generator().manual_seed(0))()
    got = sample(MIX.eps, LABELS, BatchNoise(6, (2,), torch.Generator().manual_seed(0)), cfg, null_label=K)
    lams = make_grid("linear", 10, -20.0, 20.0).tolist()
    want = cfgpp_ddim_numpy(lams, z0.numpy(), LABELS, scale)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-10)


def test_cfgpp_is_cfg_with_the_stated_step_dependent_weight():
    """methods.py states: over a step of log-SNR h, CFG++ at λ is CFG with 1 + w_t = λ/(1 − e^{−h/2})."""
    scale, lams = 0.4, make_grid("linear", 8, -20.0, 20.0).tolist()
    z = BatchNoise(6, (2,), torch.Generator().manual_seed(2))()
    for lam, lam_next in zip(lams[:-1], lams[1:]):
        lam_b = torch.full((6,), lam, dtype=torch.float64)
        e_c, e_u = MIX.eps(z, lam_b, LABELS), MIX.eps(z, lam_b, torch.full_like(LABELS, K))
        w_t = scale / -math.expm1(-(lam_next - lam) / 2) - 1
        (a, s), (a2, s2) = [(math.sqrt(1 / (1 + math.exp(-x))), math.sqrt(1 / (1 + math.exp(x)))) for x in (lam, lam_next)]
        cfg_eps = (1 + w_t) * e_c - w_t * e_u
        z_cfg = a2 * (z - s * cfg_eps) / a + s2 * cfg_eps
        z_pp = a2 * (z - s * (e_u + scale * (e_c - e_u))) / a + s2 * e_u
        torch.testing.assert_close(z_pp, z_cfg, rtol=1e-9, atol=1e-9)
        z = z_pp


def test_cfgpp_is_refused_by_samplers_that_do_not_renoise_and_above_w_1():
    with pytest.raises(ConfigError, match=r"^--guidance cfgpp renoises inside the sampler's step, which dpmpp-2m "
                                          r"does not do; samplers that take it: ddim$"):
        _draw(sampler="dpmpp-2m", steps=8, w=0.5, guidance="cfgpp")
    with pytest.raises(ConfigError, match=r"--guidance cfgpp takes w in \[0, 1\]"):
        SamplerConfig(sampler="ddim", w=1.5, guidance="cfgpp")


def test_every_method_counts_the_same_evaluations():
    for name in BUILTIN:
        kw = dict(sampler="ddim", steps=12, w=0.5, guidance_interval=(-5.0, 5.0))
        assert nfe_per_sample(SamplerConfig(guidance=name, **kw)) == nfe_per_sample(SamplerConfig(**kw))
        calls = []
        noise = BatchNoise(6, (2,), torch.Generator().manual_seed(0))
        sample(lambda z, lam, y: (calls.append(z.shape[0]), MIX.eps(z, lam, y))[1], LABELS, noise,
               SamplerConfig(guidance=name, **kw), null_label=K)
        assert sum(calls) // 6 == nfe_per_sample(SamplerConfig(**kw))


# ---- the declarations ---------------------------------------------------------------------------------------------
def test_settings_are_checked_resolved_and_round_trip_through_json():
    cfg = SamplerConfig(guidance="apg", guidance_settings=(("eta", 0.5),))
    assert cfg.guidance_settings == (("eta", 0.5), ("momentum", -0.75), ("norm_threshold", 2.5))
    assert from_dict(SamplerConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"^--apg-eta must lie in \[0, 1\], got 2$"):
        SamplerConfig(guidance="apg", guidance_settings=(("eta", 2),))
    with pytest.raises(ConfigError, match=r"guidance apg has no setting 'beta' \(its settings: eta, momentum, "):
        SamplerConfig(guidance="apg", guidance_settings=(("beta", 0.1),))
    with pytest.raises(ConfigError, match=r"unknown guidance method 'pag'; choose one of cfg, apg, cfgpp"):
        SamplerConfig(guidance="pag")
    assert option_name("apg", "norm_threshold") == "--apg-norm-threshold"
    assert MethodChoice.of("apg", {"eta": 1}).label() == "apg(eta=1, momentum=-0.75, norm_threshold=2.5)"
