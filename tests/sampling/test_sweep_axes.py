"""`cfgdiff sweep` over several axes (issue 12 item 4) and self-describing (issue 16 item 3): a row's key
holds every axis, so one more value computes only the new rows; every row uses the same seeds and labels;
table.md is grouped by (sampler, steps); a finished sweep reruns without loading the model or Inception;
`--dry-run` prints the plan on stdout; `--json` is one envelope.

The network is an untrained tiny U-Net (`test_runs._saved_run`) and the Inception network has random
weights (`test_inception.random_weights`): real sampling and real scoring, small enough to be fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cfgdiff.cli import envelope
from cfgdiff.cli.app import main
from cfgdiff.sampling import sweep as sweep_mod
from cfgdiff.sampling import sweep_files

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.usefixtures("isolated_caches")]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def calls(monkeypatch):
    """Every sample_batch call of the sweep (its sampler config, seeds and labels), passed on to the real one."""
    seen = []
    real = sweep_mod.sample_batch

    def counting(model, seeds, labels, sampler, device, **kw):
        seen.append((sampler, list(seeds), list(labels)))
        return real(model, seeds, labels, sampler, device, **kw)

    monkeypatch.setattr(sweep_mod, "sample_batch", counting)
    return seen


def _args(run_and_ref, weights, out, *extra):
    run, ref = run_and_ref
    return ["sweep", str(run), "--n", "2", "--batch-per-device", "2", "--metrics", "pr", "--ref", str(ref), "--inception",
            str(weights[0]), "--out-dir", str(out), *extra]


def test_one_more_value_computes_only_the_new_rows_with_the_same_seeds(run_and_ref, random_weights, tmp_path, calls,
                                                                       capsys):  # noqa: F811
    out = tmp_path / "sw"
    args = _args(run_and_ref, random_weights, out, "--w", "0,1", "--steps", "3")
    assert main([*args, "--sampler", "ancestral"]) == 0
    first = {(c[0].sampler, c[0].steps, c[0].w) for c in calls}
    assert first == {("ancestral", 3, 0.0), ("ancestral", 3, 1.0)}
    assert calls[0][1:] == calls[1][1:] and calls[0][1] == [0, 1]  # seeds 0..n-1 and their labels, at every w
    calls.clear()
    capsys.readouterr()
    assert main([*args, "--sampler", "ancestral,ddim"]) == 0
    table_out = capsys.readouterr().out
    assert {(c[0].sampler, c[0].steps, c[0].w) for c in calls} == {("ddim", 3, 0.0), ("ddim", 3, 1.0)}
    lines = out.joinpath("sweep.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert [(r["sampler"], r["steps"], r["w"], r["nfe"]) for r in rows] == [
        ("ancestral", 3, 0.0, 3), ("ancestral", 3, 1.0, 6), ("ddim", 3, 0.0, 3), ("ddim", 3, 1.0, 6)]
    # each row names the hardware its wall time was measured on: here the CPU's model, one torch thread
    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    assert all(r["device"] == f"{cpu}, 1 thread" for r in rows) if cpu else all(r["device"] for r in rows)
    # the table on stdout, grouped: one heading per (sampler, steps), in that order
    assert table_out.index("### ancestral, T=3") < table_out.index("### ddim, T=3") < table_out.index("table.md:")
    table = out.joinpath("table.md").read_text()
    assert table.count("### ") == 2 and "n = 2" in table and "step 4" in table and "ref.npz" in table
    header = out.joinpath("sweep.csv").read_text().splitlines()[0].split(",")
    assert header[:9] == ["sampler", "sampler_settings", "steps", "grid", "guidance_interval", "guidance",
                          "guidance_settings", "w", "nfe"]


def test_every_combination_uses_the_same_seeds_and_labels(run_and_ref, random_weights, tmp_path, calls):  # noqa: F811
    args = _args(run_and_ref, random_weights, tmp_path / "sw", "--w", "2", "--sampler", "ancestral,dpmpp-2m",
                 "--steps", "3,2", "--seeds", "10,12")
    assert main(args) == 0
    assert sorted((c[0].sampler, c[0].steps) for c in calls) == [("ancestral", 2), ("ancestral", 3),
                                                                  ("dpmpp-2m", 2), ("dpmpp-2m", 3)]
    assert len({(tuple(s), tuple(lab)) for _, s, lab in calls}) == 1 and calls[0][1] == [10, 12]


def test_a_finished_sweep_reruns_without_loading_anything(run_and_ref, random_weights, tmp_path, monkeypatch,
                                                          capsys):  # noqa: F811
    args = _args(run_and_ref, random_weights, tmp_path / "sw", "--w", "0,1", "--steps", "2")
    assert main(args) == 0
    first = capsys.readouterr().out

    def refuse(*a, **k):
        raise AssertionError("a finished sweep loaded a model or Inception")

    import cfgdiff.metrics
    import cfgdiff.sampling.model

    monkeypatch.setattr(cfgdiff.sampling.model, "load_model", refuse)
    monkeypatch.setattr(cfgdiff.metrics, "load_detector", refuse, raising=False)
    assert main(args) == 0
    assert capsys.readouterr().out == first  # the same table and paths
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == set(envelope.KEYS) and doc["command"] == "sweep"
    assert [r["w"] for r in doc["results"]["rows"]] == [0.0, 1.0] and doc["results"]["computed"] == 0
    assert doc["provenance"]["checkpoint"]["step"] == 4 and doc["provenance"]["inception"]["sha256"]
    assert doc["outputs"]["fid_vs_nfe.png"].endswith("fid_vs_nfe.png")
    # as a user reruns it: the finished sweep is found without importing torch (start-up is most of the 2 s)
    code = ("import sys; from cfgdiff.cli.app import main; rc = main(sys.argv[1:]); "
            "sys.exit(rc or ('torch' in sys.modules and 'torch imported'))")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == first and r.stderr.count("done earlier, skipped") == 2
    # one more w is work again: the model loads
    with pytest.raises(AssertionError, match="loaded a model"):
        main([*args[:-4], "--w", "0,1,2", *args[-2:]])


def test_dry_run_prints_the_plan_and_writes_nothing(run_and_ref, random_weights, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "sw"
    args = _args(run_and_ref, random_weights, out, "--w", "0,1", "--sampler", "ancestral,heun", "--steps", "4")
    assert main([*args, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("plan: 4 of 4 rows to compute") and "heun, T=4, paper grid, w=1: NFE 14 per sample" in text
    assert "NFE = 66 in all" in text  # 2 samples × (4 + 8 + 7 + 14): T, 2T guided; heun 2T − 1, doubled
    assert not out.exists()
    assert main([*args, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["results"]["plan"]
    assert plan["nfe"] == 66 and plan["estimated_seconds"] > 0 and len(plan["rows_to_compute"]) == 4


def test_a_single_axis_sweep_folder_is_refused_in_one_line(run_and_ref, random_weights, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "old"
    out.mkdir()
    from cfgdiff.files import write_json
    from cfgdiff.sampling.sweep_files import OWNER

    write_json(out / "settings.json", {"checkpoint_sha256": "x", "sampler": {"steps": 2}}, owner=OWNER)
    assert main(_args(run_and_ref, random_weights, out, "--w", "0", "--steps", "2")) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "older cfgdiff" in err[0] and not (out / "sweep.jsonl").exists()


# ---- autoguidance (--guide-with): the guide is every row's, recorded and checked --------------------------------
def _perturbed_copy(run: Path, dest: Path, seed: int) -> Path:
    """The run's newest EMA file with noise of std 0.05 added to every weight (seeded) under another name:
    an untrained net predicts ε = 0 (its last layer is zero), this one depends on z and the label. Equal
    seeds give equal numbers; other seeds, a guide with the same classes, resolution and λ range."""
    import torch

    from cfgdiff.runs import atomic_save, resolve_weights_file

    state = torch.load(resolve_weights_file(run), map_location="cpu", weights_only=False)
    g = torch.Generator().manual_seed(seed)
    state["ema"] = {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                    for k, v in state["ema"].items()}
    atomic_save(state, dest)
    return dest


def test_guided_by_the_network_itself_every_row_is_the_unguided_draw(run_and_ref, random_weights, tmp_path):  # noqa: F811
    """Autoguidance with the main network as its own guide: ε̃ = (1 + w) ε(z, c) − w ε(z, c) = ε(z, c), so each
    row's kept samples are w = 0's (to float rounding); plain CFG at w = 3 is far from them."""
    run, ref = run_and_ref
    main_net, same = (_perturbed_copy(run, tmp_path / name, 1) for name in ("main.pt", "same.pt"))
    args = _args((main_net, ref), random_weights, tmp_path / "g", "--w", "0,3", "--steps", "3", "--sampler", "ddim",
                 "--keep-samples")
    assert main([*args, "--guide-with", str(same)]) == 0
    assert main([*_args((main_net, ref), random_weights, tmp_path / "c", "--w", "3", "--steps", "3", "--sampler",
                        "ddim", "--keep-samples")]) == 0
    with np.load(tmp_path / "g" / "samples_ddim_T3_w0.npz") as a, np.load(tmp_path / "g" / "samples_ddim_T3_w3.npz") as b, \
            np.load(tmp_path / "c" / "samples_ddim_T3_w3.npz") as c:
        plain, guided, cfg = (f["arr_0"].astype(int) for f in (a, b, c))
    assert np.abs(guided - plain).max() <= 1
    assert np.abs(cfg - plain).mean() > 5  # so the check above can fail
    rows = [json.loads(x) for x in (tmp_path / "g" / "sweep.jsonl").read_text().splitlines()]
    assert [r["nfe"] for r in rows] == [3, 6]  # the guide's pass counts as the ∅ pass would


def test_a_guided_row_is_what_sample_draws_with_the_same_guide(run_and_ref, random_weights, tmp_path, capsys,
                                                               monkeypatch):  # noqa: F811
    run, ref = run_and_ref
    main_net, guide = _perturbed_copy(run, tmp_path / "main.pt", 1), _perturbed_copy(run, tmp_path / "guide.pt", 2)
    out = tmp_path / "sw"
    args = _args((main_net, ref), random_weights, out, "--w", "2", "--steps", "3", "--sampler", "dpmpp-2m",
                 "--keep-samples", "--seeds", "7,9", "--guide-with", str(guide))
    assert main(args) == 0
    assert main(["sample", str(main_net), "--guide-with", str(guide), "--w", "2", "--steps", "3", "--sampler", "dpmpp-2m",
                 "--n", "2", "--seeds", "7,9", "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(out / "samples_dpmpp-2m_T3_w2.npz") as a, np.load(tmp_path / "s.npz") as b:
        drawn = b["arr_0"]
        assert np.array_equal(a["arr_0"], drawn)
    # unkept, the samples stream into Inception: the images scored are the same
    scored = []
    real = sweep_mod.sample_batch
    monkeypatch.setattr(sweep_mod, "sample_batch", lambda *a, **k: scored.append(real(*a, **k)) or scored[-1])
    streamed = [str(tmp_path / "unkept") if x == str(out) else x for x in args if x != "--keep-samples"]
    assert main(streamed) == 0
    assert len(scored) == 1 and np.array_equal(scored[0], drawn)
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["meta"]["guide"]["path"] == str(guide) and len(summary["meta"]["guide"]["sha256"]) == 64
    assert f"guide (autoguidance, in place of the ∅ pass): `{guide}`" in (out / "table.md").read_text()
    capsys.readouterr()
    # the folder is this guide's: another guide, or none, is refused in one line and computes nothing
    other = _perturbed_copy(run, tmp_path / "other.pt", 3)
    for swap in (["--guide-with", str(other)], []):
        assert main([*args[:-2], *swap, "--w", "2,4"]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "other settings (checkpoint, guide," in err[0], err
    assert [json.loads(x)["w"] for x in (out / "sweep.jsonl").read_text().splitlines()] == [2.0]


# ---- table, plots and report from rows alone (no model) -----------------------------------------------------------
def _synthetic_rows():
    """Two samplers × two T over 51 w values; FID(w) = a + (w − b)², so each line's best w is b (the oracle)."""
    rows, best = {}, {}
    for sampler, steps, a, b, nfe in [("ancestral", 256, 5.0, 1.2, 256), ("ancestral", 16, 9.0, 2.0, 16),
                                      ("dpmpp-2m", 16, 6.0, 1.6, 16), ("dpmpp-2m", 8, 8.0, 0.4, 8)]:
        for w in np.round(np.linspace(0, 4, 51), 2):
            row = {"sampler": sampler, "steps": steps, "grid": "paper", "guidance_interval": None, "w": float(w),
                   "nfe": nfe * (2 if w > 0 else 1), "fid": a + (w - b) ** 2, "precision": 0.5, "n": 8}
            rows[sweep_files.row_key(row)] = row
        best[(sampler, steps)] = (b, a)
    return rows, best


