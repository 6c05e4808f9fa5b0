"""The samplers' own settings (ancestral's v, ddim's η, a plug-in's), declared once in the sampler
registry: flags on sample and sweep, sweep axes with one line per value, row keys, the refusal of a
setting whose sampler is not used, and sweep folders and sample files written before the settings
were the samplers' own (v and η at the top level), which must resume without recomputing."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cfgdiff.cli.app import main
from support import plugin_cli
from cfgdiff.cli.methods import owned_settings, sampler_docs_table
from cfgdiff.diffusion.sampler_registry import BUILTIN
from cfgdiff.files import write_json, write_text
from cfgdiff.sampling import sweep as sweep_mod
from cfgdiff.sampling.shards import SampleOwners
from cfgdiff.sampling.sweep_files import OWNER

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.usefixtures("isolated_caches")]
REPO = Path(__file__).resolve().parents[2]


def _sweep(run_and_ref, weights, out, *extra):
    run, ref = run_and_ref
    return ["sweep", str(run), "--n", "2", "--batch-per-device", "2", "--metrics", "pr", "--ref", str(ref),
            "--inception", str(weights[0]), "--out-dir", str(out), "--steps", "3", "--w", "0,1", *extra]


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "sweep.jsonl").read_text().splitlines()]


def test_every_builtin_setting_has_one_flag_and_the_flags_are_distinct():
    flags = [o.flag for o in owned_settings()]
    assert len(flags) == len(set(flags))
    assert {(o.owner, o.setting.name, o.flag) for o in owned_settings() if o.kind == "sampler"} == {
        ("ancestral", "v", "--v"), ("ddim", "eta", "--eta")}
    assert [s.default for s in BUILTIN["ancestral"].settings] == [0.3]  # the paper's v


def test_sampler_axes_give_one_line_per_value_on_the_same_seeds(tmp_path, run_and_ref, random_weights,  # noqa: F811
                                                               capsys):
    out = tmp_path / "sw"
    assert main(_sweep(run_and_ref, random_weights, out, "--sampler", "ancestral,ddim", "--v", "0,1",
                       "--eta", "1", "--keep-samples")) == 0, capsys.readouterr().err
    rows = _rows(out)
    assert sorted((r["sampler"], tuple(r["sampler_settings"].items()), r["w"]) for r in rows) == [
        ("ancestral", (("v", 0.0),), 0.0), ("ancestral", (("v", 0.0),), 1.0),
        ("ancestral", (("v", 1.0),), 0.0), ("ancestral", (("v", 1.0),), 1.0),
        ("ddim", (("eta", 1.0),), 0.0), ("ddim", (("eta", 1.0),), 1.0)]
    sidecars = [json.loads(p.read_text()) for p in out.glob("samples_*.npz.json")]
    assert len(sidecars) == 6 and len({(p["seeds_sha256"], p["labels_sha256"]) for p in sidecars}) == 1  # same seeds
    table = (out / "table.md").read_text()
    assert table.count("### ") == 3 and "### ancestral(v=1), T=3" in table and "### ddim(eta=1), T=3" in table
    assert "### ancestral(v=0), T=3" in table and "sampler settings ancestral v=0.3; ddim eta=0" in table
    assert "eta=1.0" in (out / "sweep.csv").read_text()
    # v and η reach the samples: ddim at η = 1 is ancestral at v = 0 (Song et al. Eq. 16), v = 1 is not
    kept = {name: np.load(out / f"samples_{name}_w1.npz")["arr_0"] for name in ("ancestral_T3_v0", "ancestral_T3_v1",
                                                                                 "ddim_T3_eta1")}
    assert np.array_equal(kept["ddim_T3_eta1"], kept["ancestral_T3_v0"])
    assert not np.array_equal(kept["ancestral_T3_v1"], kept["ancestral_T3_v0"])
    # one more value computes only its rows
    capsys.readouterr()
    assert main(_sweep(run_and_ref, random_weights, out, "--sampler", "ancestral,ddim", "--v", "0,1,0.5",
                       "--eta", "1", "--keep-samples")) == 0
    assert capsys.readouterr().err.count("done earlier, skipped") == 6
    assert sorted(p.name for p in out.glob("samples_ancestral_T3_v0.5_*.npz")) == [
        "samples_ancestral_T3_v0.5_w0.npz", "samples_ancestral_T3_v0.5_w1.npz"]


@pytest.mark.parametrize("command", ["sample", "sweep"])
@pytest.mark.parametrize("flag,value,sampler", [("--eta", "0.5", "ancestral"), ("--v", "0", "ddim"),
                                                ("--eta", "0.5", "dpmpp-2m")])
def test_a_setting_of_a_sampler_not_used_is_one_line(command, flag, value, sampler, tmp_path, run_and_ref,
                                                     random_weights, capsys):  # noqa: F811
    run, _ = run_and_ref
    owner = "ddim" if flag == "--eta" else "ancestral"
    args = (_sweep(run_and_ref, random_weights, tmp_path / "x", "--sampler", sampler, flag, value)
            if command == "sweep" else
            ["sample", str(run), "--n", "2", "--steps", "3", "--sampler", sampler, flag, value,
             "--out", str(tmp_path / "s.npz")])
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"cfgdiff: error: {flag} applies to --sampler {owner}, and this command uses "
                                 f"--sampler {sampler}"]
    assert not (tmp_path / "x").exists() and not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("flag,bad", [("--v", "1.5"), ("--eta", "-0.1"), ("--v", "nan")])
def test_a_setting_out_of_its_bounds_is_one_usage_line(flag, bad, tmp_path, run_and_ref, capsys):
    run, _ = run_and_ref
    sampler = "ddim" if flag == "--eta" else "ancestral"
    code = main(["sample", str(run), "--n", "2", "--steps", "3", "--sampler", sampler, flag, bad,
                 "--out", str(tmp_path / "s.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"Invalid value for '{flag}'" in err[0], err
    assert not (tmp_path / "s.npz").exists()


def test_sample_records_the_sampler_settings_and_reads_files_written_before_them(tmp_path, run_and_ref, capsys):
    run, _ = run_and_ref
    out = tmp_path / "s.npz"
    args = ["sample", str(run), "--n", "2", "--steps", "3", "--v", "0.5", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["sampler"]["sampler_settings"] == [["v", 0.5]]
    images = np.load(out)["arr_0"].copy()
    sidecar = Path(str(out) + ".json")
    prov = json.loads(sidecar.read_text())
    # as cfgdiff wrote it before the settings were the samplers' own: v and η at the top level
    old = {k: v for k, v in prov["sampler"].items() if k != "sampler_settings"}
    prov["sampler"] = {**old, "v": 0.5, "eta": 0.0}
    owners = SampleOwners().for_job(prov)
    assert owners == SampleOwners().for_job(json.loads(sidecar.read_text()))  # the same job id as before
    write_json(sidecar, prov, owner=owners.of("provenance"))
    capsys.readouterr()
    assert main(args) == 0
    assert "complete already" in capsys.readouterr().err
    assert np.array_equal(np.load(out)["arr_0"], images)
    # another v is another job: refused, the file stays
    assert main([*args[:-4], "--v", "0.3", "--out", str(out)]) != 0
    assert np.array_equal(np.load(out)["arr_0"], images)


def test_a_sweep_folder_from_before_the_samplers_settings_resumes_without_recomputing(
        tmp_path, run_and_ref, random_weights, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "sw"
    args = _sweep(run_and_ref, random_weights, out, "--sampler", "ancestral,ddim", "--v", "0.5", "--eta", "1")
    assert main(args) == 0, capsys.readouterr().err
    # rewrite the folder as format 2 wrote it: v in every row, v and η shared in settings.json
    settings = json.loads((out / "settings.json").read_text())
    settings["format"] = 2
    settings["sampler"] = {"v": 0.5, "clip_x": True, "eta": 1.0, "rescale": 0.0, "threshold": 0.0}
    write_json(out / "settings.json", settings, indent=1, owner=OWNER)
    rows = _rows(out)
    for r in rows:
        r.pop("sampler_settings")
        r["v"] = 0.5
    write_text(out / "sweep.jsonl", "".join(json.dumps(r) + "\n" for r in rows), owner=OWNER)
    (out / "sweep.json").unlink()
    calls = []
    monkeypatch.setattr(sweep_mod, "sample_batch", lambda *a, **k: calls.append(a))
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    assert calls == [] and capsys.readouterr().err.count("done earlier, skipped") == 4
    # v = 0.3 is another line in the same folder: only its ancestral rows are new
    monkeypatch.undo()
    assert main([*args[:-4], "--v", "0.3", "--eta", "1"]) == 0
    rows = _rows(out)  # the format-2 rows stay as they were written (top-level v); the new ones carry theirs
    assert sorted((r["sampler"], r["sampler_settings"]["v"] if "sampler_settings" in r else r["v"]) for r in rows
                  if r["w"] == 0) == [("ancestral", 0.3), ("ancestral", 0.5), ("ddim", 0.5)]


def test_sampler_docs_table_is_current():
    doc = (REPO / "docs" / "sample.md").read_text()
    assert sampler_docs_table() in doc, "docs/sample.md's sampler settings table is stale: paste " \
                                        "cfgdiff.cli.methods.sampler_docs_table()"


# ---- a plug-in sampler, one file, one setting ------------------------------------------------------------------------
PLUGIN = textwrap.dedent('''
    from cfgdiff.diffusion.sampler import Sampler
    from cfgdiff.settings import Setting

    def _denoise_once(eps, lams, labels, noise, cfg):
        """x̂ at λ_min from one evaluation, scaled by the setting `gain`."""
        from cfgdiff.diffusion.schedule import alpha, sigma
        z = noise()
        lam = lams[0]
        return cfg.setting("gain") * (z - sigma(lam) * eps(z, float(lam), labels)) / alpha(lam)

    oneshot = Sampler("oneshot", _denoise_once, evaluations=lambda lams: [lams[0]], summary="denoise once",
                      settings=(Setting("gain", float, 1.0, (0.0, 2.0), "a gain on x̂"),))
''')


@pytest.mark.slow
def test_a_plugin_sampler_gets_flags_help_completions_axes_and_row_keys(tmp_path, run_and_ref, random_weights):  # noqa: F811
    cli = plugin_cli(tmp_path, "mysampler", PLUGIN, "[cfgdiff.samplers]\noneshot = mysampler:oneshot\n")
    assert "--oneshot-gain" in cli("sample", "--help").stdout and "--oneshot-gain" in cli("sweep", "--help").stdout
    comp = cli("write", str(tmp_path / "c"), entry="cfgdiff.cli.completions")
    assert comp.returncode == 0, comp.stderr
    assert all("oneshot-gain" in (tmp_path / "c" / f).read_text() for f in ("cfgdiff.bash", "_cfgdiff", "cfgdiff.fish"))
    out = tmp_path / "sw"
    r = cli(*_sweep(run_and_ref, random_weights, out, "--sampler", "oneshot", "--oneshot-gain", "0,1"))
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    assert sorted((r["sampler"], r["sampler_settings"]["gain"], r["w"], r["nfe"]) for r in rows) == [
        ("oneshot", 0.0, 0.0, 1), ("oneshot", 0.0, 1.0, 2), ("oneshot", 1.0, 0.0, 1), ("oneshot", 1.0, 1.0, 2)]
    r = cli(*_sweep(run_and_ref, random_weights, tmp_path / "bad", "--sampler", "oneshot", "--oneshot-gain", "3"))
    assert r.returncode == 2 and "--oneshot-gain" in r.stderr and "[0, 2]" in r.stderr
