"""Inputs bounded before use, proven by generation (docs/faults.md, "Inputs"):

- every numeric option of every command, found by walking the CLI itself, has both bounds
  (cfgdiff.limits), and one step past either bound is a usage error (exit 2, one line naming it);
- at the documented maxima, a `--dry-run` plan runs under a 4 GiB address-space limit;
- every reader meets every kind of file that is not a regular file (a FIFO, a link to a device, a
  link loop, a folder) and answers in one line within seconds, never hanging or reading without end;
- the launcher's environment variables are checked.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import typer

from cfgdiff import limits
from cfgdiff.cli.app import build_app, main
from faults_support import env_for, workspace

pytestmark = [pytest.mark.faults]
# options whose value passes a library rule instead of a numeric range, with what that rule bounds
RULED = {("sample", "--w"): ("-1", "inf"), ("prepare", "--size"): ("7", "513")}


def _base(annotation: typing.Any) -> typing.Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args and type(None) in typing.get_args(annotation) else annotation


def numeric_options() -> list[tuple[str, typing.Any]]:
    """(command, option) for every int or float option of every command, from the CLI itself."""
    app, _ = build_app()
    found = []
    for name, command in sorted(typer.main.get_command(app).commands.items()):
        for p in command.params:
            if p.param_type_name == "option" and _base(p.type_descriptor.annotation) in (int, float):
                found.append((name, p))
    return found


def _required_arguments(command: str) -> list[str]:
    app, _ = build_app()
    cmd = typer.main.get_command(app).commands[command]
    return ["x" for p in cmd.params if p.param_type_name == "argument" and p.required]


OPTIONS = numeric_options()


def test_the_cli_has_numeric_options_to_check():
    names = {(c, p.opts[0]) for c, p in OPTIONS}
    assert {("train", "--kimg"), ("sample", "--steps"), ("train", "--seed"), ("prepare", "--limit")} <= names
    assert len(OPTIONS) >= 35


@pytest.mark.parametrize("command,option", OPTIONS, ids=[f"{c} {p.opts[0]}" for c, p in OPTIONS])
def test_every_numeric_option_is_bounded_at_parse_time(command, option, capsys):
    flag = option.opts[0]
    if (command, flag) in RULED:
        outside = RULED[(command, flag)]
    else:
        assert option.min is not None and option.max is not None, f"{command} {flag} has no documented bounds"
        is_int = _base(option.type_descriptor.annotation) is int
        step = 1 if is_int else max(1.0, abs(option.max))
        outside = (str(option.min - (1 if is_int else max(1.0, abs(option.min)))), str(option.max + step))
    for value in outside:
        t0 = time.monotonic()
        code = main([command, *_required_arguments(command), flag, value])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, (value, err)
        assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err, err
        assert time.monotonic() - t0 < 10


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.mark.parametrize("args", [
    ["train", "--data", "{ws}/data/shapes16.h5", "--preset", "tiny", "--kimg", str(limits.KIMG[1]),
     "--batch", str(limits.BATCH[1]), "--batch-per-device", str(limits.BATCH_PER_DEVICE[1]),
     "--seed", str(limits.SEED[1]), "--keep", str(limits.KEEP[1]), "--hours", str(limits.HOURS[1]), "--dry-run"],
    ["sample", "{ws}/runs/tiny", "--n", "100000000", "--steps", str(limits.STEPS[1]),
     "--batch-per-device", str(limits.BATCH_PER_DEVICE[1]), "--shard-size", str(limits.SHARD[1]), "--dry-run"],
    ["sweep", "{ws}/runs/tiny", "--n", "100000000", "--steps", str(limits.STEPS[1]), "--ref", "{ws}/ref.npz",
     "--batch-per-device", str(limits.BATCH_PER_DEVICE[1]), "--dry-run"],
], ids=["train", "sample", "sweep"])
def test_a_dry_run_at_the_documented_maxima_fits_in_4_gib(args, tmp_path):
    ws = workspace()
    args = [a.replace("{ws}", str(ws)) for a in args]
    r = subprocess.run([sys.executable, "-m", "cfgdiff", *args], cwd=tmp_path, env=env_for(ws), capture_output=True,
                       text=True, timeout=300, preexec_fn=_limit_address_space)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr


# ---- readers against files that are not regular files --------------------------------------------------------
def _non_regular(d: Path, kind: str, name: str) -> Path:
    path = d / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "folder":
        path.mkdir()
    return path


# (reader, the name the bad file takes, the command line reading it; folders are inputs for some)
READERS = [
    ("prepare SOURCE", "src.tar", ["prepare", "src.tar", "--size", "8", "--out", "o.h5", "--workers", "1"]),
    ("prepare --class-map", "map.txt", ["prepare", "classes", "--class-map", "map.txt", "--size", "8",
                                        "--out", "o.h5", "--workers", "1"]),
    ("prepare: a file of a class folder", "classes/b/x.png",
     ["prepare", "classes", "--size", "8", "--out", "o.h5", "--workers", "1"]),
    ("score SAMPLES", "s.npz", ["score", "s.npz", "--ref", "{ws}/ref.npz"]),
    ("score --ref", "r.npz", ["score", "{ws}/ref.npz", "--ref", "r.npz"]),
    ("score: a file of a folder of images", "imgs/x.png", ["score", "imgs", "--ref", "{ws}/ref.npz"]),
    ("sample CHECKPOINT", "c.pt", ["sample", "c.pt", "--n", "2", "--steps", "2", "--out", "o.npz"]),
    ("train --data", "d.h5", ["train", "--data", "d.h5", "--preset", "tiny", "--kimg", "0.016", "--batch", "16"]),
    ("export RUN", "e.pt", ["export", "e.pt", "--out", "o.safetensors"]),
    ("sweep --ref", "r.npz", ["sweep", "{ws}/runs/tiny", "--w", "0", "--n", "2", "--steps", "2", "--ref", "r.npz",
                              "--out-dir", "sw"]),
]
KINDS = ["fifo", "device", "loop", "folder"]


def _classes(d: Path) -> None:
    import numpy as np
    from PIL import Image

    for cls in ("a", "b"):
        (d / "classes" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i + 20, np.uint8)).save(d / "classes" / cls / f"{i}.png")


class _Hung(Exception):
    pass


def _hung(signum, frame):
    raise _Hung


@pytest.mark.parametrize("reader,name,args", READERS, ids=[r[0] for r in READERS])
@pytest.mark.parametrize("kind", KINDS)
def test_every_reader_answers_a_non_regular_file_in_one_line_within_seconds(reader, name, args, kind, tmp_path,
                                                                            monkeypatch, capsys):
    ws = workspace()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(ws / "cache"))
    _classes(tmp_path)
    if "/" in name and kind == "folder":
        pytest.skip("a folder inside a folder input is a subfolder, read as one")
    if kind == "folder" and name in ("src.tar",):
        pytest.skip("a folder is a valid prepare source")
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    if name.startswith("imgs/"):
        for i in range(2):
            shutil.copy(tmp_path / "classes" / "a" / f"{i}.png", tmp_path / "imgs" / f"ok{i}.png")
    _non_regular(tmp_path, kind, name)
    args = [a.replace("{ws}", str(ws)) for a in args]
    old = signal.signal(signal.SIGALRM, _hung)  # a hang fails here, in seconds, with this case's name
    signal.alarm(20)
    try:
        code = main(args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    if "/" in name and code == 0:  # a member of a folder input: left out (prepare lists it), the rest used
        assert name.startswith("imgs/") or "skipped 1" in err, err
    else:
        assert code != 0 and len(errors) == 1, err


@pytest.mark.parametrize("env,expect", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({"RANK": "1"}, "RANK=1 is outside"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 is outside"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "without MASTER_ADDR"),
    ({"LOCAL_RANK": "-1"}, "LOCAL_RANK=-1 is negative"),
])
def test_launcher_variables_are_checked(env, expect, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["plugins"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0]
