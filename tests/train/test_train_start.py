"""How `cfgdiff train` starts and what it records: the micro-batch from the device's memory (a
memory model, checked against a real count; its peak check is bench/memory_model.py), gradient accumulation keeping the
preset's optimiser step, no run folder before a step succeeded, the start header, log.txt,
stats.jsonl's times, TensorBoard scalars, and the captioned sample grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cfgdiff.train.loop as loop
from cfgdiff.cli.app import main
from cfgdiff.config import TRAIN_PRESETS
from cfgdiff.errors import CfgdiffError
from cfgdiff.nn import build_unet, count_params
from cfgdiff.train import memory
from cfgdiff.runs import read_checkpoint
from cfgdiff.train.loop import train
from support import tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GIB = 2**30


def _real_saved_bytes(model, batch: int) -> int:
    """The bytes the forward saves for backward, counted on real CPU tensors (each allocation once,
    by its data pointer), parameters excluded: an independent count of the meta-device one."""
    torch.manual_seed(0)
    net = build_unet(model)
    params = {p.data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    x = torch.randn(batch, model.in_channels, model.resolution, model.resolution)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x, torch.rand(batch) * 1000, torch.zeros(batch, dtype=torch.long)).sum().backward()
    return sum(seen.values())


def test_saved_activation_count_matches_real_tensors():
    model = TRAIN_PRESETS["tiny"].model
    real = _real_saved_bytes(model, 3) - _real_saved_bytes(model, 2)
    assert memory.saved_bytes_per_image(model) == pytest.approx(real, rel=0.02)


def test_fit_picks_the_largest_divisor_of_the_batch_that_fits():
    p, a = 1_000_000, 10_000_000
    state = 20 * p
    assert memory.fit_micro_batch(2048, p, a, state + 2 * 64 * a) == 64
    assert memory.fit_micro_batch(2048, p, a, state + 2 * 100 * a) == 64  # 100 does not divide 2048
    assert memory.fit_micro_batch(96, p, a, state + 2 * 40 * a) == 32
    assert memory.fit_micro_batch(2048, p, a, state + 2 * a - 1) is None
    assert memory.fit_micro_batch(128, p, a, 10**15) == 128


@pytest.mark.slow
def test_zero_flag_train_on_64px_data_resolves_a_micro_batch_that_fits(tmp_path, monkeypatch, capsys):
    """adm64's 2048-image batch as one micro-batch needs terabytes; the plan accumulates instead,
    with the largest micro-batch whose memory fits 90% of what this machine has available."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_dataset(tmp_path / "data" / "im.h5", n=8, size=64)
    # what the command sees when it resolves the micro-batch, before it builds anything: read here
    # first, since the dry run's own measurement (adm64's weights, a timed micro-batch) leaves heap
    # behind in this process that lowers MemAvailable afterwards
    avail = next(int(ln.split()[1]) * 1024 for ln in Path("/proc/meminfo").read_text().splitlines()
                 if ln.startswith("MemAvailable:"))
    assert main(["train", "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    plan = {**doc["results"], "config": doc["settings"]}
    micro, rounds = plan["batch_per_device"], plan["accumulation_rounds"]
    assert plan["config"]["preset"] == "adm64" and micro * rounds == 2048 and micro < 2048
    params, per_image = plan["params"], memory.saved_bytes_per_image(TRAIN_PRESETS["adm64"].model)
    need = lambda b: 20 * params + 2 * b * per_image  # noqa: E731  (the documented model, restated)
    bigger = min(b for b in (2 * micro, 4 * micro) if 2048 % b == 0)
    assert need(micro) <= 0.9 * avail * 1.05 and need(bigger) > 0.9 * avail * 0.95  # memory moves meanwhile
    assert not (tmp_path / "runs").exists()
    # a folder left by an older version's failed start (config.json with 0 = the whole batch at once,
    # no checkpoint) does not bring the 2048-image micro-batch back
    (tmp_path / "runs" / "im-adm64").mkdir(parents=True)
    (tmp_path / "runs" / "im-adm64" / "config.json").write_text(json.dumps({**plan["config"], "batch_per_device": 0}))
    assert main(["train", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"]["batch_per_device"] < 2048


def test_a_device_too_small_for_one_image_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_dataset(tmp_path / "data" / "im.h5", n=8, size=64)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 4 * GIB)
    assert main(["train"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs about" in err[0] and "4.0 GiB available" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_accumulation_from_memory_is_the_same_run_as_the_explicit_micro_batch(tmp_path, monkeypatch):
    """A budget that fits 2 of the 8 images: the run takes micro-batch 2 × 4 rounds, exactly what
    --batch-per-device 2 takes; config.json records it, so a rerun on a bigger device resumes."""
    cfg = tiny_config(tmp_path, "auto", batch=8, kimg=0.016, snapshot_kimg=0.008)
    params, a = count_params(build_unet(cfg.model, "meta")), memory.saved_bytes_per_image(cfg.model)
    budget = (20 * params + 2 * 3 * a) / memory.BUDGET_FRACTION  # room for 3 images: 2 divides 8, 3 not
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(budget))
    short = train(tiny_config(tmp_path, "auto", batch=8, kimg=0.008, snapshot_kimg=0.008))
    assert short["config"]["batch_per_device"] == 2
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["batch_per_device"] == 2
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000 * GIB)  # another device
    resumed = train(cfg)
    assert resumed["resumed_from_step"] == 1 and resumed["config"]["batch_per_device"] == 2
    train(tiny_config(tmp_path, "explicit", batch=8, kimg=0.016, snapshot_kimg=0.008, batch_per_device=2))
    got = read_checkpoint(tmp_path / "auto" / "checkpoint-00000002.pt")
    want = read_checkpoint(tmp_path / "explicit" / "checkpoint-00000002.pt")
    for key in ("model", "ema"):
        assert all(torch.equal(got[key][n], want[key][n]) for n in want[key]), key


def test_a_failed_first_step_leaves_no_run_folder(tmp_path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise CfgdiffError("out of memory")  # what a device too small for the first step does

    monkeypatch.setattr(loop, "accumulate_gradients", out_of_memory)
    with pytest.raises(CfgdiffError):
        train(tiny_config(tmp_path))
    assert not (tmp_path / "run").exists()


def test_header_log_stats_and_tensorboard_scalars(tmp_path, capsys):
    pytest.importorskip("tensorboard")  # the `tensorboard` extra (also in `test`)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_config(tmp_path, kimg=0.012, snapshot_kimg=0.008), loggers=["tensorboard"])  # checkpoints 2, 3
    for kind in ("checkpoint", "ema"):  # as if killed after step 3's stats row, before its checkpoint
        (tmp_path / "run" / f"{kind}-00000003.pt").unlink()
    train(tiny_config(tmp_path, kimg=0.016, snapshot_kimg=0.008), loggers=["tensorboard"])  # resumes at step 2
    err = capsys.readouterr().err
    header = [ln for ln in err.splitlines() if ln.startswith("train: preset")]
    assert len(header) == 2 and "1.37M parameters" in header[0] and "micro-batch 4 × 1 accumulation = batch 4" \
        in header[0] and "(new)" in header[0] and "(resuming at step 2)" in header[1], err
    assert "train: plan on cpu: a micro-batch of 4 takes" in err and "; ETA " in err
    assert "preview grid grid-00000004.png: 4/4 step (100.0%)" in err  # the final grid is never silent work
    ticks = [ln for ln in (tmp_path / "run" / "log.txt").read_text().splitlines() if " tick: step " in ln]
    assert len(ticks) == 5 and all(" ETA " in ln for ln in ticks)  # every tick line carries the ETA
    run = tmp_path / "run"
    log = (run / "log.txt").read_text().splitlines()
    assert sum("train: preset tiny" in ln for ln in log) == 2 and sum(" tick: step " in ln for ln in log) == 3 + 2
    assert " done: 4 steps" in log[-1]
    rows = [json.loads(ln) for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # step 3 of the first session was dropped on resume
    assert all(r["s_per_kimg"] == pytest.approx(1000 / r["img_per_s"]) for r in rows)
    elapsed = [r["elapsed_s"] for r in rows]
    assert all(b > a for a, b in zip(elapsed, elapsed[1:]))  # the second session continues the clock
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [1, 2, 3, 4]  # the dropped step 3 was purged from the events too
    assert [e.value for e in events] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([r["lr"] for r in rows], rel=1e-6)


def test_unknown_logger_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "toy.h5")
    assert main(["train", "--data", "toy.h5", "--preset", "tiny", "--log", "wandb"]) == 2  # a usage error
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cfgdiff: error: unknown --log 'wandb'; choose tensorboard"]
    assert not (tmp_path / "runs").exists()


def test_sample_grid_is_captioned_with_w_and_kimg(tmp_path):
    from cfgdiff.train.grid import CAPTION_HEIGHT

    train(tiny_config(tmp_path, kimg=0.008, grid_kimg=0.008, grid_images=3, grid_steps=2, grid_w=2.5))
    im = Image.open(tmp_path / "run" / "grid-00000002.png")
    assert im.text == {"w": "0,2.5", "kimg": "0.008", "steps": "2", "seeds": "0-2",
                       "sampler": "ancestral", "grid": "paper"}
    px = np.asarray(im)
    assert px.shape == (2 * (CAPTION_HEIGHT + 16), 3 * 16, 3)
    for top in (0, CAPTION_HEIGHT + 16):  # each band: black with white text
        band = px[top:top + CAPTION_HEIGHT]
        assert set(np.unique(band)) - {0} and (band == 0).mean() > 0.5


def test_the_plan_is_measured_and_a_far_too_slow_zero_flag_plan_is_refused_with_one_that_fits(tmp_path, monkeypatch,
                                                                                               capsys):
    from cfgdiff.train import estimate

    monkeypatch.setattr(estimate, "MAX_STEP_SECONDS", 0.0)  # every plan is "far too slow" on this machine
    with pytest.raises(CfgdiffError) as e:
        train(tiny_config(tmp_path, "refused"), refuse_slow=True)
    message = str(e.value)
    assert "\n" not in message and "this plan is far too slow here: one optimiser step takes" in message
    assert f"cfgdiff train --data {tmp_path / 'toy.h5'} --preset tiny --batch 64 --kimg " in message
    assert not (tmp_path / "refused").exists()  # refused before the first step: nothing written
    summary = train(tiny_config(tmp_path, "warned", kimg=0.008))  # explicit flags: a warning, and it runs
    assert summary["steps"] == 2 and "cfgdiff: warning: this plan is far too slow" in capsys.readouterr().err


def test_measuring_the_plan_leaves_the_run_bit_identical(tmp_path, monkeypatch):
    measured = train(tiny_config(tmp_path, "measured", kimg=0.008))
    monkeypatch.setattr(loop, "plan_check", lambda *args, **kwargs: None)
    plain = train(tiny_config(tmp_path, "plain", kimg=0.008))
    assert measured["steps"] == plain["steps"] == 2
    a = read_checkpoint(tmp_path / "measured" / "checkpoint-00000002.pt")
    b = read_checkpoint(tmp_path / "plain" / "checkpoint-00000002.pt")
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key
