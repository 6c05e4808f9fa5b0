"""The `cfgdiff` entry point: plugin discovery, `--version`, and the one place errors become exits.

Every command, built-in or not, is an entry point in the group `cfgdiff.commands`:

    [project.entry-points."cfgdiff.commands"]
    mycommand = "mypackage.cli:mycommand"     # a function with typer-annotated parameters,
                                              # or a typer.Typer for a group of subcommands

A plugin that fails to import (whatever it raises), or prints at import, is reported in one line on
stderr naming its package; the others still work. A plugin may not replace a built-in command.
Exit codes: 0 success; 1 runtime error (a CfgdiffError), including every refused output (an OutputError:
it exists and is not ours, or is an input: the same code in every command); 2 usage error (Typer's parse
errors, option callbacks, and a ConfigError for a bad value); 128 + signal when stopped (cfgdiff.stops:
130 SIGINT, 143 SIGTERM, 129 SIGHUP). Every error message is one line (`one_line`).
The exit code of a library error is its class's `exit_code` (cfgdiff/errors.py), nowhere else.
Set CFGDIFF_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import errno
import inspect
import os
import re
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Optional

import typer

from cfgdiff import __version__

GROUP = "cfgdiff.commands"


@dataclass(frozen=True)
class PluginRecord:
    """One discovered command: where it came from and whether it loaded."""

    name: str
    target: str  # "module:attribute"
    package: str  # distribution name and version, e.g. "cfgdiff 0.1.0"
    error: str | None = None


def _package_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "?"


def _builtin(ep: EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and dist.name == "cfgdiff"


def discover() -> tuple[list[EntryPoint], list[PluginRecord]]:
    """The group's entry points, one per command name, sorted by name; and the refused ones. A
    built-in name belongs to cfgdiff: another package's entry point of that name is refused (not
    loaded, one line naming its package). Between third-party packages the first found wins."""
    eps = list(entry_points(group=GROUP))
    seen: dict[str, EntryPoint] = {ep.name: ep for ep in eps if _builtin(ep)}
    refused = []
    for ep in eps:
        if _builtin(ep):
            continue
        if ep.name in seen and _builtin(seen[ep.name]):
            refused.append(PluginRecord(ep.name, ep.value, _package_of(ep),
                                        f"refused: '{ep.name}' is a built-in command of cfgdiff"))
        else:
            seen.setdefault(ep.name, ep)
    return [seen[name] for name in sorted(seen)], refused


def load_plugin(ep: EntryPoint) -> tuple[object, str | None]:
    """Import one entry point; what it prints at import is dropped (stdout carries `--json`) and
    reported: returns the loaded object and that note (or None)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        obj = ep.load()
    printed = len(out.getvalue()) + len(err.getvalue())
    return obj, (f"printed {printed} characters at import (dropped)" if printed else None)


