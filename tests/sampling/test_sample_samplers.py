"""`sample` with the sampler registry (issue 12 items 1, 3; issue 16 items 4, 8): the sampler,
grid and guidance variant reach the pixels; the NFE recorded everywhere is a count of real network
calls; autoguidance refuses a mismatched guide in one line before sampling; `--out DIR/` writes a
PNG folder equal to the npz; an exported safetensors file samples exactly as its run; the training
grid goes through the same seeds → images function."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cfgdiff.cli.app import main
from cfgdiff.config import (
    BUILTIN_SAMPLERS, GRID_NAMES, TRAIN_PRESETS, DiffusionConfig, SamplerConfig, TrainConfig, to_dict,
)
from cfgdiff.errors import ConfigError
from cfgdiff.nn.unet import build_unet
from cfgdiff.runs import EMA_FORMAT, VERSION, SamplingModel, atomic_save
from cfgdiff.sampling.generate import sample_batch
from cfgdiff.sampling.shards import SampleJob, run_sample

CPU = torch.device("cpu")
K = 4


class Counting(torch.nn.Module):
    """The network, counting the images of every forward (one image = one network evaluation)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.images = net, 0

    def forward(self, x, c_noise, labels):
        self.images += x.shape[0]
        return self.net(x, c_noise, labels)


def _run_config(num_classes=K, resolution=8, lam=(-20.0, 20.0)) -> TrainConfig:
    cfg = replace(TRAIN_PRESETS["tiny"].model, resolution=resolution, channel_mult=(1, 2), num_classes=num_classes)
    return replace(TRAIN_PRESETS["tiny"], model=cfg, diffusion=DiffusionConfig(lam_min=lam[0], lam_max=lam[1]))


def _net(run: TrainConfig, seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_unet(run.model).eval()
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)  # a zero output layer would predict ε = 0
    return net


@pytest.fixture(scope="module")
def model():
    run = _run_config()
    return SamplingModel(_net(run), run, step=0, images_seen=0, path=Path("untrained.pt"), sha256="0" * 64,
                         dataset="none")


def _save_ema(path: Path, run: TrainConfig, net: torch.nn.Module, step=3) -> Path:
    info = {"path": "none.h5", "size": run.model.resolution, "num_classes": run.model.num_classes,
            "class_names": [str(i) for i in range(run.model.num_classes)]}
    atomic_save({"format": EMA_FORMAT, "version": VERSION, "config": to_dict(run), "dataset_info": info,
                 "step": step, "images_seen": step * 32, "ema": net.state_dict()}, path)
    return path


def test_the_parse_time_name_lists_are_the_registries():
    from cfgdiff.diffusion.grids import GRIDS
    from cfgdiff.diffusion.sampler import BUILTIN

    assert list(BUILTIN_SAMPLERS) == list(BUILTIN) and list(GRID_NAMES) == list(GRIDS)


def test_ancestral_images_are_the_released_path(model):
    """The released sample_batch: network_eps, per-seed noise, the ancestral sampler, x.float() → uint8
    (re-assembled here by hand); the registry path must give the same bytes."""
    from cfgdiff.diffusion import PerSampleNoise, ancestral_sample
    from cfgdiff.diffusion.network import network_eps
    from cfgdiff.images import to_uint8
    from cfgdiff.sampling.generate import default_autocast

    seeds, labels = [3, 9, 4], [0, 3, 1]
    cfg = SamplerConfig(steps=7, w=1.5)
    with torch.inference_mode():
        x = ancestral_sample(network_eps(model.net, model.diffusion_cfg, default_autocast(CPU)), torch.tensor(labels),
                             PerSampleNoise(seeds, (3, 8, 8), CPU), cfg, model.diffusion_cfg, null_label=K)
    assert np.array_equal(sample_batch(model, seeds, labels, cfg, CPU), to_uint8(x.float()))


def test_the_sampler_choice_reaches_the_samples(model):
    seeds, labels = [0, 1], [2, 3]
    draw = lambda **kw: sample_batch(model, seeds, labels, SamplerConfig(steps=5, w=1.0, **kw), CPU)  # noqa: E731
    ddim = draw(sampler="ddim")
    assert np.array_equal(ddim, draw(sampler="ddim"))  # deterministic
    ancestral, dpm = draw(), draw(sampler="dpmpp-2m")
    assert np.abs(ddim.astype(int) - ancestral).mean() > 1 and np.abs(dpm.astype(int) - ddim).mean() > 0.1
    assert np.abs(draw(sampler="ddim", grid="edm").astype(int) - ddim).mean() > 0.1  # the grid too


