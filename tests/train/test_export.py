"""`cfgdiff export`: the EMA weights as safetensors, read back with safetensors itself; the embedded
config rebuilds a network that computes what the run's EMA network computes."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from cfgdiff.cli.export import export
from cfgdiff.config import ModelConfig, from_dict
from cfgdiff.errors import CfgdiffError
from cfgdiff.nn import build_unet
from cfgdiff.nn.unet import for_sampling
from cfgdiff.runs import load_for_sampling, read_checkpoint
from cfgdiff.train.export import FORMAT, export_safetensors
from cfgdiff.train.loop import train
from support import tiny_config

safetensors_torch = pytest.importorskip("safetensors.torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    train(tiny_config(tmp, kimg=0.008, snapshot_kimg=0.008))
    return tmp / "run"


def test_export_holds_the_ema_weights_and_the_config_that_rebuilds_them(run, tmp_path):
    from safetensors import safe_open

    result = export_safetensors(run, tmp_path / "w.safetensors")
    assert result["step"] == 2 and result["source"].endswith("ema-00000002.pt")
    want = read_checkpoint(run / "checkpoint-00000002.pt")
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["format"] == FORMAT and json.loads(meta["config"]) == want["config"]
    assert int(meta["step"]) == 2 and int(meta["images_seen"]) == 8
    assert tensors.keys() == want["ema"].keys()
    assert all(torch.equal(tensors[k], want["ema"][k]) for k in tensors)
    net = for_sampling(build_unet(from_dict(ModelConfig, json.loads(meta["config"])["model"])))  # laid out as sample runs it
    net.load_state_dict(tensors, strict=True)
    ref = load_for_sampling(run).net
    g = torch.Generator().manual_seed(0)
    x, c, y = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([10.0, 900.0]), torch.tensor([1, 4])
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x, c, y), ref(x, c, y), rtol=0, atol=0)


def test_export_refuses_existing_outputs_and_the_source(run, tmp_path):
    out = tmp_path / "w.safetensors"
    out.write_text("mine")
    for force in (False, True):  # a user's file: never replaced
        with pytest.raises(CfgdiffError, match="not written by cfgdiff .*even with --force"):
            export_safetensors(run, out, force=force)
        assert out.read_text() == "mine"
    out.unlink()
    export_safetensors(run, out)
    assert safetensors_torch.load_file(str(out)).keys()
    export_safetensors(run, out)  # a rerun of the same job replaces its own file
    with pytest.raises(CfgdiffError, match="is an input of this command"):
        export_safetensors(run / "ema-00000002.pt", run / "ema-00000002.pt", force=True)
    assert read_checkpoint(run / "ema-00000002.pt")["step"] == 2


def test_cli_default_output_is_beside_the_ema_file(run):
    app = typer.Typer()
    app.command()(export)
    app.command("_")(lambda: None)  # two commands: `export` is addressed by name, as under cfgdiff
    r = CliRunner().invoke(app, ["export", str(run), "--json"])
    assert r.exit_code == 0, r.output
    out = run / "ema-00000002.safetensors"
    assert json.loads(r.stdout)["outputs"]["safetensors"] == str(out) and out.is_file()
