"""The ownership rule (cfgdiff.files.refusal), proven by generation rather than by listing cases.

Every writer (each command × each output option) is pointed at every kind of file cfgdiff writes
(`files.KINDS`), a user's file and the ledger itself, through every path relation (the same path, a
symbolic link, a hard link), and with and without --force. The expected verdict is derived here
from the rule as written in docs/faults.md, independently of the code:

    replaced  only when the target is the writer's own kind and --force is given
              (a file of its own kind from another job);
    refused   in every other case, with exit != 0 and every file's SHA-256 unchanged.

Folder writers (train --run-dir, sweep --out-dir, demo --out-dir) are pointed at folders holding a
user's file under each name they write, at folders another kind of job owns, and at a link or a
file where the folder should be. The ledger's lock is proven with 8 processes writing at once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cfgdiff import files
from cfgdiff.cli.app import main
from faults_support import workspace

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]


@dataclass(frozen=True)
class Writer:
    name: str  # command and output option
    kind: str  # the kind of file it writes there (files.KINDS)
    target: str  # the file name it writes (the victim is put there)
    args: tuple[str, ...]  # the command line, writing `target` in the current folder


SAMPLE = ("sample", "run", "--n", "2", "--steps", "2")
PREPARE = ("prepare", "builtin:shapes", "--size", "8", "--limit", "20", "--workers", "1")
WRITERS = [
    Writer("prepare --out", "dataset", "d.h5", (*PREPARE, "--out", "d.h5")),
    Writer("prepare --out's summary", "dataset-summary", "d.json", (*PREPARE, "--out", "d.h5")),
    Writer("prepare --out's skipped list", "skipped-list", "d.skipped.tsv", (*PREPARE, "--out", "d.h5")),
    Writer("sample --out", "samples", "t.npz", (*SAMPLE, "--out", "t.npz")),
    Writer("sample --out's provenance", "provenance", "t.npz.json", (*SAMPLE, "--out", "t.npz")),
    Writer("sample --preview", "preview", "p.png", (*SAMPLE, "--out", "t.npz", "--preview", "p.png")),
    Writer("score --results", "score-results", "r.json", ("score", "S.npz", "--ref", "REF.npz", "--results", "r.json")),
    Writer("score --save-stats", "reference-stats", "st.npz",
           ("score", "S.npz", "--ref", "REF.npz", "--results", "r.json", "--save-stats", "st.npz")),
    Writer("export --out", "export", "e.safetensors", ("export", "run", "--out", "e.safetensors")),
]
VICTIMS = [*files.KINDS, "user", "ledger"]
RELATIONS = ["same", "symlink", "hardlink"]


def _state(d: Path) -> dict[str, str]:
    """Every file below `d` (links not followed) by its SHA-256."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(d))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _inputs(d: Path, ws: Path) -> None:
    (d / "run").symlink_to(ws / "runs" / "tiny")
    for name in ("S.npz", "REF.npz"):
        (d / name).write_bytes((ws / "ref.npz").read_bytes())


def _victim(d: Path, name: str, victim: str) -> Path:
    """A file at d/name: of kind `victim` (recorded by another job of that kind), a user's, or the ledger."""
    path = d / name
    if victim == "user":
        path.write_bytes(b"a user's own file\n")
    elif victim == "ledger":
        files.write_bytes(d / "other.txt", b"x\n", owner=files.Owner("export", "export", "j0"))
        path = d / files.LEDGER
    else:
        files.write_bytes(path, f"{victim} of another job\n".encode(), owner=files.Owner(victim, "cmd", "another-job"))
    return path


def _cases() -> list[tuple[Writer, str, str, bool]]:
    cases = [(w, v, "same", force) for w in WRITERS for v in VICTIMS for force in (False, True)
             if v != "ledger" or w.target in w.args]  # the ledger as the output the option names
    cases += [(w, v, rel, True) for w in WRITERS for v in ("user", w.kind) for rel in RELATIONS[1:]]
    cases += [(w, "user", "inside a run's folder", True) for w in WRITERS if w.target in w.args]
    return cases


