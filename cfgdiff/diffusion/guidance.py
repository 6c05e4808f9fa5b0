"""Classifier-free guidance, Eq. 6, and its variants, as wrappers around any ε-predictor.

    ε̃_θ(z_λ, c) = (1 + w) ε_θ(z_λ, c) − w ε_θ(z_λ, ∅)                                  (Eq. 6)

w = 0 is the plain conditional model. Other tools write the same rule with a "guidance scale"
s = 1 + w: ε̃ = s·ε(z, c) + (1 − s)·ε(z, ∅). cfgdiff's options always take the paper's w.

How the two predictions combine is the guidance method (`methods.py`: cfg = Eq. 6, the default;
apg; cfgpp; plug-ins). The variants below are off by default, so w keeps the paper's meaning, and
they apply to every method:
- guidance interval (Kynkäänniemi et al. 2024, Sec. 3): w applies only where λ ∈ [LO, HI]; elsewhere
  the step is a plain B-batch forward of the conditional model;
- autoguidance (Karras et al. 2024, Eq. 1): the unconditional pass is replaced by a weaker guide
  network on the same label, ε̃ = (1 + w) ε_main(z, c) − w ε_guide(z, c);
- CFG-rescale φ (Lin et al. 2024, Sec. 3.4, Eq. 15–16): ε̃ is rescaled towards the per-sample
  standard deviation of ε(z, c), then mixed back with weight φ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from cfgdiff.config import DiffusionConfig
from cfgdiff.diffusion.methods import Combine, Step
from cfgdiff.errors import ConfigError

EpsFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def guided_eps(eps_fn: EpsFn, w: float, null_label: int, rescale: float = 0.0) -> EpsFn:
    """Return ε̃ of Eq. 6 for `eps_fn(z, lam, labels)` (`Guidance` with method cfg: one call on a 2B
    batch, labels then ∅ = `null_label`). For w = 0 the predictor itself is returned: a B batch and
    no unconditional pass. Every channel is guided. `rescale` is CFG-rescale's φ."""
    return _fixed(Guidance(w=w, null_label=null_label, rescale=rescale), eps_fn)


def autoguided_eps(main: EpsFn, guide: EpsFn, w: float, rescale: float = 0.0) -> EpsFn:
    """Autoguidance (Karras et al. 2024, Eq. 1 in ε): ε̃ = (1 + w) ε_main(z, c) − w ε_guide(z, c)
    (`Guidance` with a guide). Both networks see the same label; there is no ∅ pass. w = 0 returns
    `main` itself."""
    return _fixed(Guidance(w=w, rescale=rescale, guide=guide), main)


def _fixed(g: Guidance, eps_fn: EpsFn) -> EpsFn:
    """ε̃ of a stateless method without an interval, at any λ (B,): w = 0 is `eps_fn` itself."""
    if g.w == 0:
        return eps_fn
    run = g.start()
    return lambda z, lam, labels: run(eps_fn, z, float("nan"), lam, labels)[0]  # no interval: λ only for APG


def rescale_guided(eps_tilde: Tensor, eps_c: Tensor, phi: float) -> Tensor:
    """CFG-rescale (Lin et al. 2024, Eq. 15–16), applied to the ε-prediction (the model's output).

    ε_rescaled = ε̃ · std(ε_c)/std(ε̃) per sample over all its dimensions;
    result = φ ε_rescaled + (1 − φ) ε̃.
    """
    dims = tuple(range(1, eps_tilde.dim()))
    std_c = eps_c.std(dim=dims, keepdim=True)
    std_g = eps_tilde.std(dim=dims, keepdim=True)
    return phi * (eps_tilde * (std_c / std_g)) + (1 - phi) * eps_tilde


def interval_weight(lam: float, w: float, interval: tuple[float, float] | None) -> float:
    """The guidance weight at λ: w inside [LO, HI] (or everywhere without an interval), else 0."""
    if interval is None:
        return w
    lo, hi = interval
    return w if lo <= lam <= hi else 0.0


