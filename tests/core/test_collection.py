"""The suite runs in several processes (`pytest -n 2`, pytest-xdist), which each collect the tests and
must find the same list in the same order. Python salts str hashes per process, so a parametrize
list built from a set would differ between workers (CI on 2026-12-07: test_ownership's folder owners).
Collected here under two hash seeds, in subprocesses, and compared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_collection_does_not_depend_on_the_hash_seed():
    lists = []
    for seed in ("1", "2"):
        run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "-p", "no:xdist", "tests"], cwd=REPO, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        lists.append([line for line in run.stdout.splitlines() if "::" in line])
    assert len(lists[0]) > 1000 and lists[0] == lists[1]
