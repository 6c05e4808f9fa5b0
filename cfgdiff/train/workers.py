"""Data-loading worker processes that leave stops to the main process and die with it.

A terminal Ctrl-C, SLURM `scancel`, `docker stop` and Kubernetes signal the whole process group,
so the forked DataLoader workers receive the SIGINT/SIGTERM too. Had they kept the handler they
inherit from the CLI, they would die first, and the main process would fail on "DataLoader worker
exited unexpectedly" without a checkpoint. So each worker ignores both signals (the main process
checkpoints the completed step, then shuts the workers down), and asks the kernel for SIGKILL when
its parent dies (Linux `PR_SET_PDEATHSIG`): after a kill -9 of the trainer no worker is left
waiting on a dead pipe (torch's own parent check polls every 5 s).

A worker hands each batch's storage to the trainer as a file descriptor, through the server thread
of `multiprocessing.resource_sharer`; when the stopping trainer drops a hand-over midway, that thread
reports the lost connection with a traceback (through sys.excepthook) on the terminal the stop's
one line goes to. Workers keep those quiet: the batch was abandoned on purpose, and nothing is lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import sys
from collections.abc import Callable
from types import TracebackType

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except OSError:  # no libc to call: torch's own 5 s parent check remains
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _raised_in(tb: TracebackType | None, filename: str) -> bool:
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            return True
        tb = tb.tb_next
    return False


def _quiet_abandoned_handovers() -> None:
    """Drop the resource sharer's reports of a consumer that went away (see the module docstring); any
    other exception reaches the hook as before."""
    from multiprocessing import resource_sharer

    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, (ConnectionError, EOFError)) and _raised_in(tb, resource_sharer.__file__):
            return
        previous(kind, value, tb)

    sys.excepthook = hook


def _init(parent: int, worker_id: int) -> None:
    from cfgdiff.stops import SIGNALS

    for s in SIGNALS:  # SIGINT, SIGTERM, SIGHUP: the main process stops for all of them
        signal.signal(s, signal.SIG_IGN)
    _quiet_abandoned_handovers()
    _die_with_parent(parent)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or a batch slot's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_workers(asked: int) -> int:
    """Data-loading processes that fit this machine: never more than its usable cores (torch warns
    past that, and more only contend for the same cores)."""
    return min(asked, usable_cores())


def worker_init() -> Callable[[int], None]:
    """A DataLoader `worker_init_fn` for workers forked by this process (see the module docstring)."""
    return functools.partial(_init, os.getpid())
