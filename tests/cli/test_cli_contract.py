"""The machine-readable contract of issue 16: one strict `--json` envelope per command (docs/json.md),
plans on stdout, one exit code for a refused output, and help that reads at 80 columns."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cfgdiff import __version__
from cfgdiff.cli.app import build_app, main
from cfgdiff.errors import OutputError
from cfgdiff.files import Owner, check_outputs
from cfgdiff.metrics import sources
from support import tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures("isolated_caches")  # no shared cache (conftest.py)

# The envelope's keys, restated here (not imported from cli/envelope.py), as docs/json.md lists them.
KEYS = ["command", "cfgdiff_version", "ok", "inputs", "outputs", "settings", "results", "provenance"]


def _refuse(token: str):
    raise AssertionError(f"{token} is not JSON")


def envelope(stdout: str, command: str) -> dict:
    """stdout as exactly one strict JSON document with every key of the envelope."""
    doc = json.loads(stdout, parse_constant=_refuse)
    assert list(doc) == KEYS, list(doc)
    assert doc["command"] == command and doc["cfgdiff_version"] == __version__ and doc["ok"] is True
    for part in ("inputs", "outputs", "settings", "provenance"):
        assert isinstance(doc[part], dict), part
    return doc


def test_prepare_json_plan_and_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["prepare", "builtin:shapes", "--size", "8", "--limit", "20", "--workers", "1", "--out", "d.h5"]
    assert main([*args, "--dry-run", "--json"]) == 0
    plan = envelope(capsys.readouterr().out, "prepare")
    assert plan["results"]["dry_run"] is True and plan["results"]["count"] == 20 and not (tmp_path / "d.h5").exists()
    assert plan["inputs"]["source"] == "builtin:shapes" and plan["outputs"]["dataset"] == "d.h5"
    assert main([*args, "--json"]) == 0
    done = envelope(capsys.readouterr().out, "prepare")
    assert done["results"]["dry_run"] is False and done["results"]["count"] == 20 and done["settings"]["size"] == 8
    assert (tmp_path / "d.h5").is_file() and done["outputs"]["skipped_list"] is None  # nothing skipped: null


def test_plans_go_to_stdout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "builtin:shapes", "--size", "8", "--limit", "20", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert '"size": 8' in out and "would write data/shapes8.h5: 20 images of 8x8 px, 10 classes" in out
    assert '"size"' not in err and not (tmp_path / "data" / "shapes8.h5").exists()
    write_dataset(tmp_path / "d.h5", n=4, size=32)
    assert main(["train", "--data", "d.h5", "--preset", "tiny", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert '"preset": "tiny"' in out and "img/s" in out and '"preset"' not in err


def test_train_json_envelope_and_its_sampler_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "d.h5", n=4, size=32)
    args = ["train", "--data", "d.h5", "--preset", "tiny", "--dry-run", "--json"]
    assert main([*args, "--sampler", "heun", "--grid", "edm", "--preview-every", "7"]) == 0
    doc = envelope(capsys.readouterr().out, "train")
    assert doc["results"]["dry_run"] is True and doc["inputs"]["data"] == "d.h5"
    assert doc["outputs"] == {"run_dir": "runs/d-tiny", "checkpoint": None}
    s = doc["settings"]
    assert (s["grid_sampler"], s["grid_schedule"], s["grid_kimg"], s["preset"]) == ("heun", "edm", 7.0, "tiny")
    assert main([*args, "--sampler", "euler"]) == 2  # checked against the registry's names, before any work
    assert "unknown sampler 'euler'" in capsys.readouterr().err
    assert main([*args, "--grid", "cosine"]) == 2
    assert "unknown grid 'cosine'" in capsys.readouterr().err


def test_train_and_export_json_after_a_run(tmp_path, capsys):
    from cfgdiff.train.loop import train

    train(tiny_config(tmp_path, kimg=0.008, snapshot_kimg=0.008))
    run = tmp_path / "run"
    assert main(["export", str(run), "--out", str(tmp_path / "w.safetensors"), "--json"]) == 0
    doc = envelope(capsys.readouterr().out, "export")
    assert doc["outputs"]["safetensors"] == str(tmp_path / "w.safetensors") and doc["results"]["step"] == 2
    assert doc["inputs"]["run"].endswith("ema-00000002.pt") and doc["provenance"]["torch"]
    assert doc["provenance"]["checkpoint_sha256"] == hashlib.sha256((run / "ema-00000002.pt").read_bytes()).hexdigest()


def test_plugins_json(capsys):
    assert main(["plugins", "--json"]) == 0
    doc = envelope(capsys.readouterr().out, "plugins")
    names = {r["name"] for r in doc["results"]}
    assert {"prepare", "train", "sample", "sweep", "score", "plugins", "export"} <= names


def test_score_json_is_strict_with_nulls(tmp_path, monkeypatch, capsys, random_weights):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    sigma = np.eye(4)
    monkeypatch.setattr(sources, "STATS_DIMS", {"mu": 4, "mu_s": 4})  # small statistics for the plumbing
    np.savez("gen.npz", mu=np.zeros(4), sigma=sigma)
    np.savez("ref.npz", mu=np.full(4, 2.0), sigma=sigma)
    assert main(["score", "gen.npz", "--ref", "ref.npz", "--inception", str(random_weights[0]), "--json"]) == 0
    doc = envelope(capsys.readouterr().out, "score")
    m = doc["results"]["metrics"]
    assert m["fid"] == pytest.approx(16.0)  # ‖0 − 2·1‖² over 4 dimensions, equal covariances
    assert m["is_mean"] is None and "is" in m["unavailable"]  # statistics only: no IS, null (never NaN)
    assert doc["outputs"] == {"results": "gen.score.json", "save_stats": None}
    assert doc["inputs"]["samples"] == "gen.npz" and doc["settings"]["batch"] == 64
    assert (tmp_path / "gen.score.json").is_file()  # the default results file: stem + .score.json


# ---- "output exists": exit 1 everywhere ------------------------------------------------------------------------
def test_every_output_refusal_is_one_class_with_exit_1(tmp_path):
    user = tmp_path / "user.json"
    user.write_text("mine")
    for outputs, inputs in [({"--out": user}, []), ({"--out": user}, [user]),
                            ({"--a": tmp_path / "x", "--b": tmp_path / "x"}, []), ({"--out": tmp_path}, [])]:
        with pytest.raises(OutputError) as info:
            check_outputs(outputs, inputs, owners=Owner("score-results", "score"))
        assert info.value.exit_code == 1


@pytest.mark.parametrize("command", [
    ["prepare", "builtin:shapes", "--size", "8", "--limit", "20", "--out", "taken.h5"],
    ["score", "s.npz", "--results", "taken.json"],
])
def test_an_existing_output_exits_1(command, tmp_path, monkeypatch, capsys):
    """sample's case (`--out x.npz` holding other bytes) is in tests/faults/test_faults_outputs.py."""
    monkeypatch.chdir(tmp_path)
    np.savez("s.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / command[-1]).write_text("a user's file")
    assert main(command) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[0] and "--force" in err[0]
    assert (tmp_path / command[-1]).read_text() == "a user's file"


# ---- help -----------------------------------------------------------------------------------------------------------
OWN = ["prepare", "train", "score", "plugins", "export"]


def _commands():
    app, _ = build_app()
    return app, typer.main.get_command(app).commands


def _help(app, name: str) -> str:
    r = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0, r.output
    return r.output


def test_help_reads_at_80_columns():
    app, commands = _commands()
    for name, cmd in commands.items():
        text = _help(app, name)
        assert "…" not in text, name
        for p in cmd.params:
            for flag in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]:
                if flag.startswith("--"):
                    assert re.search(re.escape(flag) + r"(?![\w-])", text), f"{name}: {flag} is not shown whole"
        if name in OWN:
            long = [ln for ln in text.splitlines() if len(ln) > 80]
            assert not long, f"{name}: lines over 80 columns: {long}"