def build_app() -> tuple[typer.Typer, list[PluginRecord]]:
    """The Typer app with every loadable plugin registered, and a record for each plugin. The plugin
    rule: whatever a plugin does at import (raise any exception, `sys.exit`, KeyboardInterrupt: every
    BaseException but a real stop signal; print) is reported in one stderr line naming its package,
    and the other commands still work; a plugin may not take a built-in command's name."""
    from cfgdiff.stops import reraise_stop

    app = typer.Typer(
        name="cfgdiff",
        help="Classifier-free diffusion guidance (Ho & Salimans 2022): prepare, train, sample, sweep, score.",
        no_args_is_help=True,
        add_completion=False,  # one completion mechanism: the static scripts in completions/
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain Click help: wraps at any width, never cuts an option name, no rich import
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    eps, records = discover()
    for rec in records:
        print(f"cfgdiff: plugin '{rec.name}' ({rec.target}, from {rec.package}) {rec.error}", file=sys.stderr)
    for ep in eps:
        where = f"'{ep.name}' ({ep.value}, from {_package_of(ep)})"
        try:
            obj, note = load_plugin(ep)
            if isinstance(obj, typer.Typer):
                app.add_typer(obj, name=ep.name)
            elif callable(obj):
                app.command(name=ep.name, help=help_text(obj.__doc__), short_help=short_help(obj.__doc__))(obj)
            else:
                raise TypeError(f"{type(obj).__name__} is neither a function nor a typer.Typer")
            records.append(PluginRecord(ep.name, ep.value, _package_of(ep)))
            if note:
                print(f"cfgdiff: plugin {where} {note}", file=sys.stderr)
        except BaseException as exc:  # noqa: BLE001 -- a plugin must not take the CLI down, whatever it raises
            reraise_stop(exc)  # a stop signal while loading, even wrapped: the user's, not the plugin's
            err = (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0]
            records.append(PluginRecord(ep.name, ep.value, _package_of(ep), err))
            print(f"cfgdiff: plugin {where} failed to load: {err}", file=sys.stderr)
    records.sort(key=lambda r: r.name)
    _RECORDS[:] = records
    return app, records


_RECORDS: list[PluginRecord] = []


_EXAMPLE = re.compile(r"^[A-Z][\w ]*:\s{2,}\S")  # "Example:  cfgdiff ...", "Fast:     cfgdiff ..."


def help_text(doc: str | None) -> str | None:
    """A command's docstring as Click help: prose is rewrapped to the terminal, but each run of
    example lines (`Label:  command`, two spaces or more after the colon) is kept line by line
    (Click's `\\b` marker), so no two examples run together."""
    if doc is None:
        return None
    out: list[str] = []
    for line in inspect.cleandoc(doc).splitlines():
        example = bool(_EXAMPLE.match(line))
        previous = bool(out) and bool(_EXAMPLE.match(out[-1]))
        if example and not previous:
            if out and out[-1] != "":
                out.append("")
            out.append("\b")
        elif not example and line != "" and previous:
            out.append("")
        out.append(line)
    return "\n".join(out)


def short_help(doc: str | None) -> str | None:
    """A command's line in `cfgdiff --help`: its docstring's first sentence, whole (Click would cut it
    at 45 characters with "..."), the terminal wrapping it."""
    if not doc:
        return None
    first = inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")
    sentence = re.split(r"(?<=[.;:])\s", first, maxsplit=1)[0]
    return sentence.rstrip(".;:")


def loaded_plugins() -> list[PluginRecord]:
    """The records of the app built by this process (for the `plugins` command)."""
    return list(_RECORDS)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cfgdiff {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Classifier-free diffusion guidance toolkit."""


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _click_class(name: str) -> type[BaseException]:
    """Click's exception class `name`, found through Typer's public BadParameter (Typer vendors Click
    in recent versions and depends on it in older ones, so the module path differs)."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name:
            return cls
    raise ImportError(name)


_USAGE_ERRORS = _click_class("ClickException")
_ABORT = next((c for c in vars(sys.modules[_USAGE_ERRORS.__module__]).values()
               if isinstance(c, type) and c.__name__ == "Abort"), KeyboardInterrupt)


def one_line(text: str) -> str:
    """A message as one line: control characters (a newline in a file name included) escaped, and
    file names that are not UTF-8 (surrogate escapes) shown as their escapes, so an error is always
    one printable line."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _DISK_FULL


def _os_error(e: OSError) -> tuple[str, str]:
    where = f" {e.filename}" if e.filename else ""
    if _disk_full(e):
        return ("DiskFull", f"cannot write{where}: {e.strerror} (disk full or over a size limit); "
                            "completed work is saved; free space and rerun the same command")
    return ("OSError", f"cannot use{where}: {e.strerror or e}")


def _json_requested(argv: list[str]) -> tuple[bool, str]:
    """Whether `--json` is among the options (before a `--`), and the command's name."""
    args = argv[: argv.index("--")] if "--" in argv else argv
    command = next((a for a in args if not a.startswith("-")), "")
    return "--json" in args, command


def _failure_envelope(command: str, kind: str, message: str, code: int) -> None:
    """`--json` on a failure: one strict envelope on stdout, `ok: false`, the error in `results`."""
    from cfgdiff.cli.envelope import emit

    emit(command, ok=False, results={"error": kind, "message": message, "exit_code": code})


def main(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    """Run the CLI and return its exit code; library errors become one stderr line.

    Usage errors (unknown option, value out of range) are one line and exit 2. A CfgdiffError is printed
    as `cfgdiff: error: ...` with its exit code; a traceback only with CFGDIFF_DEBUG=1. Stop signals
    follow `cfgdiff.stops` (installed before any plugin is imported): one line, exit 128 + signal. A
    full disk is one line, exit 1. With `--json`, a failure also prints one envelope on stdout
    (`ok: false`; docs/json.md).
    """
    from cfgdiff import stops
    from cfgdiff.errors import CfgdiffError

    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed as its escapes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    want_json, name = _json_requested(argv)
    debug = os.environ.get("CFGDIFF_DEBUG", "") not in ("", "0")
    old = stops.install()
    error: tuple[str, str] | None = None  # (type, message) of a failure
    try:
        from cfgdiff.launch import check_environment

        check_environment()
        app, _ = build_app()
        command = typer.main.get_command(app)
        rv = command.main(args=argv, prog_name="cfgdiff", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except _USAGE_ERRORS as e:  # bad options: one line too, naming the command's --help
        if debug:
            raise
        ctx = getattr(e, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        if e.format_message():  # empty when the help was shown for a bare `cfgdiff`
            error = ("UsageError", f"{e.format_message()}{where}")
        code = e.exit_code
    except _ABORT:  # EOF at a prompt
        error, code = ("Interrupted", "interrupted"), 130
    except (CfgdiffError, stops.Stopped) as e:
        if debug:
            raise
        error, code = (type(e).__name__, str(e)), getattr(e, "exit_code", 130)
    except Exception as e:  # noqa: BLE001 -- classified below; anything else is a bug and keeps its traceback
        if debug:
            raise
        if stops.stopping() and not _disk_full(e):  # a stop that a library turned into an error of its own
            stopped = stops.Stopped(stops.stopping())
            error, code = ("Stopped", str(stopped)), stopped.exit_code
        elif isinstance(e, OSError) and (_disk_full(e) or e.filename):
            error, code = _os_error(e), 1  # a full disk, or a path the system refuses (a link loop): one line
        else:
            raise
    finally:
        # In-process callers get their handlers back. A process that exits next ignores the signals
        # instead: its work is done, and a Ctrl-C during interpreter shutdown (torch's teardown takes
        # a while) would otherwise turn exit 0 into a late stop.
        stops.restore(old, ignore=exiting)
    if error is not None:
        print(f"cfgdiff: error: {one_line(error[1])}", file=sys.stderr)
    if want_json and code != 0:
        _failure_envelope(name, error[0] if error else "Exit", one_line(error[1]) if error else f"exit {code}", code)
    sys.stdout.flush()
    return code


def run() -> None:
    code = main(exiting=True)
    if code == 0 and "torch.distributed" in sys.modules:
        # Leave the torchrun group as PyTorch asks (NCCL warns on every rank at exit otherwise). Not after
        # a failure: torchrun then stops the other ranks, which may be inside a collective. A command that
        # never imported torch has no group, and importing it here would cost `--help` a second.
        from cfgdiff import dist

        dist.shutdown()
    sys.exit(code)


if __name__ == "__main__":  # `python -m cfgdiff.cli.app`: run the imported module, not this copy
    from cfgdiff.cli.app import run as _run

    _run()
