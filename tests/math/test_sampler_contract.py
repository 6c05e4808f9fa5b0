"""The sampler contract of issue 12: λ grids, the registry and its plugins, exact NFE counting, and
the guidance variants (interval, autoguidance, CFG-rescale) as pure functions."""

import math
import textwrap

import pytest
import torch

from cfgdiff.config import DiffusionConfig, SamplerConfig, from_dict, to_dict
from cfgdiff.diffusion import BatchNoise, make_grid, nfe_per_sample, sample
from cfgdiff.diffusion import sampler as sampler_module
from cfgdiff.diffusion import sampler_registry
from cfgdiff.diffusion.guidance import (
    Guidance,
    NetworkSpec,
    autoguided_eps,
    check_guide,
    guide_mismatch,
    guided_eps,
    interval_weight,
    rescale_guided,
)
from cfgdiff.diffusion.loss import drop_labels
from cfgdiff.diffusion.schedule import sample_lambda, sampling_lambdas
from cfgdiff.diffusion.toy import default_mixture
from cfgdiff.errors import ConfigError

MIX = default_mixture()
K = MIX.num_classes
SAMPLERS = ["ancestral", "ddim", "dpmpp-2m", "heun", "dpmpp-2m-sde", "distill-sde"]


# ---- grids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["paper", "linear", "edm"])
def test_grids_are_increasing_and_end_exactly_on_the_range(name):
    lam = make_grid(name, 11, -7.0, 13.0)
    assert lam.dtype == torch.float64 and lam.shape == (11,)
    assert lam[0].item() == -7.0 and lam[-1].item() == 13.0
    assert bool((lam[1:] > lam[:-1]).all())


def test_grid_shapes_follow_their_definitions():
    t, lo, hi = 9, -12.0, 10.0
    assert torch.allclose(make_grid("linear", t, lo, hi)[1:] - make_grid("linear", t, lo, hi)[:-1],
                          torch.full((t - 1,), (hi - lo) / (t - 1), dtype=torch.float64), atol=1e-12)
    # edm: σ^{1/ρ} uniformly spaced for EDM's σ = e^{−λ/2}, ρ = 7 (Karras et al. 2022, Eq. 5)
    s_max, s_min = math.exp(-lo / 2), math.exp(-hi / 2)
    want = [(s_max ** (1 / 7) + i / (t - 1) * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7 for i in range(t)]
    got = torch.exp(-make_grid("edm", t, lo, hi) / 2)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-10)
    # paper: λ = −2 log tan(a u + b) at uniformly spaced u (Sec. 2)
    b = math.atan(math.exp(-hi / 2))
    a = math.atan(math.exp(-lo / 2)) - b
    want = [-2 * math.log(math.tan(a * (1 - i / (t - 1)) + b)) for i in range(t)]
    assert torch.allclose(make_grid("paper", t, lo, hi), torch.tensor(want, dtype=torch.float64), atol=1e-9)


def test_unknown_grid_or_sampler_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown grid 'cosine'; choose one of paper, linear, edm"):
        make_grid("cosine", 8, -1.0, 1.0)
    with pytest.raises(ConfigError, match="unknown sampler 'euler'; choose one of ancestral, ddim, dpmpp-2m, heun"):
        sampler_module.check_sampler_config(SamplerConfig(sampler="euler"))
    with pytest.raises(ConfigError, match="unknown grid 'cosine'"):
        sampler_module.check_sampler_config(SamplerConfig(sampler="heun", grid="cosine"))
    sampler_module.check_sampler_config(SamplerConfig(sampler="heun", grid="edm", steps=2))
    for steps in (1, 0, 2.0):
        with pytest.raises(ConfigError, match=rf"^steps \(T\) must be an integer >= 2, got {steps!r}$"):
            make_grid("paper", steps, -1.0, 1.0)
    with pytest.raises(ValueError, match="^guidance \\(w > 0\\) needs the null label ∅$"):
        Guidance(w=1.0)


def test_lambdas_are_made_on_the_requested_device():
    """"meta" stands in for a GPU here: a grid or a draw made on the wrong device would show as cpu."""
    for name in ("paper", "linear", "edm"):
        assert make_grid(name, 5, -20.0, 20.0, device="meta").device.type == "meta"
    assert sampling_lambdas(5, device="meta").device.type == "meta"
    assert sample_lambda(4, device="meta").device.type == "meta"
    labels = torch.zeros(4, dtype=torch.long, device="meta")
    assert drop_labels(labels, 0.1, null_label=3).device.type == "meta"


