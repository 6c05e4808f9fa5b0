"""The samplers' and guidance methods' settings as command-line flags, derived from their declarations.

Every `Setting` of every registered sampler (`cfgdiff.diffusion.sampler_registry`) and guidance method
(`cfgdiff.diffusion.methods`), plug-ins included, becomes one flag on `sample` and `sweep`: its own
(ancestral's `--v`, ddim's `--eta`) or `--<owner>-<setting>` (`--apg-norm-threshold`), with the
declared type, bounds and help. On `sweep` a setting declared as an axis takes a comma list, and every
combination of the values given is one line of the sweep. Nothing here names a sampler, a method or
a setting: a new one is one file plus its test, and its flags, `--help`, the completions and the docs
tables follow (`docs_table`, `sampler_docs_table`).

`with_settings` adds the flags to a command function's signature, which typer reads; the command
then finds what was given through `given()` and `given_samplers()`, checked against `--guidance` and
`--sampler`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

from cfgdiff.diffusion.methods import MethodChoice, get_method, methods
from cfgdiff.diffusion.sampler_registry import samplers
from cfgdiff.errors import ConfigError
from cfgdiff.settings import Setting

PANELS = {"guidance": "Guidance method settings", "sampler": "Sampler settings"}
_PREFIX = "owned_setting__"  # the parameter names: owned_setting__0, __1, ... (an index into the flags' table)
Given = dict[str, dict[str, dict[str, Any]]]  # {"guidance" | "sampler": {owner: {setting: value}}}
_GIVEN: contextvars.ContextVar[Given] = contextvars.ContextVar("cfgdiff_owned_settings", default={})


@dataclass(frozen=True)
class Owned:
    """One setting and whose it is: kind "guidance" (flag applies with --guidance NAME) or "sampler"."""

    kind: str
    owner: str
    setting: Setting

    @property
    def flag(self) -> str:
        return self.setting.option(self.owner)


def owned_settings() -> list[Owned]:
    """Every registered sampler's settings, then every guidance method's (registry, then declaration order)."""
    return ([Owned("sampler", name, s) for name, sampler in samplers().items() for s in sampler.settings]
            + [Owned("guidance", name, s) for name, method in methods().items() for s in method.settings])


def _flag(o: Owned, axis: bool) -> Any:
    """The typer option of one setting: its own check as the callback, so a bad value is one usage
    line naming the bounds; on a sweep axis a comma list, parsed into a tuple of distinct values."""
    setting = o.setting

    def parse(value: Any) -> Any:
        if value is None:
            return None
        try:
            if not axis:
                return setting.check(o.owner, value)
            items = [v.strip() for v in str(value).split(",") if v.strip()]
            if not items:
                raise ConfigError(f"{o.flag}: give at least one value")
            return tuple(dict.fromkeys(setting.check(o.owner, v) for v in items))
        except ConfigError as e:
            raise typer.BadParameter(str(e)) from None

    kind = setting.type.__name__.upper()
    lo, hi = setting.bounds
    bounds = {} if axis else {"min": setting.type(lo), "max": setting.type(hi)}  # shown in --help, as every option's
    return typer.Option(
        o.flag, callback=parse, show_default=False, rich_help_panel=PANELS[o.kind], **bounds,
        metavar=f"{kind}[,{kind}...]" if axis else kind,
        help=f"{setting.help}. --{o.kind} {o.owner} only; default {setting.default:g}"
             + (" (a comma list: one sweep line per value)" if axis else "") + ".",
    )


def with_settings(command: Callable[..., Any], sweep: bool) -> Callable[..., Any]:
    """`command` with one more keyword option per setting of every registered sampler and guidance
    method; what was given reaches `given()` and `given_samplers()` while the command runs."""
    table = owned_settings()
    extra = []
    for i, o in enumerate(table):
        axis = sweep and o.setting.axis
        annotation = Annotated[Optional[str] if axis else Optional[o.setting.type], _flag(o, axis)]
        extra.append(inspect.Parameter(f"{_PREFIX}{i}", inspect.Parameter.KEYWORD_ONLY, default=None,
                                       annotation=annotation))

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values: Given = {"guidance": {}, "sampler": {}}
        for i, o in enumerate(table):
            value = kwargs.pop(f"{_PREFIX}{i}", None)
            if value is not None:
                values[o.kind].setdefault(o.owner, {})[o.setting.name] = value
        token = _GIVEN.set(values)
        try:
            return command(*args, **kwargs)
        finally:
            _GIVEN.reset(token)

    own = inspect.signature(command, eval_str=True)
    wrapper.__signature__ = own.replace(parameters=[*own.parameters.values(), *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**typing.get_type_hints(command, include_extras=True),
                               **{p.name: p.annotation for p in extra}}
    return wrapper


def given() -> dict[str, dict[str, Any]]:
    """{method: {setting: value}} of the guidance settings flags given on this command line."""
    return _GIVEN.get().get("guidance", {})


def given_samplers() -> tuple[tuple[str, str, Any], ...]:
    """(sampler, setting, value, or a tuple of values on a sweep) of the sampler settings flags given;
    `cfgdiff.config.check_sampler_given` refuses one whose sampler the command does not use."""
    return tuple((owner, name, value) for owner, settings in _GIVEN.get().get("sampler", {}).items()
                 for name, value in settings.items())


def check_given(values: dict[str, dict[str, Any]], chosen: list[str]) -> None:
    """A setting flag of a method that is not chosen is an error, not silently dropped."""
    for method, settings in values.items():
        if method not in chosen:
            flag = get_method(method).setting(next(iter(settings))).option(method)
            raise ConfigError(f"{flag} applies to --guidance {method}, and this command uses "
                              f"--guidance {','.join(chosen)}")


def sample_choice(guidance: str) -> MethodChoice:
    """The method `sample` runs, with its settings from the flags."""
    values = given()
    check_given(values, [guidance])
    return MethodChoice.of(guidance, values.get(guidance, {}))


def sweep_choices(guidances: list[str]) -> list[MethodChoice]:
    """One MethodChoice per sweep line: every method given, times every combination of its axes."""
    values = given()
    check_given(values, guidances)
    out = []
    for name in guidances:
        axes = {k: v if isinstance(v, tuple) else (v,) for k, v in values.get(name, {}).items()}
        keys = list(axes)
        for combo in itertools.product(*(axes[k] for k in keys)):
            out.append(MethodChoice.of(name, dict(zip(keys, combo))))
    return out


def _rows(kind: str) -> list[str]:
    owners = samplers() if kind == "sampler" else methods()
    rows = [f"| {kind} | setting (flag) | type | default | range | sweep axis | meaning |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, owner in owners.items():
        if not owner.settings:
            rows.append(f"| `{name}` | (none) | | | | | {owner.summary} |")
        for s in owner.settings:
            lo, hi = s.bounds
            rows.append(f"| `{name}` | `{s.option(name)}` | {s.type.__name__} | {s.default:g} | "
                        f"[{lo:g}, {hi:g}] | {'yes' if s.axis else 'no'} | {s.help} |")
    return rows


def docs_table() -> str:
    """The markdown table of every guidance method's settings (docs/sample.md embeds it; a test keeps it current)."""
    return "\n".join(_rows("method")) + "\n"


def sampler_docs_table() -> str:
    """The markdown table of every sampler's settings (docs/sample.md embeds it; a test keeps it current)."""
    return "\n".join(_rows("sampler")) + "\n"