@pytest.mark.parametrize("name,steps,w,interval,expected", [
    ("dpmpp-2m", 6, 1.0, None, 2 * 6),  # one 2B forward per step
    ("dpmpp-2m", 6, 0.0, None, 6),  # no ∅ pass at w = 0
    ("heun", 5, 2.0, None, 2 * (2 * 5 - 1)),  # EDM's Heun: 2T − 1 evaluations
    ("ancestral", 4, 1.0, (-20.0, 20.0), 2 * 4),  # an interval over the whole range: plain guidance
])
def test_nfe_in_the_metadata_is_a_count_of_network_calls(model, tmp_path, name, steps, w, interval, expected):
    counting = Counting(model.net)
    n = 3
    job = SampleJob((5, 6, 7), (0, 1, 2), SamplerConfig(steps=steps, w=w, sampler=name, guidance_interval=interval))
    prov = run_sample(replace(model, net=counting), job, tmp_path / "s.npz", CPU)
    side = json.loads((tmp_path / "s.npz.json").read_text())
    assert counting.images == expected * n  # the oracle: T (or 2T − 1) from the papers, 2 when guided
    assert side["nfe"] == prov["nfe"] == counting.images and side["nfe_per_sample"] == expected
    assert side["sampler"]["sampler"] == name and side["sampler"]["steps"] == steps and side["guide"] is None


def test_interval_guidance_lowers_the_nfe_and_is_counted_exactly(model, tmp_path):
    from cfgdiff.diffusion import make_grid

    steps, n = 10, 2
    inside = sum(1 for lam in make_grid("paper", steps, -20.0, 20.0).tolist() if -3.0 <= lam <= 3.0)
    assert 0 < inside < steps
    counting = Counting(model.net)
    job = SampleJob((1, 2), (0, 1), SamplerConfig(steps=steps, w=2.0, guidance_interval=(-3.0, 3.0)))
    prov = run_sample(replace(model, net=counting), job, tmp_path / "i.npz", CPU)
    assert counting.images == n * (steps + inside) == prov["nfe"] < n * 2 * steps


def test_autoguidance_with_the_network_itself_is_the_unguided_model(model, tmp_path):
    """ε̃ = (1 + w) ε(z, c) − w ε(z, c) = ε(z, c): the samples of w = 0, with two forwards per step."""
    seeds, labels = (0, 1, 2), (1, 2, 3)
    plain = sample_batch(model, seeds, labels, SamplerConfig(steps=6, w=0.0), CPU)
    counting = Counting(model.net)
    job = SampleJob(seeds, labels, SamplerConfig(steps=6, w=3.0), guide=replace(model, sha256="1" * 64))
    prov = run_sample(replace(model, net=counting), job, tmp_path / "a.npz", CPU)
    with np.load(tmp_path / "a.npz") as f:
        assert np.abs(f["arr_0"].astype(int) - plain).max() <= 1  # float rounding of (1 + w)a − wa
    assert prov["guide"]["sha256"] == "1" * 64 and prov["nfe"] == 3 * 6 * 2 == counting.images + 3 * 6


def test_training_grid_uses_the_grid_sampler(tmp_path):
    from cfgdiff.sampling.generate import default_autocast
    from cfgdiff.train.grid import write_sample_grid

    bf16 = default_autocast(CPU)  # as sample_batch runs the network
    run = replace(_run_config(), grid_images=2, grid_steps=4, grid_w=1.0)
    net = _net(run)
    a = np.asarray(Image.open(write_sample_grid(net, run, tmp_path / "a.png", bf16, 1.0)))
    d_cfg = replace(run, grid_sampler="ddim", grid_schedule="linear")
    d = Image.open(write_sample_grid(net, d_cfg, tmp_path / "d.png", bf16, 1.0))
    assert d.text["sampler"] == "ddim" and d.text["grid"] == "linear"
    assert np.abs(np.asarray(d).astype(int) - a).mean() > 0.5
    # the ancestral grid's w = 0 row is exactly what `sample` draws for seeds 0, 1 (classes 0, 1)
    row = sample_batch(SamplingModel(net, run, 0, 0, Path("x"), "", ""), [0, 1], [0, 1], SamplerConfig(steps=4), CPU)
    assert np.array_equal(a[12:20, :16], np.concatenate(list(row), axis=1))
    with pytest.raises(ConfigError, match="unknown sampler"):
        replace(run, grid_sampler="euler")


# ---- the command line ------------------------------------------------------------------------------------------

@pytest.fixture()
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main_run = _run_config()
    _save_ema(tmp_path / "main.pt", main_run, _net(main_run))
    small = _run_config(num_classes=10)
    _save_ema(tmp_path / "other-classes.pt", small, _net(small, seed=1))
    return tmp_path


