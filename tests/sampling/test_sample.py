"""Sharded, resumable sampling: per-seed reproducibility, w = 0 without the ∅ pass, resume, outputs."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cfgdiff.config import TRAIN_PRESETS, DiffusionConfig, SamplerConfig
from cfgdiff.errors import ConfigError
from cfgdiff.files import PartStore
from cfgdiff.nn.unet import build_unet
from cfgdiff.runs import SamplingModel
from cfgdiff.sampling.shards import SampleJob, run_sample

CPU = torch.device("cpu")


class Counting(torch.nn.Module):
    def __init__(self, net, null):
        super().__init__()
        self.net, self.null, self.calls = net, null, []

    def forward(self, x, c_noise, labels):
        self.calls.append((x.shape[0], int(labels.eq(self.null).sum())))
        return self.net(x, c_noise, labels)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = replace(TRAIN_PRESETS["tiny"].model, resolution=8, channel_mult=(1, 2), num_classes=4)
    net = build_unet(cfg).eval()
    # a random net with a zero-initialised output layer would predict ε = 0; give it a real output
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)
    run = replace(TRAIN_PRESETS["tiny"], model=cfg, diffusion=DiffusionConfig())
    return SamplingModel(net, run, step=0, images_seen=0, path=Path("untrained.pt"), sha256="0" * 64, dataset="none")


def _job(n, w=1.0, batch=64, steps=6, shard=1000):
    seeds = tuple(range(10, 10 + n))
    return SampleJob(seeds, tuple(s % 4 for s in seeds), SamplerConfig(steps=steps, w=w), batch=batch, shard_size=shard)


def test_samples_do_not_depend_on_batch_size_and_files_are_adm_format(model, tmp_path):
    a = run_sample(model, _job(9, batch=1), tmp_path / "a.npz", CPU)
    run_sample(model, _job(9, batch=7, shard=4), tmp_path / "b.npz", CPU)
    with np.load(tmp_path / "a.npz") as fa, np.load(tmp_path / "b.npz") as fb:
        assert fa["arr_0"].shape == (9, 8, 8, 3) and fa["arr_0"].dtype == np.uint8
        assert np.array_equal(fa["arr_0"], fb["arr_0"])
        assert fa["arr_1"].tolist() == [s % 4 for s in range(10, 19)]
        assert fa["arr_0"].std() > 5  # real images, not a constant
    assert (tmp_path / "a.npz.json").exists() and a["nfe"] == 2 * 6 * 9 and a["seeds"] == "10-18"
    assert not (tmp_path / ".a.npz.partial").exists()


def test_w0_makes_no_unconditional_pass(model, tmp_path):
    counting = Counting(model.net, 4)
    m = replace(model, net=counting)
    run_sample(m, _job(5, w=0.0, steps=4), tmp_path / "c.npz", CPU)
    assert counting.calls == [(5, 0)] * 4
    counting.calls.clear()
    run_sample(m, _job(5, w=2.0, steps=4), tmp_path / "d.npz", CPU)
    assert counting.calls == [(10, 5)] * 4


def test_rerun_skips_finished_parts(model, tmp_path):
    out = tmp_path / "e.npz"
    full = tmp_path / "full.npz"
    run_sample(model, _job(10, shard=3), full, CPU)
    # an interrupted run: the parts of shards 0 and 2 exist, 1 and 3 do not
    from cfgdiff.sampling import shards

    job = _job(10, shard=3)
    store = PartStore(out, shards._identity(shards.provenance(model, job)))
    store.open()
    with np.load(full) as f:
        for a, b in [(0, 3), (6, 9)]:
            store.write(a, {"arr_0": f["arr_0"][a:b], "arr_1": f["arr_1"][a:b], "seeds": np.arange(10 + a, 10 + b)})
    counting = Counting(model.net, 4)
    run_sample(replace(model, net=counting), job, out, CPU)
    assert sum(batch for batch, _ in counting.calls) == 2 * 6 * (3 + 1)  # only shards 1 and 3, guided
    with np.load(out) as fo, np.load(full) as ff:
        assert np.array_equal(fo["arr_0"], ff["arr_0"])


def test_refuses_existing_output_and_discards_foreign_parts(model, tmp_path, capsys):
    out = tmp_path / "f.npz"
    first = run_sample(model, _job(2), out, CPU)
    mtime = out.stat().st_mtime_ns
    assert run_sample(model, _job(2), out, CPU) == first and out.stat().st_mtime_ns == mtime  # rerun: no-op
    with pytest.raises(ConfigError, match="holds the output of another sample job; pass --force"):
        run_sample(model, _job(2, w=0.5), out, CPU)
    run_sample(model, _job(2, w=0.5), out, CPU, force=True)
    other = tmp_path / "g.npz"
    from cfgdiff.sampling import shards

    store = PartStore(other, shards._identity(shards.provenance(model, _job(3))))
    store.open()
    store.write(0, {"arr_0": np.zeros((3, 8, 8, 3), np.uint8), "arr_1": np.zeros(3, np.int64),
                    "seeds": np.arange(10, 13)})  # a (black) part of another job (w=1): not to be reused for w=0
    run_sample(model, _job(3, w=0.0), other, CPU)
    assert "sample: discarding partial work" in capsys.readouterr().err
    with np.load(other) as f:
        assert f["arr_0"].std() > 5


def test_a_plan_over_a_day_gets_a_first_look_that_fits():
    """64 samples of the stochastic 2M at T = 16 (2 × 16 = 32 evaluations a guided sample) instead
    of 50,000 of the paper's T = 256 (512): the estimate scales by 64/50000 × 32/512."""
    from cfgdiff.config import DiffusionConfig, SamplerConfig
    from cfgdiff.sampling.command import smaller_plan

    paper = SamplerConfig(steps=256, w=0.3)
    assert smaller_plan(86_000.0, 50_000, 512, paper, DiffusionConfig(), CPU) is None  # under a day: no note
    note = smaller_plan(1e6, 50_000, 512, paper, DiffusionConfig(), CPU)
    assert note == ("this plan takes ~12 days on cpu; for a first look: --n 64 --sampler dpmpp-2m-sde --steps 16 "
                    "(~1.3 min), or a GPU")  # 1e6 s × 64/50000 × 32/512 = 80 s
