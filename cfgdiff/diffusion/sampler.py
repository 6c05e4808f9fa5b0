"""The sampler contract, the registry of samplers, and the one front door `sample`.

Every sampler is a `Sampler` (declared in sampler_registry.py, torch-free, with its settings): a name,
a function with ONE signature

    run(eps, lams, labels, noise, cfg) -> x                      (float64, the shape of noise())

over a guided ε̃ at a scalar λ, the λ grid, the labels and a noise source (see `solvers.py`), and
the list of λs at which it evaluates ε̃ (for exact NFE counting). Built in: ancestral (the paper's,
the default), ddim, dpmpp-2m, heun, dpmpp-2m-sde, distill-sde. Third-party samplers are `Sampler` objects named in the
entry-point group `cfgdiff.samplers` (`name = "module:attribute"`), as commands are in
`cfgdiff.commands`; a plugin that fails to load is reported in one line on stderr and the others
keep working.

`sample` builds the grid (grids.py) on the labels' device, the guidance (guidance.py) and the
per-step ε̃, then runs the sampler named by cfg.sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from cfgdiff.config import DiffusionConfig, SamplerConfig
from cfgdiff.diffusion import solvers
from cfgdiff.diffusion.grids import check_grid, make_grid
from cfgdiff.diffusion.guidance import EpsFn, Guidance
from cfgdiff.diffusion.methods import get_method
from cfgdiff.diffusion.sampler_registry import BUILTIN, Sampler, get_sampler, samplers  # noqa: F401 (plug-ins import Sampler here)
from cfgdiff.errors import ConfigError

SamplerFn = Callable[[solvers.StepEps, Tensor, Tensor, solvers.Noise, SamplerConfig], Tensor]


def check_sampler_config(cfg: SamplerConfig, w_input: bool = False, guided_by: str | None = None) -> None:
    """Raise ConfigError when cfg names an unknown sampler or grid, or a guidance method its sampler
    cannot run (for parse-time checks). `w_input`: the network is a guided-distillation student,
    whose guidance is inside it: no other method, interval, rescale or guide network (`guided_by`,
    the guide's flag) applies."""
    sampler = get_sampler(cfg.sampler)
    check_grid(cfg.grid)
    if w_input:
        extra = [name for name, on in (("--guidance " + cfg.guidance, cfg.guidance != "cfg"),
                                       ("--guidance-interval", cfg.guidance_interval is not None),
                                       ("--rescale", cfg.rescale != 0), (guided_by, guided_by is not None)) if on]
        if extra:
            raise ConfigError(f"{extra[0]} does not apply to a distilled student: it learned Eq. 6 at each w "
                              "(its one forward is the guided ε); sample its teacher for other guidance")
    if get_method(cfg.guidance).renoise and not sampler.renoise:
        takes = ", ".join(s.name for s in samplers().values() if s.renoise)
        raise ConfigError(f"--guidance {cfg.guidance} renoises inside the sampler's step, which {cfg.sampler} "
                          f"does not do; samplers that take it: {takes}")


def grid_advice(cfg: SamplerConfig, diffusion: DiffusionConfig) -> str | None:
    """One line of advice when the grid has a step wider (in σ_e = e^{−λ/2}) than the sampler's
    `max_sigma_ratio` handles, else None."""
    limit = get_sampler(cfg.sampler).max_sigma_ratio
    if limit is None:
        return None
    lams = make_grid(cfg.grid, cfg.steps, diffusion.lam_min, diffusion.lam_max).tolist()
    ratio = max(math.exp((b - a) / 2) for a, b in zip(lams, lams[1:]))  # σ_e(λ_i) / σ_e(λ_{i+1})
    if ratio <= limit:
        return None
    return (f"{cfg.sampler} on the {cfg.grid} grid at T = {cfg.steps}: one step spans a sigma ratio of {ratio:.0f}, "
            f"too wide for its corrector; --grid linear keeps every step small (docs/sample.md)")


def guidance_of(cfg: SamplerConfig, null_label: int | None, guide: EpsFn | None = None,
                w_input: bool = False) -> Guidance:
    return Guidance(w=cfg.w, null_label=null_label, interval=cfg.guidance_interval, rescale=cfg.rescale, guide=guide,
                    method=cfg.guidance, settings=cfg.guidance_settings, w_input=w_input)


def nfe_per_sample(cfg: SamplerConfig, diffusion: DiffusionConfig = DiffusionConfig(), w_input: bool = False) -> int:
    """Exact network evaluations per sample: Σ over the sampler's ε̃ evaluations of 2 where guidance
    applies at that λ (Eq. 6's 2B batch, or main + guide) and 1 elsewhere; 1 each for a student
    (`w_input`: its network takes w)."""
    lams = make_grid(cfg.grid, cfg.steps, diffusion.lam_min, diffusion.lam_max).tolist()
    g = Guidance(w=cfg.w, null_label=0, interval=cfg.guidance_interval, w_input=w_input)
    return sum(g.evaluations(lam) for lam in get_sampler(cfg.sampler).evaluations(lams))


def sample(
    eps_fn: EpsFn,
    labels: Tensor,
    noise: Callable[[], Tensor],
    cfg: SamplerConfig = SamplerConfig(),
    diffusion: DiffusionConfig = DiffusionConfig(),
    null_label: int | None = None,
    callback: Callable[[int, int], None] | None = None,
    guide: EpsFn | None = None,
    w_input: bool = False,
) -> Tensor:
    """Draw samples x (float64) with the sampler cfg.sampler on the grid cfg.grid, guided by cfg.w.

    `noise()` returns the next standard normal draw (B, ...) in float64: the first call gives
    z_{λ_min}. `null_label` (∅) is needed when cfg.w > 0 without a `guide` (autoguidance).
    `callback(i, n)` is called after each ε̃ evaluation, n = the evaluations per sample.
    `w_input`: eps_fn is a distilled student's, already guided at cfg.w (one B batch a step).
    """
    check_sampler_config(cfg, w_input, None if guide is None else "--guide-with")
    sampler = get_sampler(cfg.sampler)
    run = guidance_of(cfg, null_label, guide, w_input).start()  # one method state (APG's momentum) per run
    lams = make_grid(cfg.grid, cfg.steps, diffusion.lam_min, diffusion.lam_max, device=labels.device)
    total = len(sampler.evaluations(lams.tolist())) if callback is not None else 0
    calls = 0

    def eps(z: Tensor, lam: float, labels: Tensor, with_renoise: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
        nonlocal calls
        lam_b = torch.full((z.shape[0],), lam, dtype=torch.float64, device=z.device)
        eps_hat, renoise = run(eps_fn, z, lam, lam_b, labels)
        calls += 1
        if callback is not None:
            callback(calls, total)
        if with_renoise:
            return eps_hat.double(), None if renoise is None else renoise.double()
        return eps_hat.double()

    return sampler.solver()(eps, lams, labels, noise, cfg)


# The name cfgdiff 0.1 exported (train/grid.py, bench/, examples/); cfg.sampler defaults to "ancestral".
ancestral_sample = sample
