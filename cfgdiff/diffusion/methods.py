"""Guidance methods: how the conditional prediction and a second one combine into ε̃, each declared once.

A method is a `Method`: a name, its settings (each a `Setting`: name, type, default, bounds, help,
and whether a sweep may vary it), and `make(settings)`, called once per sampling run, which returns
the `Combine` used at every guided step (APG keeps its momentum there). Every flag, config field,
JSON key, sweep axis, row key and docs row of a setting is derived from its `Setting`: a built-in or
a plug-in method is one file plus its test. Built in: cfg, apg, cfgpp; plug-ins are `Method` objects
in the entry-point group `cfgdiff.guidance` (`name = "module:attribute"`), like samplers.

The strength is always w (`--w`, and the sweep's w axis), and w = 0 is always the plain conditional
model: one B-batch forward, no second prediction, for every method. The second prediction ε_u is
ε(z, ∅), or the guide network's ε(z, c) with autoguidance (`--guide-with`), whatever the method.

- cfg, Eq. 6:  ε̃ = (1 + w) ε_c − w ε_u.
- apg (Sadat, Hilliges, Weber, ICLR 2025, Sec. 4, Alg. 1), on the denoised predictions
  x̂_c = (z − σ ε_c)/α and x̂_u: Δ = x̂_c − x̂_u, then reverse momentum Δ ← Δ + β·Δ_prev (the
  running Δ of the earlier guided steps), then rescaling Δ ← Δ·min(1, r/‖Δ‖) (r = 0: off), then
  Δ = Δ_∥ + Δ_⊥ with Δ_∥ its projection on x̂_c (per sample, over all its dimensions), and
  x̂ = x̂_c + w (Δ_⊥ + η Δ_∥); ε̃ = (z − α x̂)/σ. η = 1, β = 0, r = 0 is CFG (Eq. 6) exactly.
- cfgpp (Chung et al. 2024, "CFG++", Alg. 1): w is CFG++'s λ ∈ [0, 1]. x̂ comes from
  ε_λ = ε_u + λ (ε_c − ε_u), and the DDIM step renoises with ε_u instead of ε_λ:
  z' = α' x̂ + σ' ε_u. Over a step of log-SNR h = λ' − λ this is CFG with the scale
  1 + w_t = λ / (1 − e^{−h/2}) (no clipping): a guidance weight that grows as steps shrink.
  Samplers whose `Sampler.renoise` is set take it (ddim); the others refuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cfgdiff.errors import ConfigError
from cfgdiff.registry import Registry
from cfgdiff.settings import Setting, check_names, find, label, resolve

if TYPE_CHECKING:  # torch-free at import: cfgdiff.config checks method names and settings before torch loads
    from torch import Tensor

ENTRY_POINT_GROUP = "cfgdiff.guidance"


@dataclass(frozen=True)
class Step:
    """What a method combines at one guided λ: the state z, λ, w there, ε_c and ε_u; α_λ and σ_λ on
    demand (only methods that need x̂, as APG, compute them)."""

    z: Tensor
    lam: float
    w: float
    eps_c: Tensor
    eps_u: Tensor

    @property
    def alpha(self) -> float:
        return _alpha_sigma(self.lam)[0]

    @property
    def sigma(self) -> float:
        return _alpha_sigma(self.lam)[1]


def _alpha_sigma(lam: float) -> tuple[float, float]:
    from cfgdiff.diffusion.schedule import alpha_sigma_at  # torch: only when a method asks

    return alpha_sigma_at(lam)


# A method's rule at one guided step: (ε̃, the ε to renoise with, or None for ε̃ itself).
Combine = Callable[[Step], "tuple[Tensor, Tensor | None]"]


@dataclass(frozen=True)
class Method:
    """A guidance method: `make(settings)` returns a fresh Combine for one sampling run.

    renoise: the method changes the sampler's update (CFG++): only samplers with `renoise` take it.
    max_w: the largest w it takes (CFG++'s λ ≤ 1); None: any w.
    """

    name: str
    summary: str
    make: Callable[[dict[str, float]], Combine]
    settings: tuple[Setting, ...] = ()
    renoise: bool = False
    max_w: float | None = None
    reference: str = ""

    def setting(self, name: str) -> Setting:
        return find(self.settings, "guidance", self.name, name)

    def resolve(self, given: dict[str, Any] | tuple[tuple[str, Any], ...] = ()) -> tuple[tuple[str, float], ...]:
        """Every setting of the method, given or default, checked, in declaration order."""
        return resolve(self.settings, "guidance", self.name, given)

    def check_w(self, w: float) -> None:
        if self.max_w is not None and w > self.max_w:
            raise ConfigError(f"--guidance {self.name} takes w in [0, {self.max_w:g}] (its own scale), got {w:g}")


# ---- the built-in methods --------------------------------------------------------------------------------------
def _cfg(settings: dict[str, float]) -> Combine:
    def combine(s: Step) -> tuple[Tensor, None]:
        return (1 + s.w) * s.eps_c - s.w * s.eps_u, None  # Eq. 6

    return combine


def _per_sample(t: Tensor) -> tuple[int, ...]:
    return tuple(range(1, t.dim()))


def _apg(settings: dict[str, float]) -> Combine:
    eta, beta, r = settings["eta"], settings["momentum"], settings["norm_threshold"]
    running: list[Tensor] = []  # the momentum term Δ_prev of this sampling run

    def combine(s: Step) -> tuple[Tensor, None]:
        x_c = (s.z - s.sigma * s.eps_c) / s.alpha
        x_u = (s.z - s.sigma * s.eps_u) / s.alpha
        diff = x_c - x_u
        if beta != 0:
            if running:
                diff = diff + beta * running[0]
            running[:] = [diff]
        dims = _per_sample(diff)
        if r > 0:
            norm = diff.norm(p=2, dim=dims, keepdim=True)
            diff = diff * (r / norm).clamp(max=1.0)
        unit = x_c / x_c.norm(p=2, dim=dims, keepdim=True)
        parallel = (diff * unit).sum(dim=dims, keepdim=True) * unit
        x_hat = x_c + s.w * ((diff - parallel) + eta * parallel)
        return (s.z - s.alpha * x_hat) / s.sigma, None

    return combine


def _cfgpp(settings: dict[str, float]) -> Combine:
    def combine(s: Step) -> tuple[Tensor, Tensor]:
        return s.eps_u + s.w * (s.eps_c - s.eps_u), s.eps_u  # ε_λ for x̂; ε_u to renoise

    return combine


BUILTIN: dict[str, Method] = {
    m.name: m
    for m in (
        Method("cfg", "classifier-free guidance, Ho & Salimans Eq. 6 (the default)", _cfg,
               reference="Ho & Salimans 2022, Eq. 6"),
        Method(
            "apg", "adaptive projected guidance: the update's part along x̂_c down-weighted, with momentum and a norm cap",
            _apg,
            settings=(
                Setting("eta", float, 0.0, (0.0, 1.0), "APG's η: weight of the update's part parallel to x̂_c "
                        "(1 with momentum 0 and norm threshold 0 is CFG)"),
                Setting("momentum", float, -0.75, (-1.0, 1.0), "APG's β: reverse momentum over the guided steps "
                        "(negative pushes away from earlier updates; 0 = off)"),
                Setting("norm_threshold", float, 2.5, (0.0, 1e4), "APG's r: cap on the update's L2 norm per "
                        "sample, in x̂ units (0 = off; ‖x̂‖ ≤ 443 at 256² RGB)"),
            ),
            reference="Sadat, Hilliges, Weber, ICLR 2025, Alg. 1 (defaults: its reference code's)",
        ),
        Method("cfgpp", "CFG++: x̂ from ε_u + w(ε_c − ε_u), renoised with ε_u; w is its λ in [0, 1]; ddim only",
               _cfgpp, renoise=True, max_w=1.0, reference="Chung et al. 2024, Alg. 1"),
    )
}


def _check_plugin(name: str, method: Method) -> None:
    """A plug-in's names make flags (--<name>-<setting>) and parameter names: refuse what cannot."""
    if not (name.isascii() and name.isalnum() and name.islower()):
        raise ValueError(f"the name {name!r}: lower-case letters and digits only (it makes flags)")
    check_names(name, method.settings)


METHODS: Registry[Method] = Registry("guidance method", ENTRY_POINT_GROUP, Method, BUILTIN, _check_plugin)


def methods() -> dict[str, Method]:
    """Every guidance method by name: the built-ins, then the plugins (loaded once per process)."""
    return METHODS.all()


def get_method(name: str) -> Method:
    return METHODS.get(name)


@dataclass(frozen=True)
class MethodChoice:
    """A method and its resolved settings: what a config, a sweep row's key and the JSON record hold."""

    name: str = "cfg"
    settings: tuple[tuple[str, float], ...] = field(default=())

    @classmethod
    def of(cls, name: str, given: dict[str, Any] | tuple[tuple[str, Any], ...] = ()) -> MethodChoice:
        return cls(name, get_method(name).resolve(given))

    def label(self) -> str:
        """cfg, or apg(eta=0, momentum=-0.75, norm_threshold=2.5)."""
        inner = label(self.settings)
        return f"{self.name}({inner})" if inner else self.name