def test_help_explains_the_conventions_and_the_defaults():
    app, commands = _commands()
    assert "\n  Example:  cfgdiff train --dry-run\n" in _help(app, "train")  # examples keep their lines
    train = " ".join(_help(app, "train").split())
    assert train.count("(default: the preset's") >= 8 and "--preview-every KIMG" in train
    assert "--sampler NAME" in train and "--grid NAME" in train and "--batch-per-device IMAGES" in train
    sample = " ".join(_help(app, "sample").split())
    assert "2T when guided" in sample and "s = 1 + w" in sample
    assert "--first-classes K" in _help(app, "prepare")
    assert "--batch-per-device IMAGES" in _help(app, "score")
    for name in OWN:  # uniform metavars: upper-case units and kinds
        for p in commands[name].params:
            if getattr(p, "param_type_name", "") == "option" and not p.is_flag and p.metavar is not None:
                assert re.fullmatch(r"[A-Z][A-Z0-9_=]*", p.metavar), (name, p.opts, p.metavar)


def test_old_flag_spellings_are_gone(capsys):
    for args in (["train", "--grid-every", "10"], ["prepare", "builtin:shapes", "--classes", "3"],
                 ["score", "s.npz", "--batch", "8"]):
        code = main(args)
        assert code == 2, args
    err = capsys.readouterr().err
    assert "No such option: --classes" in err and "No such option: --batch" in err  # train's --grid: the λ grid
