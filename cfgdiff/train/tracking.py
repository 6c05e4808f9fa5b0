"""What a run records as it trains, in its folder: `log.txt` (the lines `train` reports: header,
one per tick, checkpoints, grids, the end), `stats.jsonl` (one row per tick, with the training
time so far and seconds per kimg) and, with `--log tensorboard`, TensorBoard scalars under `tb/`.

Lines reported before the run folder exists (it appears after the first successful optimiser step)
are kept and written to log.txt when it does. Rank 0 alone writes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from cfgdiff import dist
from cfgdiff.config import TrainConfig, save_json
from cfgdiff.errors import CfgdiffError, ConfigError

LOGGERS = ("tensorboard",)
_SCALARS = ("loss", "grad_norm", "lr", "img_per_s", "s_per_kimg", "max_mem_gib")


def check_loggers(loggers: list[str]) -> None:
    """One line now for an unknown logger, or one whose package is not installed."""
    for name in loggers:
        if name not in LOGGERS:
            raise ConfigError(f"unknown --log {name!r}; choose {', '.join(LOGGERS)}")
        if name == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise CfgdiffError("--log tensorboard needs the tensorboard package: "
                                   "pip install 'cfgdiff[tensorboard]'") from None


class RunLog:
    def __init__(self, run_dir: Path, loggers: list[str] | None = None):
        self.run_dir, self.loggers = run_dir, list(loggers or [])
        self.main = dist.is_main()
        self.pending: list[str] = []
        self.started = False
        self.elapsed_before = 0.0  # training seconds of the earlier sessions of this run
        self.t0 = time.monotonic()
        self.writer: Any = None
        self.lock: Any = None

    def hold_lock(self) -> None:
        """Hold the run folder's lock (`.train.lock` in it) until `close`: a second `train` on the same
        folder stops with one line naming this one. Rank 0; idempotent."""
        from cfgdiff.files import output_lock

        if self.main and self.lock is None and self.run_dir.is_dir():
            lock = output_lock(self.run_dir / "train", "train")
            lock.__enter__()
            self.lock = lock

    def line(self, text: str, echo: bool = True) -> None:
        """Report `text`: on stderr (rank 0, when echo) and in log.txt (once the folder exists)."""
        if not self.main:
            return
        if echo:
            print(text, file=sys.stderr, flush=True)
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
        if not self.started:
            self.pending.append(stamped)
            return
        with open(self.run_dir / "log.txt", "a") as f:
            f.write(stamped + "\n")

    def begin(self, cfg: TrainConfig, start: int) -> None:
        """After the first successful step: make the folder, write config.json, drop stats rows past
        the resumed step, and write the lines reported so far."""
        from cfgdiff.train.resume import stats_rows, trim_stats
        from cfgdiff.train.start import make_run_dir

        if self.main:
            make_run_dir(self.run_dir)
            self.hold_lock()
            save_json(cfg, self.run_dir / "config.json")
            stats = self.run_dir / "stats.jsonl"
            trim_stats(stats, start)
            if stats.exists():
                rows = stats_rows(stats)
                elapsed = rows[-1].get("elapsed_s", 0.0) if rows else 0.0
                self.elapsed_before = float(elapsed) if isinstance(elapsed, (int, float)) else 0.0
            if "tensorboard" in self.loggers:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start + 1 if start else None)
        self.started = True
        pending, self.pending = self.pending, []
        for text in pending:
            with open(self.run_dir / "log.txt", "a") as f:
                f.write(text + "\n")

    def elapsed(self) -> float:
        """Training seconds of the run so far, over all its sessions (up to their last stats row)."""
        return self.elapsed_before + time.monotonic() - self.t0

    def row(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        with open(self.run_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key in _SCALARS:
                if row.get(key) is not None:
                    self.writer.add_scalar(f"train/{key}", row[key], row["step"], walltime=row["time"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.lock is not None:
            lock, self.lock = self.lock, None
            lock.__exit__(None, None, None)
