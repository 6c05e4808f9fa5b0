"""`cfgdiff train` end to end: defaults, --dry-run, bad input, SIGINT, and 2-process DDP (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cfgdiff.cli.app import main
from cfgdiff.nn import build_unet, count_params
from cfgdiff.runs import read_checkpoint
from cfgdiff.train.loop import train
from cfgdiff.train.setup import resolve_config
from support import write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["train", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_no_arguments_finds_the_dataset_and_picks_the_preset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_dataset(tmp_path / "data" / "cifar.h5", n=8, size=32)
    code, out, _ = run(capsys, "--dry-run", "--json", "--hours", "10")
    assert code == 0
    doc = json.loads(out)
    plan = {**doc["results"], "config": doc["settings"]}
    cfg = resolve_config(None, None, None, {})
    assert plan["config"]["preset"] == "cifar32" and plan["config"]["run_dir"] == "runs/cifar-cifar32"
    assert plan["config"]["model"]["num_classes"] == 4 and plan["config"]["model"]["resolution"] == 32
    assert plan["params"] == count_params(build_unet(cfg.model, "meta"))
    assert plan["flops_per_image_train"] == 3 * plan["flops_per_image_forward"] > 1e10
    assert plan["steps"] == 800_000 and plan["img_per_s_needed"] == pytest.approx(800_000 * 128 / 36000)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    "setup, args, code, message",
    [
        ("none", [], 1, "no dataset under data/"),
        ("two", [], 2, "several datasets under data/: a.h5, b.h5"),
        ("text", [], 1, "is not an HDF5 file"),
        ("one", ["--preset", "huge"], 2, "unknown preset 'huge'"),
        ("one16", [], 2, "no preset for 16×16 data"),
        ("one", ["--set", "model.width=3"], 2, "--set model.width: no such config field"),
        ("one", ["--set", "lr"], 2, "--set expects KEY=VALUE"),
        ("one", ["--run-dir", "data/a.h5/run"], 1, "cannot create the run directory"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(tmp_path, monkeypatch, capsys, setup, args, code, message):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    if setup in ("two", "one"):
        write_dataset(data / "a.h5", n=4, size=32)
    if setup == "two":
        write_dataset(data / "b.h5", n=4, size=32)
    if setup == "one16":
        write_dataset(data / "a.h5", n=4, size=16)
    if setup == "text":
        (data / "a.h5").write_text("not a dataset")
    got, out, err = run(capsys, *args, "--kimg", "0.004", "--batch", "4")
    assert got == code and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "cfgdiff"), "train", *args], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigint_checkpoints_the_completed_step_and_rerun_resumes(tmp_path):
    write_dataset(tmp_path / "toy.h5")
    args = ["--data", "toy.h5", "--preset", "tiny", "--run-dir", "run", "--batch", "4", "--tick", "0.004",
            "--snapshot", "100", "--preview-every", "100"]
    proc = _start([*args, "--kimg", "100"], tmp_path)
    stats = tmp_path / "run" / "stats.jsonl"
    while not stats.exists() and proc.poll() is None:  # the handler is installed before the first row
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    last = err.strip().splitlines()[-1]
    assert last.startswith("cfgdiff: error: interrupted after step ") and "rerun the same command" in last
    step = int(last.split("after step ")[1].split()[0])
    assert read_checkpoint(tmp_path / "run" / f"checkpoint-{step:08d}.pt")["step"] == step
    rerun = subprocess.run([str(BIN / "cfgdiff"), "train", *args, "--kimg", str((step + 1) * 4 / 1000), "--json"],
                           cwd=tmp_path, env=ENV, text=True, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["results"]["resumed_from_step"] == step


@pytest.mark.slow
def test_two_gloo_processes_take_the_same_steps_as_one(tmp_path):
    data = write_dataset(tmp_path / "toy.h5")
    common = {"batch": 8, "batch_per_device": 2, "kimg": 0.024, "amp": False, "snapshot_kimg": 1.0,
              "grid_kimg": 1.0, "tick_kimg": 0.008}
    one = train(resolve_config(str(data), "tiny", str(tmp_path / "one"), common))
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "cfgdiff"), "train",
           "--data", str(data), "--preset", "tiny", "--run-dir", str(tmp_path / "two"), "--batch", "8",
           "--batch-per-device", "2", "--kimg", "0.024", "--no-amp", "--snapshot", "1", "--preview-every", "1",
           "--tick", "0.008", "--json"]
    two = subprocess.run(cmd, env=ENV, text=True, capture_output=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert json.loads(two.stdout)["results"]["steps"] == one["steps"] == 3  # rank 0 alone prints the JSON
    a = read_checkpoint(tmp_path / "one" / "checkpoint-00000003.pt")
    b = read_checkpoint(tmp_path / "two" / "checkpoint-00000003.pt")
    for key in ("model", "ema"):
        for k, v in a[key].items():
            torch.testing.assert_close(b[key][k], v, rtol=1e-4, atol=1e-6)
    # the runs really trained: the zero-initialised output layer moved by about Adam's Σ lr_t = 4.8e-5
    assert a["model"]["conv_out.weight"].abs().max() == pytest.approx(4.8e-5, rel=0.05)
    rows = [json.loads(line) for line in (tmp_path / "two" / "stats.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "one" / "stats.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref], rel=1e-5)
