"""A full disk, for every writer (docs/faults.md, rule 6): each command first writes its output for
one job, then is rerun for another job with --force while writes past a few KiB fail (RLIMIT_FSIZE,
writes fail with EFBIG as on a full disk). The rerun must exit 1 with one line, and leave the first
job's output, sidecar included, byte for byte as it was: never a traceback, never a half-replaced
pair."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from faults_support import cfgdiff, env_for, error_lines, file_size_limit, workspace

pytestmark = [pytest.mark.faults]
LIMIT = 2048  # bytes: every output below is larger

# (writer, first run, rerun of another job with --force, the files that must stay as they were)
WRITERS = [
    ("prepare --out", ["prepare", "builtin:shapes", "--size", "16", "--limit", "40", "--workers", "1", "--out", "d.h5"],
     ["prepare", "builtin:shapes", "--size", "16", "--limit", "60", "--workers", "1", "--out", "d.h5", "--force"],
     ["d.h5", "d.json"]),
    ("sample --out", ["sample", "run", "--n", "16", "--steps", "2", "--out", "s.npz"],  # 2 parts of ~6.5 KiB
     ["sample", "run", "--n", "16", "--steps", "2", "--w", "1", "--shard-size", "8", "--out", "s.npz", "--force"],
     ["s.npz", "s.npz.json"]),
    ("score --results", [],  # an earlier job's results, recorded as score's (below): one process is enough
     ["score", "s4.npz", "--ref", "s4.npz", "--results", "r.json", "--metrics", "fid,sfid", "--force"],
     ["r.json"]),
    ("export --out", ["export", "run/ema-00000004.pt", "--out", "e.safetensors"],
     ["export", "run", "--out", "e.safetensors", "--force"], ["e.safetensors"]),
    ("train (checkpoint)", [],  # the workspace's run, trained on for more kimg: its next checkpoint fails
     ["train", "--data", "data/shapes16.h5", "--preset", "tiny", "--run-dir", "runs/tiny", "--kimg", "0.192",
      "--batch", "32", "--workers", "0", "--preview-every", "100"],
     ["runs/tiny/ema-00000004.pt", "runs/tiny/checkpoint-00000004.pt"]),
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("writer,first,rerun,kept", WRITERS, ids=[w[0] for w in WRITERS])
def test_a_full_disk_is_one_line_and_keeps_the_earlier_output(writer, first, rerun, kept, tmp_path):
    # a results file is about 1 KiB; the samples' sidecar (~3 KiB) fits under the sample limit, their npz not
    limit = {"score --results": 256, "sample --out": 8192}.get(writer, LIMIT)
    ws = workspace()
    env = env_for(ws)
    shutil.copytree(ws / "runs" / "tiny", tmp_path / "run")
    shutil.copytree(ws / "runs", tmp_path / "runs")
    shutil.copytree(ws / "data", tmp_path / "data")
    with np.load(ws / "ref.npz") as f:
        np.savez(tmp_path / "s4.npz", arr_0=f["arr_0"][:4])  # 4 images: Inception is the slow part
    first = [a.replace("{ws}", str(ws)) for a in first]
    rerun = [a.replace("{ws}", str(ws)) for a in rerun]
    if writer.startswith("score"):
        from cfgdiff import files

        files.write_json(tmp_path / "r.json", {"metrics": {"fid": 1.0}, "pad": "x" * 400},
                         owner=files.Owner("score-results", "score", "an-earlier-job"))
    if first:
        r = cfgdiff(first, tmp_path, env)
        assert r.returncode == 0, r.stderr
    before = {name: _sha(tmp_path / name) for name in kept}
    r = cfgdiff(rerun, tmp_path, env, preexec=file_size_limit(limit))
    lines = error_lines(r.stderr)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and "cannot write" in lines[0], r.stderr
    assert {name: _sha(tmp_path / name) for name in kept} == before