# ---- exact NFE, counted on a wrapped predictor ---------------------------------------------------


class Counter:
    """Counts network evaluations per sample (rows seen / B) and records each call's labels and λ."""

    def __init__(self, fn, b):
        self.fn, self.b, self.rows, self.calls = fn, b, 0, []

    def __call__(self, z, lam, labels):
        self.rows += z.shape[0]
        self.calls.append((float(lam[0]), labels.clone()))
        return self.fn(z, lam, labels)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("w,interval", [(0.0, None), (2.0, None), (2.0, (-3.0, 4.0)), (0.0, (-3.0, 4.0)),
                                        (2.0, (-19.0, 20.0))])  # the last: every λ but λ_1 = λ_min guided
@pytest.mark.parametrize("grid", ["paper", "edm"])
def test_nfe_is_exact(name, w, interval, grid):
    b, steps = 3, 9
    cfg = SamplerConfig(steps=steps, w=w, sampler=name, grid=grid, guidance_interval=interval)
    net = Counter(MIX.eps, b)
    sample(net, torch.arange(b) % K, BatchNoise(b, (2,), torch.Generator().manual_seed(0)), cfg, null_label=K)
    assert net.rows == b * nfe_per_sample(cfg)
    # and the count itself, from the grid: λ_1 once and every later λ twice for Heun, each λ once
    # otherwise; a λ inside the interval (or any λ without one) costs 2 when w > 0
    lams = make_grid(grid, steps, -20.0, 20.0).tolist()
    evals = lams if name != "heun" else [lams[0]] + [x for x in lams[1:] for _ in (0, 1)]
    guided = [w > 0 and (interval is None or interval[0] <= x <= interval[1]) for x in evals]
    assert nfe_per_sample(cfg) == len(evals) + sum(guided)
    # outside the interval: a B batch with no ∅ label
    for (lam, labels), g in zip(net.calls, guided):
        assert labels.shape[0] == (2 * b if g else b)
        assert labels.eq(K).any().item() == g


def test_heun_is_advised_off_a_grid_with_a_wide_step():
    """σ_e = e^{−λ/2}, so a step λ → λ' divides σ_e by e^{(λ'−λ)/2}; the paper's grid (Sec. 2's
    λ = −2 log tan(a u + b) at u = 1, (T−2)/(T−1), …) starts with its widest step."""
    b = math.atan(math.exp(-10.0))
    a = math.atan(math.exp(10.0)) - b
    lam_1 = -2 * math.log(math.tan(a * 14 / 15 + b))  # T = 16
    first = math.exp((lam_1 + 20.0) / 2)
    assert 2300 < first < 2330
    note = sampler_module.grid_advice(SamplerConfig(sampler="heun", steps=16), DiffusionConfig())
    assert note == (f"heun on the paper grid at T = 16: one step spans a sigma ratio of {first:.0f}, too wide for "
                    "its corrector; --grid linear keeps every step small (docs/sample.md)")
    # linear: every step divides σ_e by e^{40/15/2} = 3.8; other samplers get no advice
    assert sampler_module.grid_advice(SamplerConfig(sampler="heun", steps=16, grid="linear"), DiffusionConfig()) is None
    assert sampler_module.grid_advice(SamplerConfig(sampler="ddim", steps=16), DiffusionConfig()) is None
    # the threshold is 100: linear at T = 6 divides by e^4 = 54.6, at T = 5 by e^5 = 148.4
    assert sampler_module.grid_advice(SamplerConfig(sampler="heun", steps=6, grid="linear"), DiffusionConfig()) is None
    assert "sigma ratio of 148," in sampler_module.grid_advice(SamplerConfig(sampler="heun", steps=5, grid="linear"),
                                                                DiffusionConfig())


def test_nfe_of_the_paper_sampler_and_of_heun():
    assert nfe_per_sample(SamplerConfig(steps=256, w=0.1)) == 512
    assert nfe_per_sample(SamplerConfig(steps=256)) == 256
    assert nfe_per_sample(SamplerConfig(steps=18, sampler="heun")) == 35  # EDM's 35 NFE at 18 steps
    assert nfe_per_sample(SamplerConfig(steps=20, sampler="dpmpp-2m", w=1.0)) == 40


