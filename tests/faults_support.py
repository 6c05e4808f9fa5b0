"""Shared pieces of the fault-injection suite (tests/faults/, marker `faults`).

One small workspace is built once per test session and reused read-only: a 16 px builtin dataset,
a tiny trained run, and a 20-image reference npz. Commands run as a user runs them: in a
subprocess (`python -m cfgdiff`), with the cache under the workspace and one torch thread.
"""

from __future__ import annotations

import atexit
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def env_for(base: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(base / "cache"), "OMP_NUM_THREADS": "1", "CFGDIFF_DEBUG": ""}


@functools.cache
def workspace() -> Path:
    """data/shapes16.h5 (200 images), runs/tiny (4 steps of the tiny preset), ref.npz (20 images)."""
    import h5py

    from cfgdiff.config import PrepareConfig
    from cfgdiff.data.prepare import prepare

    base = Path(tempfile.mkdtemp(prefix="cfgdiff-faults-"))
    atexit.register(shutil.rmtree, base, True)
    prepare(PrepareConfig(source="builtin:shapes", size=16, limit=200), base / "data" / "shapes16.h5", workers=1)
    run = cfgdiff(["train", "--data", "data/shapes16.h5", "--preset", "tiny", "--run-dir", "runs/tiny",
                   "--kimg", "0.128", "--batch", "32", "--workers", "0", "--preview-every", "100"], base, env_for(base))
    assert run.returncode == 0, run.stderr
    with h5py.File(base / "data" / "shapes16.h5") as f:
        np.savez(base / "ref.npz", arr_0=f["images"][:20])
    return base


def cfgdiff(args: list[str], cwd: Path, env: dict[str, str], preexec: Callable[[], None] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfgdiff", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec)


def file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: writes past `limit` bytes fail with EFBIG (a full disk, without a tmpfs)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


class Round(NamedTuple):
    """One launch of a kill test (`run_until`): the exit code (negative: killed by a signal), stderr, and
    the signal sent. Where a kill lands depends on the machine's speed, so every kill test reads a round
    through these two, and only through them: a round that `finished` ends the plan (its later kill points
    are past), and any other must have been `interrupted_cleanly`."""

    code: int
    err: str
    sig: int

    @property
    def finished(self) -> bool:
        """The command ran to its end before the signal reached it (a fast machine, or a late kill point)."""
        return self.code == 0

    def assert_interrupted_cleanly(self) -> None:
        """SIGINT/SIGTERM: exit 128 + signal with one `cfgdiff: error:` line that says to rerun the same
        command; SIGKILL: killed by it."""
        if self.sig == signal.SIGKILL:
            assert self.code == -signal.SIGKILL, self.err
            return
        errors = [ln for ln in self.err.splitlines() if ln.startswith("cfgdiff: error:")]
        assert self.code == 128 + self.sig and len(errors) == 1 and "rerun the same command" in errors[0], self.err


def run_until(args: list[str], cwd: Path, env: dict[str, str], ready: Callable[[], bool], delay: float,
              sig: int = signal.SIGKILL, timeout: float = 120) -> Round:
    """Start `cfgdiff args` (or `python args[1:]` when args[0] is "python"), wait until `ready()` (or
    the process ends), sleep `delay`, send `sig`; the `Round`. stderr goes to a file so a kill keeps it."""
    argv = [sys.executable, *args[1:]] if args[0] == "python" else [sys.executable, "-m", "cfgdiff", *args]
    err_path = Path(tempfile.mkstemp(prefix="cfgdiff-faults-err-")[1])
    with open(err_path, "w") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=err, text=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and not ready():
                assert time.monotonic() < deadline, "the command never reached the kill point"
                time.sleep(0.01)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(sig)
            code = proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = err_path.read_text()
    err_path.unlink()
    return Round(code, text, sig)


def copy_run(base: Path, dest: Path) -> Path:
    shutil.copytree(base / "runs" / "tiny", dest)
    return dest


def error_lines(stderr: str) -> list[str]:
    """The message lines of stderr: `cfgdiff: error:` lines, and any line of a usage box (there must be none)."""
    return [ln for ln in stderr.splitlines() if ln.startswith(("cfgdiff: error:", "│", "╭", "Usage:"))]
