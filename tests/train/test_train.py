"""Training: data order, exact resume, the loss going down, the sample grid, checkpoints for
sampling, non-finite loss, and the images helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cfgdiff.config import to_dict
from cfgdiff.errors import CheckpointError, NumericalError
from cfgdiff.images import save_grid, to_uint8
from cfgdiff.runs import checkpoint_files, load_for_sampling, read_checkpoint
from cfgdiff.train.data import PermutationStream, StepSampler
from cfgdiff.train.loop import train
from cfgdiff.runs import content_digest
from support import tiny_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_stream_is_a_permutation_per_epoch_and_shards_cover_the_batch():
    stream = PermutationStream(10, seed=3)
    first, second = stream.indices(0, 10), stream.indices(10, 10)
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10)) and first != second
    assert stream.indices(7, 6) == first[7:] + second[:3]  # crossing an epoch boundary
    one = list(StepSampler(10, 3, batch=8, micro=2, rank=0, world=1, start_step=0, stop_step=2))
    two = [list(StepSampler(10, 3, batch=8, micro=2, rank=r, world=2, start_step=0, stop_step=2)) for r in (0, 1)]
    assert one[0] + one[1] + one[2] + one[3] == (first + second)[:8]
    # chunk j of a step goes to rank j mod W: rank 0 takes chunks 0 and 2, rank 1 chunks 1 and 3
    assert two[0][:2] == [one[0], one[2]] and two[1][:2] == [one[1], one[3]]
    resumed = list(StepSampler(10, 3, batch=8, micro=2, rank=0, world=1, start_step=1, stop_step=2))
    assert resumed == one[4:]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = read_checkpoint(path)
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    flat.update({f"ema.{k}": v for k, v in state["ema"].items()})
    for i, s in state["optimizer"]["state"].items():
        flat.update({f"opt.{i}.{k}": v for k, v in s.items()})
    return flat


def test_resume_is_bit_identical(tmp_path):
    whole = train(tiny_config(tmp_path, "whole"))
    half = train(tiny_config(tmp_path, "split", kimg=0.008))
    resumed = train(tiny_config(tmp_path, "split"))
    assert (whole["steps"], half["steps"], resumed["resumed_from_step"]) == (4, 2, 2)
    a = _weights(tmp_path / "whole" / "checkpoint-00000004.pt")
    b = _weights(tmp_path / "split" / "checkpoint-00000004.pt")
    assert a.keys() == b.keys() and len(a) > 100
    assert all(torch.equal(a[k], b[k]) for k in a)
    stats = [json.loads(line) for line in (tmp_path / "split" / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == [1, 2, 3, 4]
    whole_stats = [json.loads(line) for line in (tmp_path / "whole" / "stats.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in stats] == [r["loss"] for r in whole_stats]


def test_tiny_preset_lowers_the_loss(tmp_path):
    cfg = tiny_config(tmp_path, batch=16, kimg=0.96, tick_kimg=0.32, lr_warmup_kimg=0.16, snapshot_kimg=10.0,
                      grid_kimg=0.96, grid_images=4, grid_steps=8)
    train(cfg)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    # Eq. 5 with a zero-initialised output starts at E‖ε‖² = 1; measured 0.77, 0.22, 0.09 per 20 steps
    assert len(losses) == 3 and losses[0] > 0.5 and losses[-1] < 0.2
    grid = np.asarray(Image.open(tmp_path / "run" / "grid-00000060.png"))
    assert grid.shape == (2 * (12 + 16), 4 * 16, 3)  # a caption band and a row for w = 0, then w = grid_w


def test_load_for_sampling_returns_the_ema_network(tmp_path):
    cfg = tiny_config(tmp_path, kimg=0.008)
    train(cfg)
    model = load_for_sampling(tmp_path / "run", "cpu")
    ema = read_checkpoint(tmp_path / "run" / "ema-00000002.pt")["ema"]
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in ema.items())
    assert not model.net.training and not any(p.requires_grad for p in model.net.parameters())
    assert (model.num_classes, model.resolution, model.kimg) == (4, 16, 0.008)
    assert model.class_names == ("class 0", "class 1", "class 2", "class 3") and model.step == 2
    assert model.dataset == cfg.dataset and len(model.sha256) == 64
    assert model.model_cfg == cfg.model and model.diffusion_cfg == cfg.diffusion
    # a training checkpoint file works too, and gives the same EMA weights
    same = load_for_sampling(tmp_path / "run" / "checkpoint-00000002.pt")
    assert all(torch.equal(same.net.state_dict()[k], v) for k, v in ema.items())


def test_broken_checkpoints_are_one_clear_error(tmp_path):
    train(tiny_config(tmp_path, kimg=0.004, snapshot_kimg=0.004))
    ema = tmp_path / "run" / "ema-00000001.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ema.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or not a cfgdiff checkpoint"):
        load_for_sampling(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a cfgdiff checkpoint"):
        load_for_sampling(other)
    state = read_checkpoint(ema)
    state["config"]["model"]["model_channels"] = 64  # weights of a 32-channel net, config of a 64-channel one
    foreign = tmp_path / "foreign.pt"
    torch.save(state, foreign)  # edited without its content hash: damaged
    with pytest.raises(CheckpointError, match="do not match their recorded SHA-256"):
        load_for_sampling(foreign)
    state["content_sha256"] = content_digest(state)  # consistently recorded: the architecture is wrong
    torch.save(state, foreign)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_for_sampling(foreign)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_for_sampling(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_for_sampling(tmp_path / "missing.pt")


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # lr 1e30: Adam moves every weight by ~1e30 in step 1, so step 2's loss overflows
    cfg = tiny_config(tmp_path, kimg=0.012, snapshot_kimg=0.004, lr=1e30, lr_warmup_kimg=0.0, grad_clip=0.0)
    with pytest.raises(NumericalError, match=r"at step 2 .*the last good checkpoint is .*checkpoint-00000001\.pt"):
        train(cfg)
    assert [p.name for p in checkpoint_files(tmp_path / "run")] == ["checkpoint-00000001.pt"]
    assert read_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt")["step"] == 1


def test_resume_refuses_a_different_run(tmp_path):
    train(tiny_config(tmp_path, kimg=0.004, snapshot_kimg=0.004))
    with pytest.raises(CheckpointError, match=r"different run \(model\.model_channels: 32 -> 64"):
        train(tiny_config(tmp_path, **{"model.model_channels": 64}))
    cfg = tiny_config(tmp_path, kimg=0.008)  # a longer duration is a resume, not a new run
    assert train(cfg)["resumed_from_step"] == 1
    # config.json is the config, with the micro-batch resolved from the device (all 4 fit) recorded
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {**to_dict(cfg), "batch_per_device": 4}


def test_to_uint8_and_save_grid(tmp_path):
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 2.0]).reshape(1, 1, 2, 3).expand(2, 3, 2, 3)
    u = to_uint8(x)
    assert u.shape == (2, 2, 3, 3) and u.dtype == np.uint8
    assert u[0, :, :, 0].tolist() == [[0, 0, 128], [191, 255, 255]]  # round(127.5·(x + 1)), clipped
    images = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    grid = np.asarray(Image.open(save_grid(images, tmp_path / "g.png", ncols=2)))
    assert grid.shape == (4, 4, 3)
    assert np.array_equal(grid[:2, 2:], images[1]) and np.array_equal(grid[2:, :2], images[2])
    assert not grid[2:, 2:].any()  # the empty cell is black


def test_ema_warmup_follows_the_num_updates_rule_and_the_recipe_stays_constant():
    from cfgdiff.config import TRAIN_PRESETS
    from cfgdiff.train.step import ema_decay_at

    tiny, adm = TRAIN_PRESETS["tiny"], TRAIN_PRESETS["adm64"]
    assert ema_decay_at(tiny, 0) == pytest.approx(2 / 11)
    assert ema_decay_at(tiny, 98) == pytest.approx(100 / 109)
    assert ema_decay_at(tiny, 100_000) == tiny.ema_decay == 0.999
    assert all(ema_decay_at(adm, s) == 0.9999 for s in (0, 10, 10**6))
    # after 938 steps (the demo's run) the initial weights keep a negligible share of the EMA
    share = 1.0
    for step in range(938):
        share *= ema_decay_at(tiny, step)
    assert share < 1e-3


def test_ema_update_records_no_autograd_graph():
    """Without no_grad the EMA parameters would chain one autograd graph per step (memory grows)."""
    import copy

    from cfgdiff.train.step import ema_update

    net = torch.nn.Linear(3, 3)
    ema = copy.deepcopy(net).requires_grad_(False)
    ema_update(ema, net, 0.9)
    assert all(p.grad_fn is None and not p.requires_grad for p in ema.parameters())
