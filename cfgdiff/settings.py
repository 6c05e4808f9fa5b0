"""A setting of a sampler or a guidance method, declared once where its owner is. Torch-free.

Every flag, config value, JSON key, sweep axis, row key and docs row of a setting comes from its
`Setting` (`cfgdiff.cli.methods` makes the flags). An owner (a `Sampler`, a guidance `Method`) holds a
tuple of them and resolves what a user gave with `resolve`: every setting, given or default, checked,
in declaration order, so that two configs with the same values compare and hash the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cfgdiff.errors import ConfigError

Pairs = tuple[tuple[str, float], ...]  # resolved settings: (name, value) in declaration order


@dataclass(frozen=True)
class Setting:
    """One setting: name, type, default, bounds, help, whether a sweep may vary it, and its flag.

    name: lower-case words joined by '_'. flag: the command-line flag; "" derives `--<owner>-<name>`
    (`--apg-norm-threshold`); a built-in may keep a shorter historical flag (ancestral's `--v`).
    type: float or int; bounds: inclusive (lo, hi), finite (every numeric option of the CLI states its
    range: tests/faults/test_faults_bounds.py); axis: a sweep may vary it (`--apg-eta 0,0.5,1`).
    """

    name: str
    type: type
    default: float
    bounds: tuple[float, float]
    help: str
    axis: bool = True
    flag: str = ""

    def __post_init__(self) -> None:
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi and self.type in (int, float)):
            raise ValueError(f"setting {self.name!r}: bounds must be finite, lo <= hi, type int or float")
        if self.flag and not self.flag.startswith("--"):
            raise ValueError(f"setting {self.name!r}: a flag starts with '--', got {self.flag!r}")

    def option(self, owner: str) -> str:
        """The command-line flag: its own, or --<owner>-<name with ->."""
        return self.flag or option_name(owner, self.name)

    def check(self, owner: str, value: Any) -> float:
        """The value as the setting's type, or ConfigError naming the flag and the bounds."""
        flag = self.option(owner)
        try:
            if isinstance(value, bool) or (self.type is int and float(value) != int(float(value))):
                raise ValueError
            v = self.type(float(value)) if self.type is int else self.type(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{flag} takes a {self.type.__name__}, got {value!r}") from None
        lo, hi = self.bounds
        if not lo <= v <= hi:  # NaN fails too
            raise ConfigError(f"{flag} must lie in [{lo:g}, {hi:g}], got {value!r}")
        return v


def option_name(owner: str, setting: str) -> str:
    """The derived command-line flag of a setting: --apg-norm-threshold."""
    return f"--{owner}-{setting.replace('_', '-')}"


def find(settings: Iterable[Setting], kind: str, owner: str, name: str) -> Setting:
    """The setting `name` of `owner`, or ConfigError listing the ones it has."""
    settings = tuple(settings)
    for s in settings:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in settings) or "none"
    raise ConfigError(f"{kind} {owner} has no setting {name!r} (its settings: {known})")


def resolve(settings: Iterable[Setting], kind: str, owner: str, given: Mapping[str, Any] | Pairs = ()) -> Pairs:
    """Every setting of `owner`, given or default, checked, in declaration order."""
    settings = tuple(settings)
    try:
        given = dict(given)  # JSON gives a list of [name, value] pairs
    except (TypeError, ValueError):
        raise ConfigError(f"{kind} {owner}: settings must be (name, value) pairs, got {given!r}") from None
    for name in given:
        find(settings, kind, owner, name)
    return tuple((s.name, s.check(owner, given.get(s.name, s.default))) for s in settings)


def check_names(owner: str, settings: Iterable[Setting]) -> None:
    """A plug-in's names make flags (--<owner>-<setting>) and parameter names: refuse what cannot."""
    if not (owner.isascii() and owner.replace("-", "").isalnum() and owner.islower()):
        raise ValueError(f"the name {owner!r}: lower-case letters, digits and '-' only (it makes flags)")
    for s in settings:
        if s.flag:
            raise ValueError(f"setting {s.name!r}: a plug-in's flags are derived (--{owner}-<setting>), not given")
        if not (s.name.isascii() and s.name.replace("_", "").isalnum() and s.name.islower()) or "__" in s.name:
            raise ValueError(f"setting name {s.name!r}: lower-case letters, digits and '_' only")
        s.check(owner, s.default)


def label(pairs: Pairs) -> str:
    """eta=0, momentum=-0.75 (a plot line's and a table's label)."""
    return ", ".join(f"{k}={v:g}" for k, v in pairs)
