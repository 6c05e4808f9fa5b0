"""The `cfgdiff` entry point: plugin discovery, `--version`, and the one place errors become exits.

Every command, built-in or not, is an entry point in the group `cfgdiff.commands`:

    [project.entry-points."cfgdiff.commands"]
    mycommand = "mypackage.cli:mycommand"     # a function with typer-annotated parameters,
                                              # or a typer.Typer for a group of subcommands

A plugin that fails to import is reported in one line on stderr and skipped; the others still work.
Exit codes: 0 success; 1 runtime error (a CfgdiffError), including every refused output (an OutputError:
it exists and is not ours, or is an input: the same code in every command); 2 usage error (Typer's parse
errors, option callbacks, and a ConfigError for a bad value); 130 (SIGINT) or 143 (SIGTERM) stopped.
The exit code of a library error is its class's `exit_code` (cfgdiff/errors.py), nowhere else.
Set CFGDIFF_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import errno
import inspect
import os
import re
import signal
import sys
import threading
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


def discover() -> list[EntryPoint]:
    """The group's entry points, one per command name (the first found wins), sorted by name."""
    seen: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        seen.setdefault(ep.name, ep)
    return [seen[name] for name in sorted(seen)]


def build_app() -> tuple[typer.Typer, list[PluginRecord]]:
    """The Typer app with every loadable plugin registered, and a record for each plugin."""
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
    records = []
    for ep in discover():
        try:
            obj = ep.load()
            if isinstance(obj, typer.Typer):
                app.add_typer(obj, name=ep.name)
            elif callable(obj):
                app.command(name=ep.name, help=help_text(obj.__doc__))(obj)
            else:
                raise TypeError(f"{type(obj).__name__} is neither a function nor a typer.Typer")
            records.append(PluginRecord(ep.name, ep.value, _package_of(ep)))
        except Exception as exc:  # a broken plugin must not break the other commands
            err = f"{type(exc).__name__}: {exc}".splitlines()[0]
            records.append(PluginRecord(ep.name, ep.value, _package_of(ep), err))
            print(f"cfgdiff: plugin '{ep.name}' ({ep.value}) failed to load: {err}", file=sys.stderr)
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


class _Stopped(BaseException):
    """SIGINT/SIGTERM outside the training loop (which checkpoints first): a BaseException, so no
    `except Exception` in the library mistakes it for a bad file; and not KeyboardInterrupt, which
    Click would turn into a bare "Aborted!" and exit 1."""


def _stop(signum: int, frame: object) -> None:
    stopped = _Stopped(f"stopped by {signal.Signals(signum).name}; completed work is saved (finished parts, "
                       "rows, checkpoints); rerun the same command to continue")
    stopped.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    raise stopped


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


def main(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    """Run the CLI and return its exit code; library errors become one stderr line.

    Usage errors (unknown option, value out of range) are one line and exit 2. A CfgdiffError is printed
    as `cfgdiff: error: ...` with its exit code; a traceback only with CFGDIFF_DEBUG=1. SIGINT and
    SIGTERM stop the command where it is (every file is written atomically, so only work in flight
    is lost) with one line and exit 130 (SIGINT) or 143 (SIGTERM); so does a full disk (exit 1).
    """
    from cfgdiff.errors import CfgdiffError

    app, _ = build_app()
    command = typer.main.get_command(app)
    debug = os.environ.get("CFGDIFF_DEBUG", "") not in ("", "0")
    stops = (signal.SIGINT, signal.SIGTERM)
    main_thread = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, _stop) for s in stops} if main_thread else {}
    try:
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
            print(f"cfgdiff: error: {e.format_message()}{where}", file=sys.stderr)
        code = e.exit_code
    except _ABORT:  # Ctrl-C outside a command's own handler, or EOF at a prompt
        print("cfgdiff: error: interrupted", file=sys.stderr)
        code = 130
    except (CfgdiffError, _Stopped) as e:
        if debug:
            raise
        print(f"cfgdiff: error: {e}", file=sys.stderr)
        code = getattr(e, "exit_code", 130)
    except OSError as e:  # a full disk is the user's to fix, not a traceback; other OSErrors are bugs
        if debug or e.errno not in _DISK_FULL:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"cfgdiff: error: cannot write{where}: {e.strerror} (disk full or over a size limit); "
              "completed work is saved; free space and rerun the same command", file=sys.stderr)
        code = 1
    finally:
        # In-process callers get their handlers back. A process that exits next ignores the signals
        # instead: its work is done, and a Ctrl-C during interpreter shutdown (torch's teardown takes
        # a while) would otherwise turn exit 0 into a KeyboardInterrupt traceback and exit -2.
        for s, handler in old.items():
            signal.signal(s, signal.SIG_IGN if exiting else handler)
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
