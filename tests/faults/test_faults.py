"""Fault injection: kill -9 (and SIGINT/SIGTERM) at random points of prepare, train, sample, sweep
and score, then the same command rerun to the end must give what an uninterrupted run gives.

Kill points: after the k-th unit of saved work appears (a part, a checkpoint, a row) plus a delay
drawn from a fixed-seed RNG, or a delay from the start. After every kill: no file at a final path
unless complete, every saved unit readable, and the rerun reuses every saved unit (so at most the
unit in flight, one part / checkpoint interval / w value, is redone).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cfgdiff.config import PrepareConfig
from cfgdiff.data.parts import part_length
from cfgdiff.data.prepare import prepare
from cfgdiff.runs import checkpoint_files, read_checkpoint
from faults_support import cfgdiff, env_for, run_until, workspace

pytestmark = pytest.mark.faults


# ---- prepare ----------------------------------------------------------------------------------------------------
def test_prepare_killed_anywhere_resumes_to_the_same_dataset(tmp_path):
    base = workspace()
    per_part = part_length(128)
    n = 3 * per_part
    expected = prepare(PrepareConfig(source="builtin:shapes", size=128, limit=n), tmp_path / "ref" / "d.h5", workers=1)
    assert expected.count == n
    args = ["prepare", "builtin:shapes", "--size", "128", "--limit", str(n), "--workers", "1", "--out", "d.h5"]
    out, partial = tmp_path / "d.h5", tmp_path / ".d.h5.partial"

    def parts() -> list[Path]:
        return sorted(partial.glob("part-*.npz"))

    rng = np.random.default_rng(2022)
    # (parts to wait for, signal): a kill anywhere in the first part, kills within later parts, a clean SIGTERM
    plan = [(0, signal.SIGKILL, rng.uniform(0.5, 2.5)), (1, signal.SIGKILL, rng.uniform(0, 0.4)),
            (2, signal.SIGTERM, rng.uniform(0, 0.2))]
    saved = 0
    for k, sig, delay in plan:
        r = run_until(args, tmp_path, env_for(base), lambda: len(parts()) >= k, delay, sig)
        # every saved part reused: checked where this run got past its start (it wrote a part, or finished);
        # parts saved earlier can make the kill point true at launch, and a kill during the imports
        # leaves nothing to read (the machine's speed decides which)
        if saved and (len(parts()) > saved or r.finished):
            assert f"resuming: {saved * per_part} of {n} images already done" in r.err
        if r.finished:
            break
        r.assert_interrupted_cleanly()
        assert not out.exists()  # the dataset appears only complete
        for p in parts():  # every saved part is whole
            with np.load(p, allow_pickle=False) as z:
                assert z["images"].shape == (per_part, 128, 128, 3) and len(z["labels"]) == per_part
        assert len(parts()) >= k and len(parts()) >= saved
        saved = len(parts())
    if not out.exists():
        r = cfgdiff(args, tmp_path, env_for(base))
        assert r.returncode == 0, r.stderr
        if saved:
            assert f"resuming: {saved * per_part} of {n} images already done" in r.stderr
    assert not partial.exists()
    with h5py.File(out) as got, h5py.File(tmp_path / "ref" / "d.h5") as want:
        assert np.array_equal(got["labels"][:], want["labels"][:])
        assert np.array_equal(got["images"][:], want["images"][:])


# ---- train ------------------------------------------------------------------------------------------------------
TRAIN = ["--preset", "tiny", "--run-dir", "run", "--kimg", "0.192", "--batch", "16", "--snapshot", "0.032",
         "--tick", "0.016", "--preview-every", "100", "--workers", "0", "--keep", "100", "--json"]  # 12 steps, checkpoint every 2


def _stats(run: Path) -> list[dict]:
    rows = [json.loads(ln) for ln in (run / "stats.jsonl").read_text().splitlines()] if (run / "stats.jsonl").exists() else []
    return [{k: v for k, v in r.items() if k not in ("time", "img_per_s", "elapsed_s", "s_per_kimg")} for r in rows]


def test_train_killed_anywhere_resumes_to_bit_identical_weights(tmp_path):
    base = workspace()
    args = ["train", "--data", str(base / "data" / "shapes16.h5"), *TRAIN]
    (tmp_path / "ref").mkdir()
    r = cfgdiff(args, tmp_path / "ref", env_for(base))
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"

    def steps() -> list[int]:
        return [int(p.stem.split("-")[1]) for p in checkpoint_files(run)]

    rng = np.random.default_rng(7)
    # (checkpoints this round writes before the signal, signal, delay): a kill anywhere from the start, a kill
    # mid-round, a clean stop mid-round. The kill point counts this round's own checkpoints: one counted from
    # the start would be true at launch once earlier rounds had saved that many, and the SIGTERM meant to land
    # mid-step would land in the start-up on a fast machine (where there is no step to report)
    plan = [(0, signal.SIGKILL, rng.uniform(1.0, 3.0)), (1, signal.SIGKILL, rng.uniform(0, 0.5)),
            (1, signal.SIGTERM, rng.uniform(0, 0.3))]
    saved = 0
    for k, sig, delay in plan:
        before = len(steps())
        r = run_until(args, tmp_path, env_for(base), lambda: len(steps()) >= before + k, delay, sig)
        if r.finished:  # the rerun resumes from its last checkpoint
            saved = max(steps())
            break
        r.assert_interrupted_cleanly()
        if sig == signal.SIGTERM:  # a clean stop checkpoints the step it completed
            last = [ln for ln in r.err.splitlines() if ln.startswith("cfgdiff: error:")][0]
            assert last.startswith("cfgdiff: error: interrupted after step ")
            assert int(last.split("after step ")[1].split()[0]) == max(steps())
        for kind in ("checkpoint", "ema"):  # every file at a final name is whole
            for p in checkpoint_files(run, kind):
                assert read_checkpoint(p)["step"] == int(p.stem.split("-")[1])
        newest = max(steps(), default=0)
        assert len(steps()) >= before + k and newest >= saved
        rows = _stats(run)
        assert max((r["step"] for r in rows), default=0) - newest <= 2  # at most one checkpoint interval lost
        saved = newest
    r = cfgdiff(args, tmp_path, env_for(base))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"]["resumed_from_step"] == saved  # the newest checkpoint was used
    # the same 12 rows (no step lost or counted twice, same losses) and bit-identical final state
    assert _stats(run) == _stats(tmp_path / "ref" / "run")
    got, want = read_checkpoint(run / "checkpoint-00000012.pt"), read_checkpoint(tmp_path / "ref" / "run" / "checkpoint-00000012.pt")
    for key in ("model", "ema"):
        assert got[key].keys() == want[key].keys()
        assert all(torch.equal(got[key][n], want[key][n]) for n in want[key]), key
    for i, s in want["optimizer"]["state"].items():
        assert all(torch.equal(got["optimizer"]["state"][i][n], s[n]) for n in s)


# ---- sample -----------------------------------------------------------------------------------------------------
SAMPLE_SCRIPT = """
import sys
from pathlib import Path
import torch
from cfgdiff.config import SamplerConfig
from cfgdiff.sampling.command import seeds_and_labels
from cfgdiff.sampling.model import load_model
from cfgdiff.sampling.shards import SampleJob, run_sample
torch.set_num_threads(1)
model = load_model(sys.argv[1], torch.device("cpu"))
seeds, labels = seeds_and_labels(40, None, model.num_classes, True, None)
job = SampleJob(tuple(seeds), tuple(labels), SamplerConfig(steps=8, w=1.0), batch=4, shard_size=8)
run_sample(model, job, Path(sys.argv[2]), torch.device("cpu"))
"""


def test_sample_cli_stopped_by_sigint_then_rerun_gives_identical_samples(tmp_path):
    base = workspace()
    args = ["sample", str(base / "runs" / "tiny"), "--n", "10", "--steps", "3", "--w", "1"]
    r = cfgdiff([*args, "--out", "ref.npz"], tmp_path, env_for(base))
    assert r.returncode == 0, r.stderr
    delay = np.random.default_rng(13).uniform(1.0, 3.0)
    r = run_until([*args, "--out", "s.npz"], tmp_path, env_for(base), lambda: True, delay, signal.SIGINT)
    if not r.finished:
        r.assert_interrupted_cleanly()
        assert not (tmp_path / "s.npz").exists()
        r = cfgdiff([*args, "--out", "s.npz"], tmp_path, env_for(base))
        assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "s.npz") as got, np.load(tmp_path / "ref.npz") as want:
        assert np.array_equal(got["arr_0"], want["arr_0"]) and np.array_equal(got["arr_1"], want["arr_1"])


def _python(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_sample_killed_anywhere_resumes_to_identical_samples(tmp_path):
    """`run_sample` (what `cfgdiff sample` calls) with 8-sample shards, so a kill falls between shards."""
    base = workspace()
    (tmp_path / "s.py").write_text(SAMPLE_SCRIPT)
    args, env = ["python", "s.py", str(base / "runs" / "tiny")], env_for(base)
    ref = _python([*args[1:], "ref.npz"], tmp_path, env)
    assert ref.returncode == 0, ref.stderr
    out, parts_dir = tmp_path / "s.npz", tmp_path / ".s.npz.partial"

    def parts() -> list[Path]:
        return sorted(parts_dir.glob("part-*.npz"))

    rng = np.random.default_rng(11)
    saved: dict[str, int] = {}
    for k, delay in [(0, rng.uniform(1.0, 2.5)), (2, rng.uniform(0, 0.3)), (4, rng.uniform(0, 0.3))]:
        r = run_until([*args, "s.npz"], tmp_path, env, lambda: len(parts()) >= k, delay)
        if not r.finished:
            r.assert_interrupted_cleanly()
        if r.finished or out.exists():  # finished, or the kill landed after the output was complete
            break
        for p in parts():
            with np.load(p, allow_pickle=False) as z:
                assert z["arr_0"].shape == (8, 16, 16, 3) and z["seeds"].tolist() == list(range(int(p.stem[5:]), int(p.stem[5:]) + 8))
        names = {p.name: p.stat().st_mtime_ns for p in parts()}
        assert all(names.get(n) == t for n, t in saved.items()) and len(names) >= k  # saved shards kept, not redone
        saved = names
    # One more run in every case: it finishes an interrupted job, and on a complete output (perhaps killed while
    # removing the parts) it only cleans up; either way the result must be the uninterrupted one.
    r = _python([*args[1:], "s.npz"], tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert not parts_dir.exists()
    with np.load(out) as got, np.load(tmp_path / "ref.npz") as want:
        assert np.array_equal(got["arr_0"], want["arr_0"]) and np.array_equal(got["arr_1"], want["arr_1"])


# ---- sweep and score --------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k != "seconds"} for ln in path.read_text().splitlines()]


def test_sweep_killed_anywhere_resumes_to_the_same_table(tmp_path):
    base = workspace()
    args = ["sweep", str(base / "runs" / "tiny"), "--w", "0,1,3", "--n", "8", "--steps", "2", "--batch-per-device", "8",
            "--ref", str(base / "ref.npz")]
    r = cfgdiff([*args, "--out-dir", "ref"], tmp_path, env_for(base))
    assert r.returncode == 0, r.stderr
    table = tmp_path / "sw" / "sweep.jsonl"

    def rows() -> int:
        return len(table.read_text().splitlines()) if table.exists() else 0

    rng = np.random.default_rng(3)
    saved, done = 0, False
    for k, sig, delay in [(1, signal.SIGKILL, rng.uniform(0, 0.5))]:
        r = run_until([*args, "--out-dir", "sw"], tmp_path, env_for(base), lambda: rows() >= k, delay, sig)
        assert r.err.count("done earlier, skipped") == saved  # every saved row reused
        if r.finished:
            done = True
            break
        r.assert_interrupted_cleanly()
        printed = r.err.count(": fid=")  # rows the killed run reported (each is written before it is reported)
        assert rows() >= printed and rows() >= k and rows() >= saved
        assert [row["w"] for row in _rows(table)] == [0.0, 1.0, 3.0][: rows()]  # whole rows, in grid order
        saved = rows()
    if not done:
        r = cfgdiff([*args, "--out-dir", "sw"], tmp_path, env_for(base))
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("done earlier, skipped") == saved
    assert _rows(table) == _rows(tmp_path / "ref" / "sweep.jsonl")
    assert (tmp_path / "sw" / "sweep.csv").read_text().splitlines()[0] == (tmp_path / "ref" / "sweep.csv").read_text().splitlines()[0]


def test_score_save_stats_killed_anywhere_then_rerun_writes_the_same_statistics(tmp_path):
    base = workspace()
    args = ["score", str(base / "ref.npz"), "--ref", str(base / "ref.npz"), "--metrics", "fid", "--batch-per-device", "10"]
    r = cfgdiff([*args, "--save-stats", "ref.npz", "--results", "ref.json"], tmp_path, env_for(base))
    assert r.returncode == 0, r.stderr
    stats, results = tmp_path / "st.npz", tmp_path / "st.json"
    rng = np.random.default_rng(5)
    for delay in rng.uniform(0.5, 4.0, 1):
        r = run_until([*args, "--save-stats", "st.npz", "--results", "st.json"], tmp_path, env_for(base),
                      lambda: True, delay)
        if r.finished:
            break
        r.assert_interrupted_cleanly()
        assert not results.exists() and not stats.exists()  # written last, and only whole
    r = cfgdiff([*args, "--save-stats", "st.npz", "--results", "st.json"], tmp_path, env_for(base))
    assert r.returncode == 0, r.stderr
    with np.load(stats) as got, np.load(tmp_path / "ref.npz") as want:
        assert sorted(got.files) == sorted(want.files)
        assert all(np.array_equal(got[k], want[k]) for k in want.files)
    assert json.loads(results.read_text())["metrics"]["fid"] == json.loads((tmp_path / "ref.json").read_text())["metrics"]["fid"]