def test_table_is_grouped_by_sampler_and_steps_and_plots_mark_each_lines_best(tmp_path):
    from PIL import Image

    from cfgdiff.sampling.report import best_per_line, write_plots

    rows, best = _synthetic_rows()
    got = {(line.sampler, line.steps): (r["w"], r["fid"]) for line, r in best_per_line(rows).items()}
    assert got.keys() == best.keys() and all(got[k] == pytest.approx(best[k]) for k in best)
    table = sweep_files.markdown_table(rows)
    headings = [ln for ln in table.splitlines() if ln.startswith("### ")]
    assert headings == ["### ancestral, T=16", "### ancestral, T=256", "### dpmpp-2m, T=8", "### dpmpp-2m, T=16"]
    assert table.count("\n| 1.2 | 512 | 5.00 |") == 1  # ancestral T=256 at its best w: NFE 2T
    for path in write_plots(rows, tmp_path, "n=8 per row"):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 600


def test_demo_report_carries_the_sweep_metadata(tmp_path):
    from cfgdiff.config import DemoConfig
    from cfgdiff.demo import tradeoff_checks, write_report

    rows = {w: {"w": w, "nfe": 32 if w == 0 else 64, "fid": 10 - w, "precision": 0.5 + w / 10, "recall": 0.5 - w / 10}
            for w in (0.0, 1.0)}
    meta = {"n": 200, "seeds": "0-199", "labels": "balanced",
            "checkpoint": {"path": "demo/runs/shapes16-tiny/ema-00000938.pt", "step": 938, "kimg": 60.0, "sha256": "ab" * 32},
            "reference": {"path": "demo/reference/shapes16.h5", "sha256": "cd" * 32},
            "inception": {"path": "weights.pth", "sha256": "ef" * 32}}
    checks = tradeoff_checks(rows)
    text = write_report(tmp_path, DemoConfig(), {"kimg": 60.0, "loss": 0.1}, rows, checks, meta).read_text()
    assert checks == {"precision_rises": True, "recall_falls": True}
    for needle in ("ancestral with v = 0.3, T = 32", "step 938", "`abababababababab…`", "shapes16.h5", "weights.pth", "| 1 | 64 |"):
        assert needle in text, needle


