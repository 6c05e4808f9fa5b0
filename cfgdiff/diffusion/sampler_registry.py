"""The samplers' declarations: each one's name, solver, settings and NFE rule, in one torch-free table.

A sampler is a `Sampler`: its name, its solver (`run`, the function of the sampler contract in
`sampler.py`, or "module:function" for a built-in, imported on first use so that the CLI and the
configs read this table without torch), the λs at which it evaluates ε̃ (exact NFE counting), and its
own settings, each a `cfgdiff.settings.Setting` declared here once: ancestral's v (Eq. 4) and ddim's
η (Song et al. 2021, Eq. 16). Their flags (`--v`, `--eta`), the config's `sampler_settings`, the
sweep's axes and row keys, `--help`, the completions and docs/sample.md's table all come from these
declarations. Third-party samplers are `Sampler` objects named in the entry-point group
`cfgdiff.samplers` (`name = "module:attribute"`); a plug-in is one file plus its test.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cfgdiff.registry import Registry
from cfgdiff.settings import Pairs, Setting, check_names, find, resolve

ENTRY_POINT_GROUP = "cfgdiff.samplers"


def each_lambda_once(lams: Sequence[float]) -> list[float]:
    """One ε̃ evaluation per grid point (ancestral, DDIM, DPM-Solver++(2M))."""
    return list(lams)


def heun_evaluations(lams: Sequence[float]) -> list[float]:
    """EDM's Heun: λ_1 once, then every later λ twice (the corrector, then the next step)."""
    return [lams[0]] + [lam for lam in lams[1:] for _ in range(2)]


@dataclass(frozen=True)
class Sampler:
    """A named sampler: `run` follows the sampler contract (sampler.py), or names it as "module:function";
    `evaluations(lams)` lists the λ of every ε̃ it computes on the grid `lams` (Python floats), in order;
    `settings` are its own (the solver reads them as `cfg.setting(name)`)."""

    name: str
    run: Callable[..., Any] | str
    evaluations: Callable[[Sequence[float]], list[float]] = field(default=each_lambda_once)
    summary: str = ""
    max_sigma_ratio: float | None = None  # the widest grid step (σ_e ratio) it handles; see grid_advice
    # It takes guidance methods that renoise (CFG++): it calls eps(z, lam, labels, with_renoise=True)
    # and uses the second ε it returns, where not None, for its update's noise direction.
    renoise: bool = False
    settings: tuple[Setting, ...] = ()

    def solver(self) -> Callable[..., Any]:
        """The solver function (a built-in's module is imported here, on first use)."""
        if callable(self.run):
            return self.run
        module, _, attr = self.run.partition(":")
        return getattr(importlib.import_module(module), attr)

    def setting(self, name: str) -> Setting:
        return find(self.settings, "sampler", self.name, name)

    def resolve(self, given: Mapping[str, Any] | Pairs = ()) -> Pairs:
        """Every setting of the sampler, given or default, checked, in declaration order."""
        return resolve(self.settings, "sampler", self.name, given)


# Heun's corrector is the trapezoidal rule in EDM's σ_e = e^{−λ/2}. Over a step whose σ_e falls by a
# ratio r it weights the denoised image at the step's end by about r/2, where the flow gives the
# whole step a weight of log r. The paper's grid starts with r = 2316 at T = 16; on the demo's model
# heun then scores FID 300, against 145 on the linear grid (r = 3.8; docs/benchmarks.md).
HEUN_MAX_SIGMA_RATIO = 100.0

_SOLVERS = "cfgdiff.diffusion.solvers"

BUILTIN: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("ancestral", f"{_SOLVERS}:ancestral", summary="Ho & Salimans 2022 Eq. 4 with v; the paper's sampler",
                settings=(Setting("v", float, 0.3, (0.0, 1.0), "Variance interpolation v of Eq. 4: 0 = the "
                                  "posterior's σ̃², 1 = the forward σ²; 0.3 is the paper's", flag="--v"),)),
        Sampler("ddim", f"{_SOLVERS}:ddim", summary="Song et al. 2021 Eq. 12 with their η of Eq. 16 (0: deterministic)",
                renoise=True,
                settings=(Setting("eta", float, 0.0, (0.0, 1.0), "DDIM's η of Song et al. Eq. 16: 0 = deterministic, "
                                  "1 = ancestral with v = 0", flag="--eta"),)),
        Sampler("dpmpp-2m", f"{_SOLVERS}:dpmpp_2m", summary="DPM-Solver++(2M), Lu et al. 2022 Alg. 2"),
        Sampler("heun", f"{_SOLVERS}:heun", heun_evaluations, summary="EDM Heun, Karras et al. 2022 Alg. 1",
                max_sigma_ratio=HEUN_MAX_SIGMA_RATIO),
        Sampler("dpmpp-2m-sde", f"{_SOLVERS}:dpmpp_2m_sde",
                summary="stochastic DPM-Solver++(2M), Lu et al. 2022; for weakly trained networks"),
        Sampler("distill-sde", f"{_SOLVERS}:distill_sde",
                summary="Meng et al. 2023 Sec. 4.2: a DDIM step twice as long, then noise back; for distilled students"),
    )
}


def _check_plugin(name: str, sampler: Sampler) -> None:
    """A plug-in's name and settings make flags: refuse what cannot; its solver must be a function."""
    if not callable(sampler.run):
        raise TypeError("a plug-in sampler's run must be its solver function")
    check_names(name, sampler.settings)


SAMPLERS: Registry[Sampler] = Registry("sampler", ENTRY_POINT_GROUP, Sampler, BUILTIN, _check_plugin)


def samplers() -> dict[str, Sampler]:
    """Every sampler by name: the built-ins, then the plugins (loaded once per process)."""
    return SAMPLERS.all()


def get_sampler(name: str) -> Sampler:
    return SAMPLERS.get(name)

