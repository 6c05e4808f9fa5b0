"""The guidance methods' settings as command-line flags, derived from their declarations.

Every `Setting` of every registered method (`cfgdiff.diffusion.methods`, plug-ins included) becomes
one flag on `sample` and `sweep`, named `--<method>-<setting>` (`--apg-norm-threshold`), with the
declared type, bounds and help; on `sweep` a setting declared as an axis takes a comma list, and
every combination of the values given is one line of the sweep. Nothing here names a method or a
setting: a new method is one file plus its test, and its flags, `--help`, the completions and the
docs table follow (`docs_table`).

`with_settings` adds the flags to a command function's signature, which typer reads; the command
then finds what was given through `given()`, checked against `--guidance`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import typing
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from cfgdiff.diffusion.methods import Method, MethodChoice, Setting, get_method, methods, option_name
from cfgdiff.errors import ConfigError

PANEL = "Guidance method settings"
_PREFIX = "guidance_setting__"  # the parameter names: guidance_setting__apg__eta
_GIVEN: contextvars.ContextVar[dict[str, dict[str, Any]]] = contextvars.ContextVar("cfgdiff_guidance_settings",
                                                                                   default={})


def _flag(method: Method, setting: Setting, axis: bool) -> Any:
    """The typer option of one setting: its own check as the callback, so a bad value is one usage
    line naming the bounds; on a sweep axis a comma list, parsed into a tuple of distinct values."""

    def parse(value: Any) -> Any:
        if value is None:
            return None
        try:
            if not axis:
                return setting.check(method.name, value)
            items = [v.strip() for v in str(value).split(",") if v.strip()]
            if not items:
                raise ConfigError(f"{option_name(method.name, setting.name)}: give at least one value")
            return tuple(dict.fromkeys(setting.check(method.name, v) for v in items))
        except ConfigError as e:
            raise typer.BadParameter(str(e)) from None

    kind = setting.type.__name__.upper()
    lo, hi = setting.bounds
    bounds = {} if axis else {"min": setting.type(lo), "max": setting.type(hi)}  # shown in --help, as every option's
    return typer.Option(
        option_name(method.name, setting.name), callback=parse, show_default=False, rich_help_panel=PANEL, **bounds,
        metavar=f"{kind}[,{kind}...]" if axis else kind,
        help=f"{setting.help}. --guidance {method.name} only; default {setting.default:g}"
             + (" (a comma list: one sweep line per value)" if axis else "") + ".",
    )


def with_settings(command: Callable[..., Any], sweep: bool) -> Callable[..., Any]:
    """`command` with one more keyword option per setting of every registered method (registry, then
    declaration order); what was given reaches `given()` while the command runs."""
    extra = []
    for method in methods().values():
        for s in method.settings:
            axis = sweep and s.axis
            annotation = Annotated[Optional[str] if axis else Optional[s.type], _flag(method, s, axis)]
            extra.append(inspect.Parameter(f"{_PREFIX}{method.name}__{s.name}", inspect.Parameter.KEYWORD_ONLY,
                                           default=None, annotation=annotation))
    names = {p.name for p in extra}

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values: dict[str, dict[str, Any]] = {}
        for name in names:
            value = kwargs.pop(name, None)
            if value is not None:
                method, setting = name.removeprefix(_PREFIX).split("__")
                values.setdefault(method, {})[setting] = value
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
    """{method: {setting: value}} of the settings flags given on this command line."""
    return _GIVEN.get()


def check_given(values: dict[str, dict[str, Any]], chosen: list[str]) -> None:
    """A setting flag of a method that is not chosen is an error, not silently dropped."""
    for method, settings in values.items():
        if method not in chosen:
            flag = option_name(method, next(iter(settings)))
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


def docs_table() -> str:
    """The markdown table of every method's settings (docs/sample.md embeds it; a test keeps it current)."""
    rows = ["| method | setting (flag) | type | default | range | sweep axis | meaning |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in methods().values():
        if not m.settings:
            rows.append(f"| `{m.name}` | (none) | | | | | {m.summary} |")
        for s in m.settings:
            lo, hi = s.bounds
            rows.append(f"| `{m.name}` | `{option_name(m.name, s.name)}` | {s.type.__name__} | {s.default:g} | "
                        f"[{lo:g}, {hi:g}] | {'yes' if s.axis else 'no'} | {s.help} |")
    return "\n".join(rows) + "\n"
