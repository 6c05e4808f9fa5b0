"""Running tasks in worker processes, results in task order, with a bounded number in flight.

`ProcessPoolExecutor.map` (like `Pool.imap`) submits every task up front, which for ImageNet would
read the whole archive into memory ahead of the workers; here at most `window` tasks are pending.
Workers are started by forkserver (a fork of a process that may hold torch's threads is unsafe)
and ignore Ctrl-C, which the main process handles: it stops submitting and cancels what is queued.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
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


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(task: Task) -> Decoded:
    return task.run()


def run_tasks(tasks: Iterable[Task], workers: int) -> Iterator[Decoded]:
    """`task.run()` for every task, in order; in `workers` processes, or in this one if workers <= 1."""
    if workers <= 1:
        for task in tasks:
            yield task.run()
        return
    ctx = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint)
    pending: deque[Future[Decoded]] = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(_run, task))
            if len(pending) >= 3 * workers:  # enough to keep every worker busy while we write
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