def test_table_shows_kid_times_1000_with_its_std_and_na_when_absent():
    """KID is unbiased at small n (the number to read at 2000 samples): the table shows it ×10³ ± its
    subset std, and n/a for a row scored without it."""
    base = {"sampler": "dpmpp-2m", "steps": 20, "grid": "paper", "guidance_interval": None, "nfe": 40,
            "fid": 50.0, "precision": 0.5, "recall": 0.4}
    rows = {("a",): {**base, "w": 0.3, "kid": 0.012345, "kid_std": 0.000678},
            ("b",): {**base, "w": 1.0, "kid": None, "kid_std": None}}
    table = sweep_files.markdown_table(rows)
    assert "| w | NFE | FID | KID ×10³ | IS | precision | recall |" in table
    assert "| 0.3 | 40 | 50.00 | 12.35 ± 0.68 | n/a | 0.500 | 0.400 |" in table
    assert "| 1 | 40 | 50.00 | n/a | n/a | 0.500 | 0.400 |" in table


def test_progress_rounds_count_every_ranks_images_once():
    """Rank 0's bar advances by what all ranks finished in a round. Hand-worked: 100 images in batches
    of 250 on 2 ranks is one round of 100 (rank 1 has no batch; the old `batch × world` showed
    200/100); 1000 in 300s on 2 ranks: rank 0 has batches 0 and 1, rank 1 batches 2 and 3 (300 and
    100), so rounds of 600 and 400. Every split sums to n."""
    from cfgdiff.sampling.sweep import round_images

    assert round_images(100, 250, 2) == [100]
    assert round_images(1000, 250, 2) == [500, 500]
    assert round_images(1000, 300, 2) == [600, 400]
    assert round_images(7, 2, 3) == [4, 3]  # batches 2,2,2,1; per = 2: rank 0 {0,1}, rank 1 {2,3}, rank 2 none
    for n, b, w in [(1, 1, 4), (999, 64, 8), (50000, 256, 3), (10, 3, 1)]:
        assert sum(round_images(n, b, w)) == n
