"""Guidance methods on the command line: `sweep --guidance` with per-method setting axes (one line each,
same seeds, resumable), `sample --guidance`, and a plug-in method with one setting registered through an
entry point, which must show up in --help, the completions, the sweep's axes and its row keys."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cfgdiff.cli.app import main
from support import plugin_cli
from cfgdiff.cli.methods import docs_table
from cfgdiff.sampling import sweep as sweep_mod

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.usefixtures("isolated_caches")]
REPO = Path(__file__).resolve().parents[2]


def _sweep(run_and_ref, weights, out, *extra):
    run, ref = run_and_ref
    return ["sweep", str(run), "--n", "2", "--batch-per-device", "2", "--metrics", "pr", "--ref", str(ref),
            "--inception", str(weights[0]), "--out-dir", str(out), "--sampler", "ddim", "--steps", "3", "--w", "0,1",
            *extra]


def test_sweep_guidance_axis_one_line_per_method_same_seeds_and_resumes(tmp_path, run_and_ref, random_weights,  # noqa: F811
                                                                         monkeypatch, capsys):
    seen = []
    real = sweep_mod.sample_batch

    def counting(model, seeds, labels, sampler, device, **kw):
        seen.append((sampler.guidance, dict(sampler.guidance_settings), sampler.w, list(seeds), list(labels)))
        return real(model, seeds, labels, sampler, device, **kw)

    monkeypatch.setattr(sweep_mod, "sample_batch", counting)
    out = tmp_path / "sw"
    args = _sweep(run_and_ref, random_weights, out, "--guidance", "cfg,apg", "--apg-eta", "0,1")
    assert main(args) == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (out / "sweep.jsonl").read_text().splitlines()]
    lines = {(r["guidance"], tuple(sorted(r["guidance_settings"].items()))) for r in rows}
    apg = {"momentum": -0.75, "norm_threshold": 2.5}
    assert lines == {("cfg", ()), *{("apg", tuple(sorted({**apg, "eta": e}.items()))) for e in (0.0, 1.0)}}
    assert len(rows) == 6 and len({(tuple(s[3]), tuple(s[4])) for s in seen}) == 1  # 3 lines × 2 w, same seeds
    table = (out / "table.md").read_text()
    assert table.count("### ") == 3 and "apg(eta=1, momentum=-0.75, norm_threshold=2.5)" in table
    header = (out / "sweep.csv").read_text().splitlines()
    assert "apg" in header[3] and "eta=0.0,momentum=-0.75,norm_threshold=2.5" in (out / "sweep.csv").read_text()
    # resumable: one more value of the axis computes only its rows
    seen.clear()
    capsys.readouterr()
    assert main(_sweep(run_and_ref, random_weights, out, "--guidance", "cfg,apg", "--apg-eta", "0,1,0.5")) == 0
    assert {(g, s["eta"]) for g, s, *_ in seen} == {("apg", 0.5)} and len(seen) == 2


def test_a_setting_of_a_method_not_chosen_is_one_line(tmp_path, run_and_ref, random_weights, capsys):  # noqa: F811
    code = main(_sweep(run_and_ref, random_weights, tmp_path / "x", "--apg-eta", "0.5"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["cfgdiff: error: --apg-eta applies to --guidance apg, and this command uses --guidance cfg"]
    code = main(_sweep(run_and_ref, random_weights, tmp_path / "y", "--guidance", "apg", "--apg-eta", "3"))
    err = capsys.readouterr().err
    assert code == 2 and "--apg-eta must lie in [0, 1], got '3'" in err
    run, _ = run_and_ref
    code = main(["sample", str(run), "--n", "2", "--steps", "3", "--guidance", "cfgpp", "--w", "0.5",
                 "--out", str(tmp_path / "s.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("cfgdiff: error: --guidance cfgpp renoises inside the sampler's step, "
                                            "which ancestral does not do")


def test_sample_records_the_method_and_its_settings(tmp_path, run_and_ref, capsys):
    run, _ = run_and_ref
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "2", "--steps", "3", "--sampler", "ddim", "--w", "0.5", "--guidance",
                 "apg", "--apg-momentum", "0", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["sampler"]["guidance"] == "apg"
    assert doc["settings"]["sampler"]["guidance_settings"] == [["eta", 0.0], ["momentum", 0.0], ["norm_threshold", 2.5]]
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["sampler"]["guidance"] == "apg"


def test_docs_table_is_current():
    doc = (REPO / "docs" / "sample.md").read_text()
    assert docs_table() in doc, "docs/sample.md's guidance settings table is stale: paste cfgdiff.cli.methods.docs_table()"


# ---- a plug-in method, one file, one setting -------------------------------------------------------------------------
PLUGIN = textwrap.dedent('''
    from cfgdiff.diffusion.methods import Method, Setting

    def _make(settings):
        k = settings["gain"]
        def combine(s):
            return s.eps_c + k * s.w * (s.eps_c - s.eps_u), None
        return combine

    halfcfg = Method("halfcfg", "Eq. 6 with the update scaled by a gain", _make,
                     settings=(Setting("gain", float, 0.5, (0.0, 2.0), "the update's gain"),))
''')


@pytest.mark.slow
def test_a_plugin_method_gets_flags_help_completions_axes_and_row_keys(tmp_path, run_and_ref, random_weights):  # noqa: F811
    cli = plugin_cli(tmp_path, "myguidance", PLUGIN, "[cfgdiff.guidance]\nhalfcfg = myguidance:halfcfg\n")
    assert "--halfcfg-gain" in cli("sample", "--help").stdout and "--halfcfg-gain" in cli("sweep", "--help").stdout
    comp = cli("write", str(tmp_path / "c"), entry="cfgdiff.cli.completions")
    assert comp.returncode == 0, comp.stderr
    assert all("halfcfg-gain" in (tmp_path / "c" / f).read_text() for f in ("cfgdiff.bash", "_cfgdiff", "cfgdiff.fish"))
    out = tmp_path / "sw"
    r = cli(*_sweep(run_and_ref, random_weights, out, "--guidance", "halfcfg", "--halfcfg-gain", "0.5,2"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (out / "sweep.jsonl").read_text().splitlines()]
    assert sorted((r["guidance"], r["guidance_settings"]["gain"], r["w"]) for r in rows) == [
        ("halfcfg", 0.5, 0.0), ("halfcfg", 0.5, 1.0), ("halfcfg", 2.0, 0.0), ("halfcfg", 2.0, 1.0)]
    r = cli("sample", "--help")
    assert r.returncode == 0 and "halfcfg" in cli("sweep", "--guidance", "nosuch", str(out)).stderr
