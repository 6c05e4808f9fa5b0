"""Progress for long work: a rich bar on rank 0 when stderr is a TTY, plain greppable lines otherwise.

The library reports progress only through `Progress`; nothing else in the library imports rich.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from cfgdiff.launch import launched_rank


class Progress:
    """`with Progress("sample", total=N, unit="img") as p: p.advance(k, loss=0.1)`.

    On rank 0 and a TTY it draws a rich bar with rate and ETA; elsewhere rank 0 prints a line such
    as `sample: 512/50000 img (1.0%) 31.2 img/s eta 26m loss=0.1` at most every `interval`
    seconds and at the end. Other ranks print nothing.
    """

    def __init__(self, desc: str, total: int, unit: str = "it", interval: float = 10.0, start: int = 0):
        self.desc, self.total, self.unit, self.interval = desc, total, unit, interval
        self.done = start
        self._start_done = start
        self._t0 = time.monotonic()
        self._last = 0.0
        self._fields: dict[str, Any] = {}
        self._rich = None
        self.enabled = launched_rank() == 0  # torchrun's RANK: the group's rank, known without torch
        if self.enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[extra]}"),
                transient=False,
            )

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.start()
            self._task = self._rich.add_task(self.desc, total=self.total, completed=self.done, rate="", extra="")
        return self

    def rate(self) -> float:
        elapsed = time.monotonic() - self._t0
        return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        self._fields.update(fields)
        if not self.enabled:
            return
        if self._rich is not None:
            rate = f"{self.rate():.1f} {self.unit}/s"
            self._rich.update(self._task, completed=self.done, rate=rate, extra=self._extra())
            return
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._line()

    def _extra(self) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in self._fields.items())

    def _line(self) -> None:
        r = self.rate()
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / r if r > 0 else float("nan")
        msg = (f"{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.1f}%) "
               f"{r:.1f} {self.unit}/s eta {_duration(eta)}")
        extra = self._extra()
        print(msg + (" " + extra if extra else ""), file=sys.stderr, flush=True)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def duration(seconds: float) -> str:
    """A plan's duration for people: 42 s, 7.5 min, 3.2 h, 12 days, 134 years (never "0.00 h")."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * (1.5 if unit in ("years", "days") else 1):
            return f"{seconds / size:.2g} {unit}" if seconds / size < 10 else f"{seconds / size:,.0f} {unit}"
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
