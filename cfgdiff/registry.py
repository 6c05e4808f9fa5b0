"""Registries that built-ins and plug-ins share: samplers (`cfgdiff.samplers`) and guidance methods
(`cfgdiff.guidance`). One rule for both: a plug-in is an object of the registry's type named in the
entry-point group; a built-in name is never replaced; a plug-in that fails to load (import error,
wrong type, its own checks) is reported in one line on stderr and the others keep working. Torch-free.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from cfgdiff.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """The built-ins of `kind` (a frozen dataclass with a `name`), then the group's plug-ins, loaded once.

    check(name, obj) may raise to refuse a plug-in (its message is the one line printed).
    """

    def __init__(self, what: str, group: str, kind: type, builtin: dict[str, T],
                 check: Callable[[str, Any], None] | None = None):
        self.what, self.group, self.kind, self.builtin, self.check = what, group, kind, builtin, check
        self._all: dict[str, T] | None = None

    def load_plugins(self) -> tuple[dict[str, T], list[tuple[str, str, str]]]:
        """The group's entry points that load, and (name, target, error) for each that does not."""
        found: dict[str, T] = {}
        failures = []
        for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
            try:
                if ep.name in self.builtin or ep.name in found:
                    raise ValueError(f"the name {ep.name!r} is taken")
                obj = ep.load()
                if not isinstance(obj, self.kind):
                    raise TypeError(f"{type(obj).__name__} is not a {self.kind.__module__}.{self.kind.__name__}")
                if self.check is not None:
                    self.check(ep.name, obj)
                found[ep.name] = obj if obj.name == ep.name else replace(obj, name=ep.name)  # type: ignore[attr-defined]
            except Exception as exc:  # a broken plugin must not break the others
                from cfgdiff.stops import reraise_stop

                reraise_stop(exc)  # a stop signal while loading (wrapped, too) is the user's
                failures.append((ep.name, ep.value, f"{type(exc).__name__}: {exc}".splitlines()[0]))
        return found, failures

    def all(self) -> dict[str, T]:
        """Every entry by name: the built-ins, then the plug-ins (loaded on first use)."""
        if self._all is None:
            plugins, failures = self.load_plugins()
            for name, target, error in failures:
                print(f"cfgdiff: {self.what} plugin '{name}' ({target}) failed to load: {error}", file=sys.stderr)
            self._all = {**self.builtin, **plugins}
        return self._all

    def get(self, name: str) -> T:
        known = self.all()
        if name not in known:
            raise ConfigError(f"unknown {self.what} {name!r}; choose one of {', '.join(known)}")
        return known[name]

    def reset(self) -> None:
        """Forget the loaded plug-ins (tests that install one)."""
        self._all = None
