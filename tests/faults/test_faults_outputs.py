"""Fault injection, issue 15 class 1: outputs that would overwrite inputs, each other, or files
cfgdiff did not write. Every case is refused before any work, with one line and a non-zero exit,
and leaves every file in its folder byte-for-byte as it was (SHA-256 before and after)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfgdiff.cli.app import main
from faults_support import error_lines, workspace

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]


def _inputs(d: Path, ws: Path) -> None:
    shutil.copy(ws / "ref.npz", d / "S.npz")
    shutil.copy(ws / "ref.npz", d / "REF.npz")
    shutil.copytree(ws / "runs" / "tiny", d / "run")
    (d / "user.json").write_text('{"my": "notes"}\n')
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "user.png")
    (d / "g").mkdir()
    (d / "link.json").symlink_to(d / "S.npz")
    os.link(d / "REF.npz", d / "hard.npz")
    os.link(next((d / "run").glob("ema-*.pt")), d / "hard.png")


def _source_tar(d: Path, ws: Path) -> None:
    _inputs(d, ws)
    with tarfile.open(d / "src.tar", "w") as tar:
        for cls in ("a", "b"):
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 60 * i + 30, np.uint8)).save(d / f"{cls}{i}.png")
                tar.add(d / f"{cls}{i}.png", f"{cls}/{i}.png")
                (d / f"{cls}{i}.png").unlink()


def _user_files(*names: str) -> Callable[[Path, Path], None]:
    def setup(d: Path, ws: Path) -> None:
        _inputs(d, ws)
        for name in names:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(f"{name}: a user's own file\n")

    return setup


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path, Path], None]
    args: tuple[str, ...]
    expect: str


SAMPLE = ("sample", "run", "--n", "2", "--steps", "2")
SWEEP = ("sweep", "run", "--w", "0,1", "--n", "2", "--steps", "2", "--ref", "REF.npz", "--out-dir", "sw")
CASES = [
    # score
    Case("--results is the samples", _inputs, ("score", "S.npz", "--results", "S.npz"), "is an input"),
    Case("--results is a symlink to the samples", _inputs, ("score", "S.npz", "--results", "link.json", "--force"),
         "is an input"),
    Case("--save-stats is the reference", _inputs, ("score", "S.npz", "--ref", "REF.npz", "--save-stats", "REF.npz",
                                                    "--force"), "is an input"),
    Case("--save-stats is a hard link to the reference", _inputs,
         ("score", "S.npz", "--ref", "REF.npz", "--save-stats", "hard.npz"), "is an input"),
    Case("--results and --save-stats are one file", _inputs,
         ("score", "S.npz", "--results", "g/o.npz", "--save-stats", "g/../g/o.npz"), "is also --results"),
    Case("--results is a user's file", _inputs, ("score", "S.npz", "--results", "user.json"),
         "not written by cfgdiff"),
    Case("--results in a missing folder", _inputs, ("score", "S.npz", "--results", "no/r.json"), "does not exist"),
    # sample
    Case("--preview is --out", _inputs, (*SAMPLE, "--out", "g/x.npz", "--preview", "g/x.npz"), "is also --out"),
    Case("--preview in a missing folder", _inputs, (*SAMPLE, "--out", "x.npz", "--preview", "no/g.png"),
         "does not exist"),
    Case("--preview is a user's file", _inputs, (*SAMPLE, "--out", "x.npz", "--preview", "user.png"),
         "not written by cfgdiff"),
    Case("--preview is a hard link to the checkpoint", _inputs, (*SAMPLE, "--out", "x.npz", "--preview", "hard.png",
                                                              "--force"), "is an input"),
    Case("--out's provenance is a user's file", _user_files("x.npz.json"), (*SAMPLE, "--out", "x.npz"),
         "not written by cfgdiff"),
    # prepare
    Case("--out is the source", _source_tar, ("prepare", "src.tar", "--size", "8", "--out", "src.tar", "--force"),
         "is an input"),
    Case("--out's summary is a user's file", _user_files("results.json"),
         ("prepare", "builtin:shapes", "--size", "8", "--limit", "20", "--out", "results.h5"), "not written by cfgdiff"),
    Case("--out's skipped list is a user's file", _user_files("results.skipped.tsv"),
         ("prepare", "builtin:shapes", "--size", "8", "--limit", "20", "--out", "results.h5"), "not written by cfgdiff"),
    # sweep
    *[Case(f"--out-dir holds a user's {name}", _user_files(f"sw/{name}"), SWEEP, "not written by cfgdiff")
      for name in ("table.md", "grid.png", "sweep.csv")],
]


def _state(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[f"{c.args[0]}: {c.name}" for c in CASES])
def test_an_output_on_an_input_another_output_or_a_users_file_is_refused(case, tmp_path, monkeypatch, capsys):
    ws = workspace()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(ws / "cache"))
    case.setup(tmp_path, ws)
    before = _state(tmp_path)
    code = main(list(case.args))
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 1 and len(lines) == 1 and case.expect in lines[0] and "Traceback" not in err, err
    assert _state(tmp_path) == before  # no input, no user file touched; nothing new written


def test_a_replaced_sample_file_is_not_complete_already(tmp_path, monkeypatch, capsys):
    """`sample --out x.npz`, then x.npz replaced by other bytes: its provenance file alone must not
    make the rerun report "complete already"."""
    ws = workspace()
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ws / "runs" / "tiny", tmp_path / "run")
    assert main([*SAMPLE, "--out", "x.npz", "--preview", "x.png"]) == 0
    assert main([*SAMPLE, "--out", "x.npz", "--preview", "x.png"]) == 0  # the same command: nothing to do
    assert "complete already" in capsys.readouterr().err
    shutil.copy(tmp_path / "x.png", tmp_path / "x.npz")  # e.g. what `--preview x.npz` once did
    png = hashlib.sha256((tmp_path / "x.npz").read_bytes()).hexdigest()
    for force in ([], ["--force"]):  # a file cfgdiff did not write as it is: never replaced, --force or not
        assert main([*SAMPLE, "--out", "x.npz", *force]) == 1
        err = capsys.readouterr().err
        assert "complete already" not in err and "x.npz exists and was not written by cfgdiff" in error_lines(err)[0]
        assert hashlib.sha256((tmp_path / "x.npz").read_bytes()).hexdigest() == png
    (tmp_path / "x.npz").unlink()  # the user moves it away: the same job is done again
    assert main([*SAMPLE, "--out", "x.npz"]) == 0
    with np.load(tmp_path / "x.npz") as f:
        assert f["arr_0"].shape == (2, 16, 16, 3)


HOLDER = """
import sys, time
from pathlib import Path
from cfgdiff.files import output_lock
with output_lock(Path(sys.argv[1]), "the first run"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("command", ["sample", "prepare"])
def test_a_second_run_on_a_busy_output_is_one_line_naming_the_first(command, tmp_path, monkeypatch, capsys):
    """Issue 15 class 7: not a FileNotFoundError on the other run's temporary file."""
    ws = workspace()
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ws / "runs" / "tiny", tmp_path / "run")
    out = tmp_path / ("x.npz" if command == "sample" else "d.h5")
    args = ([*SAMPLE, "--out", "x.npz"] if command == "sample"
            else ["prepare", "builtin:shapes", "--size", "8", "--limit", "20", "--out", "d.h5", "--workers", "1"])
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert first.stdout.readline().strip() == "held"
        assert main(args) == 1
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and f"is being written by another cfgdiff run: pid {first.pid}" in lines[0], lines
        assert "(the first run)" in lines[0] and not out.exists()
    finally:
        first.kill()
        first.wait()
    assert main(args) == 0 and out.exists()  # the killed holder's lock is taken over
    assert not (tmp_path / f".{out.name}.lock").exists()