@dataclass(frozen=True)
class Guidance:
    """Which ε̃ a sampler uses at each λ: a guidance method (Eq. 6 by default) and the variants.

    w: the paper's guidance weight; null_label: ∅, needed for w > 0 without a guide; interval: (LO, HI)
    in λ; rescale: CFG-rescale's φ; guide: a guide ε-predictor, which replaces the ∅ pass
    (autoguidance); method, settings: the guidance method and its resolved settings (methods.py).
    """

    w: float = 0.0
    null_label: int | None = None
    interval: tuple[float, float] | None = None
    rescale: float = 0.0
    guide: EpsFn | None = None
    method: str = "cfg"
    settings: tuple[tuple[str, float], ...] = ()
    # A guided-distillation student takes w as an input: its ε is already ε̃ (one B batch at every λ)
    w_input: bool = False

    def __post_init__(self) -> None:
        if self.w != 0 and self.guide is None and self.null_label is None and not self.w_input:
            raise ValueError("guidance (w > 0) needs the null label ∅")

    def weight(self, lam: float) -> float:
        return interval_weight(lam, self.w, self.interval)

    def evaluations(self, lam: float) -> int:
        """Network evaluations per sample for one ε̃ at λ: 2 when guided there (a 2B batch, or
        main + guide), 1 otherwise (and always 1 for a student, whose network takes w)."""
        return 2 if self.weight(lam) != 0 and not self.w_input else 1

    def predictor(self, eps_fn: EpsFn, lam: float) -> EpsFn:
        """ε̃ to use at λ, of a fresh run (see `start`; Eq. 6 and CFG++'s ε_λ keep no state)."""
        if self.weight(lam) == 0 or self.w_input:
            return eps_fn  # one B-batch forward: no ∅ pass, no guide
        run = self.start()
        return lambda z, lam_b, labels: run(eps_fn, z, lam, lam_b, labels)[0]

    def start(self) -> GuidedRun:
        """The guidance of one sampling run: a fresh state for the method (APG's momentum)."""
        from cfgdiff.diffusion.methods import get_method

        return GuidedRun(self, get_method(self.method).make(dict(self.settings)))


class GuidedRun:
    """ε̃ at each λ of one sampling run, and the ε to renoise with (None: ε̃ itself; CFG++: ε_u)."""

    def __init__(self, guidance: Guidance, combine: Combine):
        self.guidance, self.combine = guidance, combine

    def __call__(self, eps_fn: EpsFn, z: Tensor, lam: float, lam_b: Tensor, labels: Tensor
                 ) -> tuple[Tensor, Tensor | None]:
        g = self.guidance
        w = g.weight(lam)
        if w == 0 or g.w_input:  # a student's network computes ε̃ at its w itself
            return eps_fn(z, lam_b, labels), None  # one B-batch forward: no ∅ pass, no guide
        if g.guide is not None:  # autoguidance: the guide network, same label
            eps_c, eps_u = eps_fn(z, lam_b, labels), g.guide(z, lam_b, labels)
        else:  # ONE call on a 2B batch: labels, then ∅
            assert g.null_label is not None  # __post_init__ requires it for w != 0 without a guide
            null = torch.full_like(labels, g.null_label)
            eps_c, eps_u = eps_fn(torch.cat([z, z]), torch.cat([lam_b, lam_b]), torch.cat([labels, null])).chunk(2)
        eps_hat, renoise = self.combine(Step(z, lam, w, eps_c, eps_u))
        if g.rescale:
            eps_hat = rescale_guided(eps_hat, eps_c, g.rescale)
        return eps_hat, renoise


@dataclass(frozen=True)
class NetworkSpec:
    """What a guide network must share with the main one for autoguidance."""

    num_classes: int
    resolution: int
    diffusion: DiffusionConfig
    w_input: bool = False  # a distilled student: its network takes w and is already guided


def guide_mismatch(main: NetworkSpec, guide: NetworkSpec) -> str | None:
    """One line naming the first difference that makes `guide` unusable for `main`, or None."""
    if guide.w_input:
        return "the guide network is a distilled student (it takes w); autoguidance needs a plain trained network"
    checks = [
        ("classes", main.num_classes, guide.num_classes),
        ("resolution", main.resolution, guide.resolution),
        ("lam_min", main.diffusion.lam_min, guide.diffusion.lam_min),
        ("lam_max", main.diffusion.lam_max, guide.diffusion.lam_max),
    ]
    for name, a, b in checks:
        if a != b:
            return f"the guide network's {name} is {b}, the main network's is {a}; autoguidance needs them equal"
    return None


def check_guide(main: NetworkSpec, guide: NetworkSpec) -> None:
    """Raise ConfigError with `guide_mismatch`'s line when the two networks differ."""
    problem = guide_mismatch(main, guide)
    if problem is not None:
        raise ConfigError(problem)
