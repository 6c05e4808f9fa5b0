"""Frozen dataclass configs, their JSON round trip, and validation.

Every artifact cfgdiff writes carries the resolved config (`to_dict`), and every command that reads
an artifact rebuilds it with `from_dict`, which rejects unknown or missing fields rather than
guessing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

from cfgdiff.errors import ConfigError

C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild `cls` from `to_dict` output. Unknown keys are an error; missing keys take defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def override(cfg: C, **changes: Any) -> C:
    """`dataclasses.replace` that ignores None values (unset CLI flags) and names bad fields."""
    changes = {k: v for k, v in changes.items() if v is not None}
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ConfigError(f"{type(cfg).__name__}: unknown field(s) {', '.join(unknown)}")
    return dataclasses.replace(cfg, **changes)


def save_json(cfg: Any, path: Path) -> None:
    """Write a config as JSON atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    tmp.replace(path)


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    """Raise ConfigError unless lo <= value <= hi and value is finite."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value}")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """The forward process and training objective of Sec. 2 (paper defaults)."""

    lam_min: float = -20.0  # λ_min: log-SNR at the noisy end
    lam_max: float = 20.0  # λ_max: log-SNR at the clean end
    p_uncond: float = 0.1  # probability of replacing the label by ∅ during training (Sec. 3.2)

    def __post_init__(self) -> None:
        check_range("lam_min", self.lam_min)
        check_range("lam_max", self.lam_max)
        if not self.lam_min < self.lam_max:
            raise ConfigError(f"lam_min ({self.lam_min}) must be below lam_max ({self.lam_max})")
        check_range("p_uncond", self.p_uncond, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """The ancestral sampler (Eq. 4) with guidance (Eq. 6).

    steps: T, the number of λ values λ_min = λ_1 < … < λ_T = λ_max; each is one network
        evaluation per sample without guidance (two with guidance, batched as one 2B forward).
    v: the variance interpolation exponent of Eq. 4 (paper: 0.3).
    w: the guidance weight of Eq. 6; w = 0 is the plain conditional model. Other tools' "guidance
        scale" s is 1 + w.
    clip_x: clip x̂ to [−1, 1] before it enters the posterior mean.
    """

    steps: int = 256
    v: float = 0.3
    w: float = 0.0
    clip_x: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 2:
            raise ConfigError(f"steps (T) must be an integer >= 2, got {self.steps!r}")
        check_range("v", self.v, 0.0, 1.0)
        check_range("w", self.w, 0.0)