def test_a_mismatched_guide_is_one_line_before_sampling(runs, capsys):
    before = sorted(p.name for p in runs.iterdir())
    code = main(["sample", "main.pt", "--guide-with", "other-classes.pt", "--n", "2", "--steps", "2",
                 "--out", "x.npz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1  # a ConfigError: the options do not fit together
    assert "guide network's classes is 10, the main network's is 4" in err[0]
    assert sorted(p.name for p in runs.iterdir()) == before  # no parts, no lock, no output


def test_dry_run_and_json_give_the_exact_nfe(runs, capsys):
    args = ["sample", "main.pt", "--n", "5", "--steps", "8", "--w", "1", "--sampler", "heun", "--dry-run"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "NFE = 30 per sample, 150 in all" in out  # 2 · (2·8 − 1)
    # heun on the paper grid gets one line of advice (its first step spans σ_e 22026 → 4.4)
    assert err.count("cfgdiff: note: heun on the paper grid at T = 8: one step spans a sigma ratio of 5028,") == 1
    assert main([*args, "--grid", "linear"]) == 0
    assert "note" not in capsys.readouterr().err
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "sample" and doc["results"]["nfe"] == 150 and doc["results"]["nfe_per_sample"] == 30
    assert doc["settings"]["sampler"]["sampler"] == "heun" and not (runs / "samples.npz").exists()


def test_out_folder_writes_npz_and_an_equal_png_folder(runs, capsys):
    args = ["sample", "main.pt", "--n", "5", "--steps", "3", "--w", "1", "--sampler", "dpmpp-2m",
            "--out", "res/", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["outputs"]["png"] == str(Path("res/png")) and doc["results"]["nfe"] == 5 * 3 * 2
    with np.load(runs / "res" / "samples.npz") as f:
        arr = f["arr_0"]
    names = sorted(p.name for p in (runs / "res" / "png").iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    for i, name in enumerate(names):
        assert np.array_equal(np.asarray(Image.open(runs / "res" / "png" / name)), arr[i])
    side = json.loads((runs / "res" / "samples.npz.json").read_text())
    assert side["sampler"]["sampler"] == "dpmpp-2m" and side["nfe_per_sample"] == 6
    # a rerun of the same command: nothing to do, the folder stays; a user's file in it: refused
    mtime = (runs / "res" / "png" / "000000.png").stat().st_mtime_ns
    assert main(args) == 0 and (runs / "res" / "png" / "000000.png").stat().st_mtime_ns == mtime
    (runs / "res" / "png" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main([*args, "--force"]) != 0 and "files cfgdiff did not write (notes.txt)" in capsys.readouterr().err
    assert (runs / "res" / "png" / "notes.txt").read_text() == "mine"


def test_a_half_written_png_folder_is_finished_by_the_rerun(runs, capsys, monkeypatch):
    args = ["sample", "main.pt", "--n", "4", "--steps", "2", "--out", "r/"]
    assert main(args) == 0
    png = runs / "r" / "png"
    want = {p.name: p.read_bytes() for p in png.iterdir()}
    save, saved = Image.Image.save, []

    def failing_save(self, fp, *a, **kw):  # a kill after two PNGs
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(fp)
        return save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    assert main([*args, "--force"]) == 130
    assert not png.exists() and len(list((runs / "r" / ".png.partial").glob("*.png"))) == 2
    saved.clear()
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **kw: saved.append(fp) or save(self, fp, *a, **kw))
    assert main(args) == 0 and not (runs / "r" / ".png.partial").exists()
    assert len(saved) == 2  # only the two missing files
    assert {p.name: p.read_bytes() for p in png.iterdir()} == want


def test_safetensors_export_samples_exactly_as_its_run(runs, capsys):
    from cfgdiff.train.export import export_safetensors

    export_safetensors(runs / "main.pt", runs / "main.safetensors")
    common = ["--n", "3", "--steps", "4", "--w", "2", "--json"]
    assert main(["sample", "main.pt", *common, "--out", "a.npz"]) == 0
    capsys.readouterr()
    assert main(["sample", "main.safetensors", *common, "--out", "b.npz"]) == 0
    doc = json.loads(capsys.readouterr().out)
    with np.load(runs / "a.npz") as a, np.load(runs / "b.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    sha = hashlib.sha256((runs / "main.safetensors").read_bytes()).hexdigest()
    side = json.loads((runs / "b.npz.json").read_text())
    assert side["checkpoint_sha256"] == sha == doc["provenance"]["checkpoint_sha256"] and side["kimg"] == 0.096


def test_a_foreign_safetensors_file_is_one_line(runs, capsys):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(runs / "foreign.safetensors"), metadata={"format": "pt"})
    assert main(["sample", "foreign.safetensors", "--n", "2", "--steps", "2", "--out", "f.npz"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not one `cfgdiff export` wrote" in err[0]
