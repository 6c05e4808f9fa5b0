"""Options are checked while the command line is parsed: before a checkpoint or dataset is read, and
(for --help, --version, plugins and usage errors) without importing torch. `--set` and flags merge
in one place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cfgdiff.cli.app import build_app, main
from support import write_dataset

SCRIPT = Path(sys.executable).parent / "cfgdiff"  # the installed console script


@pytest.fixture
def no_loading(monkeypatch):
    """Every way a command reads a model or a dataset fails the test if it is reached."""
    import cfgdiff.data.dataset
    import cfgdiff.sampling.model
    import cfgdiff.runs

    def reached(*args, **kwargs):
        raise AssertionError("a checkpoint or dataset was read before the options were checked")

    for module, name in [(cfgdiff.sampling.model, "load_model"), (cfgdiff.runs, "read_checkpoint"),
                         (cfgdiff.data.dataset, "dataset_info")]:
        monkeypatch.setattr(module, name, reached)


@pytest.mark.parametrize("args, message", [
    (["sample", "runs/none", "--seeds", "5-1"],
     "Invalid value for '--seeds': seeds '5-1': '5-1' is a decreasing range"),
    (["sample", "runs/none", "--seeds", "0-99999999999"], "more than 100,000,000 seeds"),
    (["sample", "runs/none", "--seeds", "0-99999999999999999999"], "int64"),
    (["sample", "runs/none", "--seeds", "0-2", "--n", "5"], "--seeds gives 3 seeds, fewer than --n 5"),
    (["sample", "runs/none", "--w", "nan"], "w must be finite"),
    (["sample", "runs/none", "--classes", "1,x"], "--classes '1,x'"),
    (["sample", "runs/none", "--classes", "1", "--balanced"], "--balanced and --classes exclude each other"),
    (["sweep", "runs/none", "--w", "5:0:0.1"], "Invalid value for '--w': guidance grid '5:0:0.1': stop is below start"),
    (["sweep", "runs/none", "--w", "0,1e400"], "'1e400' is not finite"),
    (["sweep", "runs/none", "--w", "0:1000000:0.000001"], "more than 10,000"),
    (["demo", "--w", "-1,2"], "w must be >= 0"),
    (["train", "--set", "lr=fast"], "--set lr=\"fast\": expected a number"),
    (["train", "--set", "model.width=3"], "--set model.width: no such config field"),
    (["train", "--set", "lr=0.5", "--lr", "0.1"], "--set lr=... and the flag for lr both set it"),
    (["prepare", "builtin:shapes", "--size", "4"], "size must be an integer in [8, 512]"),
    (["prepare", "builtin:shapes", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "--preset", "huge"], "unknown preset 'huge'"),
])
def test_bad_options_fail_in_one_line_before_anything_loads(no_loading, capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not any(tmp_path.iterdir())  # nothing written


def test_usage_errors_through_typers_runner_exit_2():
    app, _ = build_app()
    runner = CliRunner()
    for args in (["sample", "--seeds", "5-1"], ["sweep", "--w", "5:0:0.1"], ["train", "--set", "lr"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "Invalid value" in r.output, r.output


SET_AND_FLAG = [("lr", 0.5, "--lr"), ("seed", 7, "--seed"), ("keep", 2, "--keep"), ("grad_clip", 0.25, "--grad-clip"),
                ("model.dropout", 0.2, "--dropout"), ("ema_decay", 0.99, "--ema")]


def test_set_reaches_the_config_for_fields_that_also_have_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_dataset(tmp_path / "data" / "a.h5", n=4, size=32)

    def resolved(*args: str) -> list:
        assert main(["train", "--preset", "tiny", "--dry-run", "--json", *args]) == 0
        cfg = json.loads(capsys.readouterr().out)["settings"]
        return [cfg[k.partition(".")[0]][k.partition(".")[2]] if "." in k else cfg[k] for k, _, _ in SET_AND_FLAG]

    wanted = [v for _, v, _ in SET_AND_FLAG]
    assert all(a != b for a, b in zip(resolved(), wanted))  # the defaults differ, so the test can fail
    assert resolved(*[a for k, v, _ in SET_AND_FLAG for a in ("--set", f"{k}={json.dumps(v)}")]) == wanted
    assert resolved(*[a for _, v, f in SET_AND_FLAG for a in (f, str(v))]) == wanted


# ---- start-up: the installed console script, timed imports ---------------------------------------------------------
def imported_modules(*args: str) -> tuple[int, set[str]]:
    r = subprocess.run([sys.executable, "-X", "importtime", str(SCRIPT), *args], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "COLUMNS": "100"})
    names = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    return r.returncode, names


@pytest.mark.skipif(not SCRIPT.exists(), reason="cfgdiff is not installed beside this Python")
@pytest.mark.parametrize("args, code", [
    (["--help"], 0), (["--version"], 0), (["plugins"], 0), (["sample", "--help"], 0),
    (["sample", "--seeds", "5-1"], 2), (["train", "--set", "lr=0.5", "--lr", "0.1"], 2),
    (["train", "--preset", "x"], 2),
    (["sweep", "--w", "0,1e400"], 2), (["prepare", "builtin:shapes", "--size", "4"], 2),
])
def test_help_version_plugins_and_usage_errors_never_import_torch(args, code):
    got, names = imported_modules(*args)
    assert got == code
    assert "typer" in names  # the trace is real: the CLI's own imports are in it
    assert not {n for n in names if n == "torch" or n.startswith("torch.")}
