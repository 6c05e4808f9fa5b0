"""The kill tests' harness: `run_until` and how a `Round` is read. Where a signal lands depends on the
machine's speed (on a fast machine a round finishes before its kill point; under load it is killed during
its imports), and a kill test that reads its round by hand gets one of the two wrong on some machine. So
the reading lives in `Round`, and this file generates the class: every signal the kill tests send × the
command finished first / was in flight / failed on its own, with a small script standing in for the
command (its exit codes are the contract cfgdiff's commands keep: 128 + signal and one error line)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from faults_support import run_until

pytestmark = pytest.mark.faults

COMMAND = """
import pathlib, signal, sys, time
def stop(sig, frame):
    print("cfgdiff: error: interrupted; rerun the same command to resume\\n" * int(sys.argv[2]), file=sys.stderr)
    sys.exit(128 + sig)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
pathlib.Path("started").touch()
time.sleep(float(sys.argv[1]))
if int(sys.argv[3]):  # a failure of its own, worded like a stop: only the exit code tells them apart
    print("cfgdiff: error: interrupted; rerun the same command to resume", file=sys.stderr)
sys.exit(int(sys.argv[3]))
"""
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)


def _round(tmp_path: Path, seconds: float, sig: int, in_flight: bool, lines: int = 1, code: int = 0):
    (tmp_path / "c.py").write_text(COMMAND)
    (tmp_path / "started").unlink(missing_ok=True)
    ready = (lambda: (tmp_path / "started").exists()) if in_flight else (lambda: False)  # False: until it ends
    return run_until(["python", "c.py", str(seconds), str(lines), str(code)], tmp_path, dict(os.environ), ready,
                     0.05, sig, timeout=30)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_round_is_read_the_same_whatever_the_machines_speed(tmp_path, sig):
    # in flight when the signal lands: not finished, and a clean interruption
    r = _round(tmp_path, 30, sig, in_flight=True)
    assert not r.finished and r.sig == sig
    r.assert_interrupted_cleanly()
    # done before its kill point: finished, and the signal never sent
    r = _round(tmp_path, 0, sig, in_flight=False)
    assert r.finished and r.code == 0 and r.err == ""
    # failed on its own (exit 1 before the signal): neither finished nor a clean interruption
    r = _round(tmp_path, 0, sig, in_flight=False, code=1)
    assert not r.finished
    with pytest.raises(AssertionError):
        r.assert_interrupted_cleanly()


@pytest.mark.parametrize("sig", SIGNALS[1:], ids=lambda s: signal.Signals(s).name)
def test_a_stop_that_says_more_or_less_than_one_error_line_is_not_clean(tmp_path, sig):
    for lines in (0, 2):
        r = _round(tmp_path, 30, sig, in_flight=True, lines=lines)
        assert r.code == 128 + sig
        with pytest.raises(AssertionError):
            r.assert_interrupted_cleanly()
