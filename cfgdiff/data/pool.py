"""Running tasks in worker processes, results in task order, with a bounded number in flight.

`ProcessPoolExecutor.map` (like `Pool.imap`) submits every task up front, which for ImageNet would
read the whole archive into memory ahead of the workers; here at most 3 tasks per worker are pending.

Workers are forked on Linux (as DataLoader's are). forkserver and spawn re-run the caller's
`__main__` in every worker: a script calling `prepare` without an `if __name__ == "__main__"`
guard would fail, and one with it would still import torch per worker (seconds). A fork of a
process whose torch or BLAS threads are running is safe here because workers only run numpy and
Pillow code.

Stopping and dying: a terminal's Ctrl-C, `scancel`, `docker stop` signal the whole process group.
Workers ignore SIGINT and SIGTERM, so none dies first with a traceback: the main process alone
stops (keeping its finished parts), cancels what is queued, and the workers exit after their
current task. Workers die with the main process however it ends (kill -9 included): on Linux the
kernel sends them SIGKILL when it dies (PR_SET_PDEATHSIG); elsewhere they watch their parent's pid.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from cfgdiff.data.decode import Decoded
from cfgdiff.data.sources import Task


def cpu_count() -> int:
    """The cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_init(parent: int) -> None:
    """In each worker: leave stopping to the main process, and die with it (see the docstring)."""
    for s in (signal.SIGINT, signal.SIGTERM):  # not the CLI's handler, which the fork inherited
        signal.signal(s, signal.SIG_IGN)
    if sys.platform == "linux" and _set_death_signal():
        if os.getppid() != parent:  # the parent died before the death signal was armed
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _set_death_signal() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:  # an orphan is adopted by another process
        time.sleep(0.5)
    os._exit(1)


def _run(task: Task) -> Decoded:
    return task.run()


def run_tasks(tasks: Iterable[Task], workers: int) -> Iterator[Decoded]:
    """`task.run()` for every task, in order; in `workers` processes, or in this one if workers <= 1."""
    if workers <= 1:
        for task in tasks:
            yield task.run()
        return
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),))
    pending: deque[Future[Decoded]] = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(_run, task))
            if len(pending) >= 3 * workers:  # enough to keep every worker busy while we write
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:  # Ctrl-C, an error, or the consumer stopped early: do not wait for the queue
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)  # all done: reap the workers