def _expected_replaced(writer: Writer, victim: str, relation: str, force: bool) -> bool:
    return relation == "same" and victim == writer.kind and force


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{w.name} x {v} ({rel}{', --force' if f else ''})"
                                             for w, v, rel, f in CASES])
def test_every_writer_on_every_kind_of_file(case, tmp_path, monkeypatch, capsys):
    writer, victim, relation, force = case
    ws = workspace()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(ws / "cache"))
    _inputs(tmp_path, ws)
    target = tmp_path / writer.target
    if relation == "same":
        args = list(writer.args)
        if victim == "ledger":  # the writer is pointed at the ledger itself
            _victim(tmp_path, writer.target, "ledger")
            args = [files.LEDGER if a == writer.target else a for a in args]
            target = tmp_path / files.LEDGER
        else:
            _victim(tmp_path, writer.target, victim)
    elif relation == "inside a run's folder":  # a file in a folder another kind of job owns
        (tmp_path / "claimed").mkdir()
        files.claim_folder(tmp_path / "claimed", files.Owner("run", "train"), writes=lambda n: False, flag="test")
        (tmp_path / "claimed" / writer.target).write_bytes(b"the run's own file\n")
        args = [f"claimed/{a}" if a == writer.target else a for a in writer.args]
    else:
        (tmp_path / "elsewhere").mkdir()
        linked = _victim(tmp_path / "elsewhere", writer.target, victim)
        (target.symlink_to if relation == "symlink" else lambda p: os.link(p, target))(linked)
        args = list(writer.args)
    before = _state(tmp_path)
    code = main([*args, *(["--force"] if force else [])])
    err = capsys.readouterr().err
    after = _state(tmp_path)
    if _expected_replaced(writer, victim, relation, force):
        assert code == 0, err
        assert after.get(writer.target) != before[writer.target]  # replaced (or, a stale list, removed)
        untouched = {k: v for k, v in before.items() if k != writer.target and k != files.LEDGER}
        assert {k: after[k] for k in untouched} == untouched
    else:
        assert code != 0, err
        assert "Traceback" not in err and len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err
        assert after == before  # nothing changed, the victim included, and nothing new


# ---- folders ------------------------------------------------------------------------------------------------------
FOLDER_WRITERS = {
    "train --run-dir": (("train", "--data", "{ws}/data/shapes16.h5", "--preset", "tiny", "--kimg", "0.032",
                         "--batch", "16", "--workers", "0", "--run-dir", "D"),
                        ("config.json", "log.txt", "stats.jsonl", "grid-00000002.png")),
    "sweep --out-dir": (("sweep", "run", "--w", "0", "--n", "2", "--steps", "2", "--ref", "REF.npz", "--out-dir", "D"),
                        ("table.md", "sweep.jsonl", "sweep.csv", "grid.png", "settings.json", "sweep.json",
                         "samples_ancestral_T2_w0.npz")),
    "demo --out-dir": (("demo", "--out-dir", "D"), ("report.md",)),
}
FOLDER_KINDS = {"train --run-dir": "run", "sweep --out-dir": "sweep", "demo --out-dir": "demo"}


def _folder_cases() -> list[tuple[str, str, str]]:
    cases = [(w, "user's " + name, name) for w, (_, names) in FOLDER_WRITERS.items() for name in names]
    cases += [(w, f"owned by {other}", other) for w in FOLDER_WRITERS for other in sorted(set(FOLDER_KINDS.values()))
              if other != FOLDER_KINDS[w]]
    cases += [(w, state, state) for w in FOLDER_WRITERS for state in ("a link to a folder", "a file")]
    return cases


