"""Running tasks in worker processes, results in task order, with a bounded number in flight.

`ProcessPoolExecutor.map` (like `Pool.imap`) submits every task up front, which for ImageNet would
read the whole archive into memory ahead of the workers; here at most 3 tasks per worker are pending.

Workers are forked on Linux (as DataLoader's are). forkserver and spawn re-run the caller's
`__main__` in every worker: a script calling `prepare` without an `if __name__ == "__main__"`
guard would fail, and one with it would still import torch per worker (seconds). A fork of a
process whose torch or BLAS threads are running is safe here because workers only run numpy and
Pillow code. Workers ignore Ctrl-C (SIGTERM kills them); the main process stops submitting and cancels what is queued.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
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
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the CLI's handler, inherited by the fork


def _run(task: Task) -> Decoded:
    return task.run()


def run_tasks(tasks: Iterable[Task], workers: int) -> Iterator[Decoded]:
    """`task.run()` for every task, in order; in `workers` processes, or in this one if workers <= 1."""
    if workers <= 1:
        for task in tasks:
            yield task.run()
        return
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint)
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