def test_callback_counts_every_evaluation():
    seen = []
    sample(MIX.eps, torch.arange(2), BatchNoise(2, (2,), torch.Generator().manual_seed(0)),
           SamplerConfig(steps=5, sampler="heun"), callback=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 9) for i in range(1, 10)]


# ---- guidance variants -------------------------------------------------------------------------


def test_interval_weight():
    assert interval_weight(0.0, 2.0, None) == 2.0
    assert interval_weight(-3.0, 2.0, (-3.0, 4.0)) == 2.0 and interval_weight(4.0, 2.0, (-3.0, 4.0)) == 2.0
    assert interval_weight(4.01, 2.0, (-3.0, 4.0)) == 0.0 and interval_weight(-3.01, 2.0, (-3.0, 4.0)) == 0.0


@pytest.mark.parametrize("name", ["ancestral", "dpmpp-2m"])
def test_an_interval_over_everything_or_nothing_is_plain_guidance_or_none(name):
    n = 16
    labels = torch.arange(n) % K

    def draw(**kw):
        return sample(MIX.eps, labels, BatchNoise(n, (2,), torch.Generator().manual_seed(5)),
                      SamplerConfig(steps=12, sampler=name, **kw), null_label=K)

    assert torch.equal(draw(w=1.5, guidance_interval=(-20.0, 20.0)), draw(w=1.5))
    assert torch.equal(draw(w=1.5, guidance_interval=(30.0, 40.0)), draw(w=0.0))
    assert not torch.equal(draw(w=1.5, guidance_interval=(-2.0, 2.0)), draw(w=1.5))


def test_autoguidance_is_karras_2024_eq1_and_uses_no_null_label():
    z = torch.randn(5, 2, dtype=torch.float64)
    lam = torch.full((5,), 0.4, dtype=torch.float64)
    labels = torch.arange(5) % K
    seen = []

    def guide(z, lam, c):
        seen.append(c.clone())
        return 0.5 * MIX.eps(z, lam, c) + 0.1

    w = 1.7
    got = autoguided_eps(MIX.eps, guide, w)(z, lam, labels)
    assert torch.allclose(got, (1 + w) * MIX.eps(z, lam, labels) - w * (0.5 * MIX.eps(z, lam, labels) + 0.1), atol=1e-14)
    assert torch.equal(seen[0], labels)
    main = MIX.eps
    assert autoguided_eps(main, guide, 0.0) is main


def test_autoguidance_with_the_network_itself_is_unguided():
    """ε̃ = (1 + w) ε − w ε = ε: guiding a network by itself changes nothing (NFE still counts two)."""
    n = 12
    labels = torch.arange(n) % K
    plain = sample(MIX.eps, labels, BatchNoise(n, (2,), torch.Generator().manual_seed(2)),
                   SamplerConfig(steps=10, sampler="ddim", clip_x=False))
    auto = sample(MIX.eps, labels, BatchNoise(n, (2,), torch.Generator().manual_seed(2)),
                  SamplerConfig(steps=10, sampler="ddim", clip_x=False, w=3.0), guide=MIX.eps)
    assert torch.allclose(plain, auto, atol=1e-9, rtol=0)


def test_guide_mismatch_names_the_difference():
    main = NetworkSpec(10, 32, DiffusionConfig())
    assert guide_mismatch(main, NetworkSpec(10, 32, DiffusionConfig(p_uncond=0.2))) is None
    assert "classes is 100" in guide_mismatch(main, NetworkSpec(100, 32, DiffusionConfig()))
    assert "resolution is 64" in guide_mismatch(main, NetworkSpec(10, 64, DiffusionConfig()))
    assert "lam_min is -15.0" in guide_mismatch(main, NetworkSpec(10, 32, DiffusionConfig(lam_min=-15.0)))
    with pytest.raises(ConfigError, match="^the guide network's lam_max is 15.0, the main network's is 20.0; "):
        check_guide(main, NetworkSpec(10, 32, DiffusionConfig(lam_max=15.0)))


def test_cfg_rescale_is_lin_2024_eq15_16():
    g = torch.Generator().manual_seed(0)
    eps_c = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    eps_t = 3 * torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) + 0.2
    full = rescale_guided(eps_t, eps_c, 1.0)
    for i in range(4):  # std(result) = std(ε_c) per sample
        assert full[i].std().item() == pytest.approx(eps_c[i].std().item(), rel=1e-12)
        assert torch.allclose(full[i] / eps_t[i], torch.full_like(eps_t[i], (eps_c[i].std() / eps_t[i].std()).item()))
    assert torch.allclose(rescale_guided(eps_t, eps_c, 0.3), 0.3 * full + 0.7 * eps_t, atol=1e-14)
    # through Eq. 6: rescale = 0 leaves the guided ε̃ bit-identical
    z, lam, labels = eps_c[:, 0, 0, :2], torch.zeros(4, dtype=torch.float64), torch.arange(4) % K
    assert torch.equal(guided_eps(MIX.eps, 2.0, K, rescale=0.0)(z, lam, labels), guided_eps(MIX.eps, 2.0, K)(z, lam, labels))