@pytest.mark.parametrize("case", _folder_cases(), ids=lambda c: f"{c[0]}: {c[1]}")
def test_every_folder_writer_refuses_folders_it_does_not_own(case, tmp_path, monkeypatch, capsys):
    writer, _, what = case
    ws = workspace()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(ws / "cache"))
    _inputs(tmp_path, ws)
    folder = tmp_path / "D"
    if what == "a link to a folder":
        (tmp_path / "real").mkdir()
        (tmp_path / "real" / "notes.txt").write_text("mine\n")
        folder.symlink_to(tmp_path / "real")
    elif what == "a file":
        folder.write_text("not a folder\n")
    elif what in FOLDER_KINDS.values():
        folder.mkdir()
        files.claim_folder(folder, files.Owner(what, "cmd"), writes=lambda n: True, flag="test")
        (folder / "kept.txt").write_text("another job's file\n")
    else:
        folder.mkdir()
        (folder / what).write_bytes(b"a user's own file\n")
    before = _state(tmp_path)
    args = [a.replace("{ws}", str(ws)) for a in FOLDER_WRITERS[writer][0]]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err
    assert _state(tmp_path) == before


# ---- the ledger under concurrency and long names ------------------------------------------------------------------
WRITER_PROCESS = """
import sys
from pathlib import Path
from cfgdiff import files
d, k = Path(sys.argv[1]), int(sys.argv[2])
for i in range(20):
    files.write_bytes(d / f"f{k}-{i}.bin", f"{k} {i}".encode(), owner=files.Owner("samples", "sample", f"job{k}"))
"""


def test_eight_processes_writing_through_the_ledger_lose_no_entry(tmp_path):
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER_PROCESS, str(tmp_path), str(k)], env=env)
             for k in range(8)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    for k in range(8):
        for i in range(20):
            path = tmp_path / f"f{k}-{i}.bin"
            assert files.is_ours(path, files.Owner("samples", "sample", f"job{k}")), path.name


@pytest.mark.parametrize("length", [200, 240, 250, 255])
def test_private_names_fit_name_max_for_every_legal_output_name(tmp_path, length):
    name = "s" * (length - 4) + ".npz"
    out = tmp_path / name
    for private in (files.temp_path(out), files.lock_path(out), files.hidden_name(out, ".partial")):
        assert len(private.name.encode()) <= files.NAME_MAX and files.is_private(private.name)
    files.write_npz(out, owner=files.Owner("samples", "sample", "j"), arr_0=np.zeros(2))
    with files.output_lock(out, "sample"):
        pass
    store = files.PartStore(out, {"plan": 1})
    store.open()
    store.write(0, {"a": np.ones(1)})
    assert store.read(0)["a"].tolist() == [1.0] and files.is_ours(out)
    assert {p.name for p in tmp_path.iterdir()} == {name, files.LEDGER, store.dir.name}


def test_a_second_train_on_a_run_folder_in_use_is_one_line(tmp_path):
    """Two `train` runs on one folder both exited 0, with duplicate stats rows: the folder is locked."""
    from faults_support import env_for

    ws = workspace()
    args = [sys.executable, "-m", "cfgdiff", "train", "--data", str(ws / "data" / "shapes16.h5"), "--preset", "tiny",
            "--run-dir", "run", "--kimg", "100", "--batch", "64", "--batch-per-device", "8", "--workers", "0",
            "--preview-every", "100"]
    first = subprocess.Popen(args, cwd=tmp_path, env=env_for(ws), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "config.json").exists():  # the first has made and locked its folder
            assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        second = subprocess.run(args, cwd=tmp_path, env=env_for(ws), capture_output=True, text=True, timeout=120)
        lines = [ln for ln in second.stderr.splitlines() if "error:" in ln]
        assert second.returncode == 1 and len(lines) == 1, second.stderr
        assert f"is being written by another cfgdiff run: pid {first.pid}" in lines[0] and "(train)" in lines[0]
    finally:
        first.kill()
        first.wait()
