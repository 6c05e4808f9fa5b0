"""The trained-run contract (cfgdiff/runs.py): damaged checkpoints are one line naming the file and
the key, a dataset swapped under a run is refused, `newest_run` skips runs without a sampling file,
a finished run reports strict JSON, and sampling/ never imports train/."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cfgdiff.cli.app import main
from cfgdiff.errors import CheckpointError, DataError, NumericalError
from cfgdiff.files import LEDGER
from cfgdiff.runs import (
    FINGERPRINT_ROWS,
    dataset_record,
    load_for_sampling,
    newest_run,
)
from cfgdiff.train.loop import train
from support import saved_run, tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[2]


def _one_line_error(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return code, lines[0]


@pytest.mark.parametrize("damage, key, message", [
    (lambda s: s.pop("ema"), "ema", "key 'ema' is missing"),
    (lambda s: s.pop("images_seen"), "images_seen", "key 'images_seen' is missing"),
    (lambda s: s.update(extra=1), "extra", "unknown key 'extra'"),
    (lambda s: s.update(step="4"), "step", "key 'step' is str, expected int"),
    (lambda s: s.update(step=True), "step", "key 'step' is bool, expected int"),
    (lambda s: s["ema"].update({"conv_out.weight": [0.0]}), "ema",
     "key 'ema.conv_out.weight' is list, expected a tensor"),
    (lambda s: s.update(ema=[0.0]), "ema", "key 'ema' is list, expected a dict of tensors"),
    (lambda s: s["dataset_info"].pop("class_names"), "class_names", "key 'dataset_info.class_names' is missing"),
    (lambda s: s["dataset_info"]["fingerprint"].update(rows="64"), "rows",
     "key 'dataset_info.fingerprint.rows' is str"),
])
def test_a_damaged_sampling_file_is_one_line_naming_file_and_key(tmp_path, monkeypatch, capsys, damage, key, message):
    run = saved_run(tmp_path)
    state = torch.load(run / "ema-00000004.pt", weights_only=True)
    damage(state)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=f"^{bad}: damaged checkpoint: {message}"):
        load_for_sampling(bad)
    monkeypatch.chdir(tmp_path)
    code, line = _one_line_error(capsys, "sample", "bad.pt", "--n", "1", "--steps", "2", "--out", "s.npz")
    assert code == 1 and line.startswith("cfgdiff: error: bad.pt: damaged checkpoint:") and key in line
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("key", ["rng", "optimizer", "model", "data_pos"])
def test_resume_from_a_checkpoint_missing_a_key_is_one_line(tmp_path, capsys, key):
    run = saved_run(tmp_path)
    path = run / "checkpoint-00000004.pt"
    state = torch.load(path, weights_only=True)
    del state[key]
    torch.save(state, path)
    code, line = _one_line_error(capsys, *_train_args(tmp_path), "--kimg", "0.016")
    assert code == 1 and line == f"cfgdiff: error: {path}: damaged checkpoint: key '{key}' is missing"


def _train_args(tmp_path: Path) -> list[str]:
    """The command line of `tiny_config(tmp_path)`, less --kimg."""
    return ["train", "--data", str(tmp_path / "toy.h5"), "--preset", "tiny", "--run-dir", str(tmp_path / "run"),
            "--batch", "4", "--tick", "0.004", "--snapshot", "0.008", "--preview-every", "1", "--set", "grid_images=2",
            "--set", "grid_steps=2"]


def test_the_fingerprint_is_counts_and_hashes_of_labels_and_strided_rows(tmp_path):
    data = write_dataset(tmp_path / "toy.h5", n=200)
    got = dataset_record(data, 16, 4, ["a", "b", "c", "d"])["fingerprint"]
    with h5py.File(data, "r") as f:
        images, labels = f["images"][:], f["labels"][:]
    # independently: the rows at round(i·199/63), i = 0..63, each hashed as its raw bytes
    rows = sorted({int(np.floor(i * 199 / 63 + 0.5)) for i in range(FINGERPRINT_ROWS)})
    assert rows[:3] == [0, 3, 6] and rows[-1] == 199 and len(rows) == 64
    assert got == {"count": 200, "size": 16, "num_classes": 4, "rows": 64,
                   "labels_sha256": hashlib.sha256(labels.astype("<i8").tobytes()).hexdigest(),
                   "rows_sha256": hashlib.sha256(b"".join(images[i].tobytes() for i in rows)).hexdigest()}


def _edit(data: Path, change) -> None:
    with h5py.File(data, "r+") as f:
        change(f)


@pytest.mark.parametrize("swap, why", [
    (lambda d: _edit(d, lambda f: f["labels"].__setitem__(0, (int(f["labels"][0]) + 1) % 4)), "other labels"),
    (lambda d: _edit(d, lambda f: f["images"].__setitem__(63, 255 - f["images"][63])), "other images"),  # last row
    (lambda d: write_dataset(d, n=64, seed=1), "other labels, other images"),  # another draw, same size
    (lambda d: write_dataset(d, n=60), "count 64 -> 60"),
])
def test_a_dataset_swapped_under_a_run_is_refused(tmp_path, swap, why):
    run = saved_run(tmp_path)
    swap(tmp_path / "toy.h5")
    cfg = tiny_config(tmp_path)
    pattern = f"toy.h5 is not the dataset this run was trained on \\({why}; recorded in {run}/checkpoint-00000004.pt\\)"
    with pytest.raises(DataError, match=pattern + "; to train on it, start a new run with another --run-dir"):
        train(cfg)


def test_the_same_dataset_resumes_and_a_finished_run_reports_strict_json(tmp_path, capsys):
    saved_run(tmp_path, step=4)  # kimg 0.016 at batch 4: 4 steps, so the run is finished
    args = [*_train_args(tmp_path), "--json"]
    assert main([*args, "--kimg", "0.016"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    summary = {**doc["results"], **doc["outputs"]}
    assert summary["resumed_from_step"] == summary["steps"] == 4 and summary["img_per_s"] is None
    assert summary["loss"] is None and summary["checkpoint"] == str(tmp_path / "run" / "checkpoint-00000004.pt")
    assert (tmp_path / "run" / "grid-00000004.png").exists()  # the final grid a kill could have cost
    # a shorter duration trains nothing and reports what the run holds, never a negative rate
    (tmp_path / "run" / "stats.jsonl").write_text(json.dumps({"step": 4, "loss": 0.25}) + "\n")
    assert main([*args, "--kimg", "0.008"]) == 0
    summary = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))["results"]
    assert (summary["steps"], summary["kimg"], summary["img_per_s"], summary["loss"]) == (4, 0.016, None, 0.25)


def test_newest_run_skips_folders_without_a_sampling_file(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(CheckpointError, match="no trained run under"):
        newest_run(runs)
    (runs / "failed").mkdir(parents=True)
    (runs / "failed" / "config.json").write_text("{}")  # what a start that died before its first step left
    with pytest.raises(CheckpointError, match=r"no trained run under .*runs/ \(failed: no checkpoint yet\)"):
        newest_run(runs)
    old = saved_run(tmp_path, run="runs/old")
    new = saved_run(tmp_path, run="runs/new")
    for f in old.glob("*.pt"):
        os.utime(f, (2e9, 2e9))  # old's files are the most recent, whatever the folders' own times
    os.utime(runs / "failed", (3e9, 3e9))
    assert newest_run(runs) == old
    (old / "ema-00000004.pt").unlink()  # a run with training checkpoints only still samples
    for f in new.glob("*.pt"):
        os.utime(f, (1e9, 1e9))
    assert newest_run(runs) == old


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_sampling_never_imports_train():
    files = sorted((REPO / "cfgdiff" / "sampling").glob("*.py")) + [REPO / "cfgdiff" / "runs.py"]
    assert len(files) > 5
    bad = {f.name: sorted(m for m in _imports(f) if m == "cfgdiff.train" or m.startswith("cfgdiff.train."))
           for f in files}
    assert not any(bad.values()), bad
    # and not through anything they import: a fresh interpreter that loads all of sampling/
    modules = ", ".join(f"cfgdiff.sampling.{f.stem}" for f in files if f.parent.name == "sampling")
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.startswith('cfgdiff.train')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr[-2000:]


def test_a_failed_start_leaves_no_folder_and_newest_run_skips_one_without_a_checkpoint(tmp_path, monkeypatch):
    import cfgdiff.train.loop as loop

    def out_of_memory(*args, **kwargs):  # the fault injected: the first step runs out of memory
        raise RuntimeError("CUDA out of memory. Tried to allocate 24.00 GiB")

    with monkeypatch.context() as m:
        m.setattr(loop, "accumulate_gradients", out_of_memory)
        with pytest.raises(RuntimeError, match="out of memory"):
            train(tiny_config(tmp_path, run="runs/oom"))
    assert not (tmp_path / "runs").exists()
    # a run whose first step succeeds gets its folder; lr 1e30 then overflows at step 2, before any checkpoint
    with pytest.raises(NumericalError, match="the last good checkpoint is none"):
        train(tiny_config(tmp_path, run="runs/diverged", kimg=0.008, snapshot_kimg=1.0, lr=1e30, lr_warmup_kimg=0.0,
                          grad_clip=0.0))
    assert sorted(p.name for p in (tmp_path / "runs" / "diverged").iterdir()) == [
        LEDGER, "config.json", "log.txt", "stats.jsonl"]  # the ledger claims the folder as a run's
    with pytest.raises(CheckpointError, match=r"\(diverged: no checkpoint yet\)"):
        newest_run(tmp_path / "runs")


def test_the_layout_names_what_train_writes_and_reads_it_back(tmp_path):
    from cfgdiff import layout
    from cfgdiff.train.start import run_writes

    for kind in layout.KINDS:
        for step in (0, 7, 12345678, 10**9):  # past 8 digits the name grows, and still parses
            name = layout.step_file(kind, step)
            assert layout.step_of(name) == (kind, step) and run_writes(name)
            (tmp_path / name).write_bytes(b"")
    assert layout.step_of("ema-12.pt.tmp") is None and layout.step_of("ema-x.pt") is None
    assert [p.name for p in layout.step_files(tmp_path, "ema")] == [
        "ema-00000000.pt", "ema-00000007.pt", "ema-12345678.pt", "ema-1000000000.pt"]
    assert run_writes(layout.grid_file(3)) and layout.has_checkpoints(tmp_path)
