"""Stops: the one rule for SIGINT, SIGTERM and SIGHUP, in every command.

    first signal     raises `Stopped` where the program is, unless it is inside `critical()`,
                     which holds it until the section ends (an optimiser step and its EMA update:
                     weights must never be saved half-updated). Every file is written under a
                     temporary name and renamed (cfgdiff.files), so stopping anywhere else loses only
                     the work in flight; `train` then saves its last completed step.
    second signal    exits at once with one line (`os._exit`): the user asked twice. A temporary file
                     in flight is left under its hidden name and removed by the next write of its target.
    before `install` `cfgdiff.cli` installs `early_exit` before it imports anything heavy, so a Ctrl-C
                     while the CLI starts exits 130 with one line, not a KeyboardInterrupt traceback.

The exit code is the shell's: 128 + the signal number (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Stopped(BaseException):
    """A stop signal. A BaseException, so no `except Exception` in the library mistakes it for a bad
    file; not KeyboardInterrupt, which Click would turn into a bare "Aborted!" and exit 1."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; completed work is saved (finished parts, "
                         "rows, checkpoints); rerun the same command to continue")


class _State:
    depth = 0  # nesting of critical() sections
    pending = 0  # a signal held by a critical section
    stopping = 0  # the signal already raised as Stopped


def _exit_now(signum: int) -> None:
    os.write(2, f"cfgdiff: error: stopped again by {signal.Signals(signum).name}; exiting now\n".encode())
    os._exit(128 + signum)


def _handler(signum: int, frame: Any) -> None:
    if _State.stopping or _State.pending:
        _exit_now(signum)
    if _State.depth:
        _State.pending = signum
        return
    _State.stopping = signum
    raise Stopped(signum)


def stopping() -> int:
    """The stop signal being handled (0: none). A library that turns `Stopped` into an error of its own
    (torch's writer does) is still a stop: the CLI reports it as one."""
    return _State.stopping


def reraise_stop(exc: BaseException) -> None:
    """Raise the stop that `exc` is, or carries (Python and libraries wrap exceptions: an exception
    raised in `__set_name__` arrives as a RuntimeError whose cause is it), or that is being handled.
    Every handler that reports an error and goes on (plugin loaders) calls this first: a stop signal
    is the user's, never a plugin's failure."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, Stopped):
            raise e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    if _State.stopping:
        raise Stopped(_State.stopping)


def early_exit(signum: int, frame: Any) -> None:
    """Before the CLI's handlers are in place nothing has been written: exit with one line."""
    os.write(2, f"cfgdiff: error: stopped by {signal.Signals(signum).name} while starting\n".encode())
    os._exit(128 + signum)


def install() -> dict[int, Any]:
    """Put the stop handler on every stop signal; returns the old handlers (for `restore`). A no-op
    outside the main thread (Python delivers signals only there)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _State.depth = _State.pending = _State.stopping = 0
    return {s: signal.signal(s, _handler) for s in SIGNALS}


def restore(old: dict[int, Any], *, ignore: bool = False) -> None:
    """Give back the handlers `install` replaced, or (`ignore`) ignore stops from now on: a process
    whose work is done and is exiting (torch's teardown takes a while) must not turn exit 0 into a
    late stop.

    A stop belongs to the call that installed the handlers: the restore that gives back a handler
    other than cfgdiff's (the outermost) clears its record, so a process that goes on (a notebook, a
    test run, a library caller) is not stopped again by it. An inner restore (train's, inside the
    CLI's) puts cfgdiff's handler back and keeps the record for the outer call to report."""
    for s, h in old.items():
        signal.signal(s, signal.SIG_IGN if ignore else h)
    if old and all(h is not _handler for h in old.values()):  # the outermost install's handlers are back
        _State.depth = _State.pending = _State.stopping = 0


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Hold a stop signal until the block ends, then raise it (a second signal still exits at once)."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending and not _State.stopping:
        signum, _State.pending = _State.pending, 0
        _State.stopping = signum
        raise Stopped(signum)


def install_early() -> None:
    """`early_exit` on every stop signal whose handler is Python's default (the CLI's entry, before
    its imports); a handler someone else installed, or an ignored signal, is left alone."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        current = signal.getsignal(s)
        if current is signal.default_int_handler or (current is signal.SIG_DFL and s != signal.SIGINT):
            signal.signal(s, early_exit)


__all__ = ["SIGNALS", "Stopped", "critical", "early_exit", "install", "install_early", "restore", "stopping"]