def _rescaled(eps_tilde, eps_ref, phi):
    """Lin et al. 2024, Eq. 15-16, per sample, in numpy: φ ε̃ std(ε_ref)/std(ε̃) + (1 − φ) ε̃."""
    e, r = eps_tilde.numpy(), eps_ref.numpy()
    ratio = r.std(axis=1, keepdims=True) / e.std(axis=1, keepdims=True)
    return torch.from_numpy(phi * e * ratio + (1 - phi) * e)


def test_the_sampler_config_carries_rescale_into_cfg_and_autoguidance():
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lam_value = 0.4
    lam = torch.full((6,), lam_value, dtype=torch.float64)
    labels = torch.arange(6) % K
    cfg = SamplerConfig(w=2.0, rescale=0.7, guidance_interval=(-5.0, 5.0))

    # Eq. 6, rescaled toward the conditional ε
    g = sampler_module.guidance_of(cfg, null_label=K)
    eps_c, eps_u = MIX.eps(z, lam, labels), MIX.eps(z, lam, torch.full_like(labels, K))
    expected = _rescaled(3 * eps_c - 2 * eps_u, eps_c, 0.7)
    assert torch.allclose(g.predictor(MIX.eps, lam_value)(z, lam, labels), expected, atol=1e-12)

    # autoguidance, rescaled toward the main network's ε
    def guide(z, lam, c):
        return 0.5 * MIX.eps(z, lam, c) + 0.1

    g = sampler_module.guidance_of(cfg, null_label=None, guide=guide)
    eps_m = MIX.eps(z, lam, labels)
    expected = _rescaled(3 * eps_m - 2 * guide(z, lam, labels), eps_m, 0.7)
    assert torch.allclose(g.predictor(MIX.eps, lam_value)(z, lam, labels), expected, atol=1e-12)
    # outside the interval: the network itself, for both
    main = MIX.eps  # one bound method, so that `is` can compare it
    assert g.predictor(main, 6.0) is main
    assert sampler_module.guidance_of(cfg, null_label=K).predictor(main, -6.0) is main


@pytest.mark.parametrize("name,draws", [("ancestral", 9), ("ddim", 1), ("dpmpp-2m", 1), ("heun", 1),
                                        ("dpmpp-2m-sde", 9), ("distill-sde", 8)])
def test_each_sampler_draws_the_noise_it_says(name, draws):
    """z_{λ_min}, then one draw per stochastic transition: T = 9 draws for Eq. 4 and the 2M SDE,
    one for the deterministic solvers (DDIM at η = 0 draws nothing after z_{λ_min}); distill-sde
    draws after each double step but the last transition, a plain DDIM step (1 + 7)."""
    calls = []

    def noise():
        calls.append(1)
        return torch.zeros(3, 2, dtype=torch.float64)

    sample(MIX.eps, torch.arange(3) % K, noise, SamplerConfig(steps=9, sampler=name))
    assert len(calls) == draws


def test_batch_noise_replays_its_generator_in_float64():
    noise = BatchNoise(3, (2, 4), torch.Generator().manual_seed(8))
    first, second = noise(), noise()
    g = torch.Generator().manual_seed(8)
    assert first.dtype == torch.float64 and first.shape == (3, 2, 4)
    assert torch.equal(first, torch.randn(3, 2, 4, generator=g, dtype=torch.float64))
    assert torch.equal(second, torch.randn(3, 2, 4, generator=g, dtype=torch.float64))


