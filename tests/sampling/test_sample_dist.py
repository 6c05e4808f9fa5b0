"""Sampling under torchrun: 2 gloo processes give the same samples as 1 process, and rank 0 alone writes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def run(args, cwd, env):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cfg = [sys.executable, "-m", "cfgdiff"]
    run(cfg + ["prepare", "builtin:shapes", "--size", "16", "--limit", "100"], d, env)
    run(cfg + ["train", "--preset", "tiny", "--kimg", "0.064", "--batch", "32"], d, env)
    return d, env


@pytest.mark.slow
def test_two_processes_draw_the_same_samples_as_one(trained):
    d, env = trained
    # -n, not --n: torchrun's own parser takes --n for an abbreviation of --nnodes
    args = ["sample", "--w", "1.5", "-n", "9", "--steps", "3", "--batch-per-device", "2", "--shard-size", "2"]
    run([sys.executable, "-m", "cfgdiff", *args, "--out", "one.npz"], d, env)
    script = str(Path(sys.executable).parent / "cfgdiff")  # the console script, as users call it
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script]
    r = run(torchrun + [*args, "--out", "two.npz"], d, env)
    assert r.stderr.count("wrote two.npz") == 1  # rank 0 alone reports
    with np.load(d / "one.npz") as a, np.load(d / "two.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    assert not (d / ".two.npz.partial").exists()
