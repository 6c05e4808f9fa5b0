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
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def _keep_heap_pages() -> bool:
    """Have glibc serve a worker's per-image arrays (0.1-30 MiB) from a heap it keeps.

    By default malloc maps every block over 128 KiB afresh and unmaps it on free, so each image's
    decoded pixels and resize temporaries cost new zero-filled pages: measured 1.2 s of system time
    per 1000 ImageNet-sized JPEGs -> 64² (area), 40% of the work, against 0.2 s with the heap kept.
    Blocks over 64 MiB (photos of tens of megapixels) are still mapped and returned at once.
    """
    try:
        libc = ctypes.CDLL(None)
        return libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20) == 1
    except (OSError, AttributeError):  # not glibc
        return False


def _worker_init(parent: int) -> None:
    """In each worker: leave stopping to the main process, and die with it (see the docstring)."""
    from cfgdiff.stops import SIGNALS

    for s in SIGNALS:  # not the CLI's handler, which the fork inherited
        signal.signal(s, signal.SIG_IGN)
    _keep_heap_pages()
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
        _keep_heap_pages()  # this process decodes: the same per-image arrays as a worker's
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