def test_the_toy_mixture_samples_mu_plus_s_times_its_generators_draw():
    labels = torch.tensor([2, 0, 1, 2, 2])
    x = MIX.sample(labels, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(5, MIX.mu.shape[1], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.equal(x, MIX.mu[labels] + MIX.s * noise)


# ---- config -----------------------------------------------------------------------------------


def test_sampler_config_round_trip_and_validation():
    cfg = SamplerConfig(steps=20, sampler="ddim", grid="edm", sampler_settings={"eta": 0.5}, guidance_interval=(-3, 4.5),
                        rescale=0.7, threshold=0.995)
    assert cfg.guidance_interval == (-3.0, 4.5) and cfg.sampler_settings == (("eta", 0.5),) and cfg.setting("eta") == 0.5
    assert from_dict(SamplerConfig, to_dict(cfg)) == cfg
    assert SamplerConfig().sampler_settings == (("v", 0.3),)  # every declared setting, default filled in
    assert SamplerConfig(sampler="dpmpp-2m").sampler_settings == ()
    for bad in [dict(sampler="ddim", sampler_settings={"eta": 1.5}), dict(sampler_settings={"eta": 0.5}),
                dict(sampler="ddim", sampler_settings={"v": 0.3}), dict(sampler_settings={"v": "x"}),
                dict(sampler_settings=[("v",)]), dict(rescale=-0.1), dict(guidance_interval=(4.0, 1.0)), dict(guidance_interval=(1.0,)),
                dict(sampler=""), dict(guidance_interval=(0.0, float("inf"))), dict(threshold=1.2)]:
        with pytest.raises(ConfigError):
            SamplerConfig(**bad)


# ---- plugins from the cfgdiff.samplers entry-point group ---------------------------------------

PLUGIN = '''
from cfgdiff.diffusion.sampler import Sampler
from cfgdiff.diffusion.solvers import ddim

def _first_x_hat(eps, lams, labels, noise, cfg):
    """Denoise once at λ_min (a one-evaluation sampler)."""
    from cfgdiff.diffusion.schedule import alpha, sigma
    z = noise()
    lam = lams[0]
    return (z - sigma(lam) * eps(z, float(lam), labels)) / alpha(lam)

one_shot = Sampler("one-shot", _first_x_hat, evaluations=lambda lams: [lams[0]], summary="denoise once")
not_a_sampler = 42
'''


def test_third_party_samplers_load_and_broken_ones_are_reported_in_one_line(tmp_path, monkeypatch, capsys):
    files = {  # a package as pip would install it: module + dist-info with its entry points
        "mysamplers.py": textwrap.dedent(PLUGIN),
        "mysamplers-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: mysamplers\nVersion: 0.1\n",
        "mysamplers-0.1.dist-info/entry_points.txt": "[cfgdiff.samplers]\none-shot = mysamplers:one_shot\n"
        "missing = mysamplers_gone:x\nwrong = mysamplers:not_a_sampler\nddim = mysamplers:one_shot\n"
        "renamed = mysamplers:one_shot\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sampler_registry.SAMPLERS, "_all", None)
    known = sampler_module.samplers()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [  # one line each, in the order of the names
        "cfgdiff: sampler plugin 'ddim' (mysamplers:one_shot) failed to load: ValueError: the name 'ddim' is taken",
        "cfgdiff: sampler plugin 'missing' (mysamplers_gone:x) failed to load: "
        "ModuleNotFoundError: No module named 'mysamplers_gone'",
        "cfgdiff: sampler plugin 'wrong' (mysamplers:not_a_sampler) failed to load: "
        "TypeError: int is not a cfgdiff.diffusion.sampler_registry.Sampler",
    ]
    assert set(known) == {*SAMPLERS, "one-shot", "renamed"}
    import mysamplers
    assert known["one-shot"] is mysamplers.one_shot  # registered as it is when the names agree
    renamed = known["renamed"]  # under the entry point's name otherwise, with the same parts
    assert (renamed.name, renamed.run, renamed.evaluations, renamed.summary) == (
        "renamed", mysamplers.one_shot.run, mysamplers.one_shot.evaluations, "denoise once")
    assert known["ddim"].run is sampler_module.BUILTIN["ddim"].run  # a plugin cannot replace a built-in
    cfg = SamplerConfig(steps=6, sampler="one-shot", w=1.0)
    net = Counter(MIX.eps, 4)
    x = sample(net, torch.arange(4) % K, BatchNoise(4, (2,), torch.Generator().manual_seed(0)), cfg, null_label=K)
    assert x.shape == (4, 2) and net.rows == 4 * nfe_per_sample(cfg) == 8
    # the built-ins keep working next to the plugins
    sample(MIX.eps, torch.arange(4) % K, BatchNoise(4, (2,), torch.Generator().manual_seed(0)),
           SamplerConfig(steps=6, sampler="dpmpp-2m"))
