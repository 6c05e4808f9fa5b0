"""The metrics table is the one contract: `score`, `--metrics`, the results JSON and the sweep's columns read it;
a metric that cannot be computed is n/a with its reason and the others are kept (issues 13, 15, 16)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from cfgdiff.cli.app import main
from cfgdiff.metrics import registry
from cfgdiff.config import ScoreConfig
from cfgdiff.sampling.report import plot_axes, write_plot
from cfgdiff.metrics.score import resolved_ref
from cfgdiff.sampling.sweep_files import columns, write_rows
from cfgdiff.metrics import sources
from support import random_images

pytestmark = pytest.mark.usefixtures("isolated_caches")  # no shared cache (conftest.py)


def _trace(gen, ref, opts):
    return (float(np.trace(gen.pool.sigma)),)


@pytest.fixture
def extra_row(monkeypatch):
    """A dummy metric registered the way a new one would be: one row, one function."""
    monkeypatch.setitem(registry.METRICS, "trace", registry.Metric("trace", ("trace",), ("tr Σ",), False, (), _trace))


def test_sweep_csv_has_a_column_for_every_row(tmp_path, extra_row):
    keys = [k for m in registry.METRICS.values() for k in m.keys]
    assert "trace" in keys and set(keys) <= set(columns())
    rows = {0.0: {"w": 0.0, "fid": 3.0, "trace": 7.5, "n": 2}, 1.0: {"w": 1.0, "fid": 2.0, "trace": None, "n": 2}}
    write_rows(tmp_path, rows)
    with open(tmp_path / "sweep.csv") as f:
        read = list(csv.DictReader(f))
    assert set(keys) <= set(read[0]) and read[0]["trace"] == "7.5" and read[1]["trace"] == ""


def test_registered_row_reaches_the_results_json_and_the_plain_output(tmp_path, capsys, extra_row, monkeypatch,
                                                                       random_weights):  # noqa: F811
    sigma = np.diag(np.arange(1.0, 17.0))  # stored statistics of dimension D = 16 (the network's, for this test)
    monkeypatch.setattr(sources, "STATS_DIMS", {"mu": 16, "mu_s": 16})  # small statistics for the plumbing
    np.savez(tmp_path / "gen.npz", mu=np.zeros(16), sigma=sigma)
    np.savez(tmp_path / "ref.npz", mu=np.ones(16), sigma=sigma)
    args = ["score", str(tmp_path / "gen.npz"), "--ref", str(tmp_path / "ref.npz"), "--inception",
            str(random_weights[0])]
    assert main([*args, "--metrics", "trace,fid", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["results"]
    assert record["metrics"]["trace"] == pytest.approx(16 * 17 / 2)  # Σ 1..16, the closed form
    assert record["metrics"]["fid"] == pytest.approx(16.0)  # ‖1 − 0‖² with equal covariances
    assert main([*args, "--metrics", "trace", "--results", str(tmp_path / "r.json")]) == 0
    assert capsys.readouterr().out == f"tr Σ\t{16 * 17 / 2:.6g}\n"


def test_unknown_metric_lists_the_table(capsys):
    assert main(["score", "x.npz", "--metrics", "fid,lpips", "--ref", "x.npz"]) == 2
    assert f"choose from {','.join(registry.names())}" in capsys.readouterr().err


def _folder(path, images):
    path.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(path / f"{i}.png")
    return path


@pytest.mark.slow
def test_too_few_for_precision_keeps_fid_and_defaults_ref_to_the_training_set(tmp_path, capsys,
                                                                              random_weights):  # noqa: F811
    weights = str(random_weights[0])
    ref = _folder(tmp_path / "train-set", random_images(4, seed=1))
    np.savez(tmp_path / "s.npz", arr_0=random_images(3, seed=2))  # 3 samples: precision/recall with k = 3 needs 4
    (tmp_path / "s.npz.json").write_text(json.dumps({"dataset": str(ref), "n": 3}))  # as `sample` records it
    assert main(["score", str(tmp_path / "s.npz"), "--inception", weights, "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    record = {**doc["results"], **doc["provenance"]}
    m = record["metrics"]
    assert record["reference"]["path"] == str(ref) and "recorded in" in record["reference"]["default"]
    assert m["fid"] > 0 and m["precision"] is None and "more than 3 features" in m["unavailable"]["pr"]
    assert m["counts"] == {"samples": 3, "reference": 4}
    assert len(record["warnings"]) == 1 and "3 samples" in record["warnings"][0]
    assert f"cfgdiff: warning: {record['warnings'][0]}" in captured.err.splitlines()

    # asked for explicitly: the command fails with one line, and the FID is still written
    out = tmp_path / "r.json"
    code = main(["score", str(tmp_path / "s.npz"), "--inception", weights, "--metrics", "fid,pr",
                 "--results", str(out)])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("cfgdiff: error")]
    assert code == 1 and len(errors) == 1 and "pr not computed" in errors[0] and str(out) in errors[0]
    assert json.loads(out.read_text())["metrics"]["fid"] == pytest.approx(m["fid"], rel=1e-9)

    # the recorded dataset moved away: no reference, and a warning that says so
    (tmp_path / "s.npz.json").write_text(json.dumps({"dataset": str(tmp_path / "gone.h5")}))
    ref_path, warning = resolved_ref(ScoreConfig(samples=str(tmp_path / "s.npz")))
    assert ref_path is None and "gone.h5" in warning and "scoring without a reference" in warning
    assert resolved_ref(ScoreConfig(samples=str(tmp_path / "s.npz"), ref="r.npz")) == ("r.npz", None)


def test_fewer_than_two_samples_only_with_force(tmp_path, capsys, random_weights):  # noqa: F811
    np.savez(tmp_path / "one.npz", arr_0=random_images(1))
    args = ["score", str(tmp_path / "one.npz"), "--inception", str(random_weights[0])]
    assert main(args) == 1
    assert not (tmp_path / "one.score.json").exists()
    capsys.readouterr()
    assert main([*args, "--force", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["results"]["metrics"]
    assert m["is_mean"] is None and "at least one image per split" in m["unavailable"]["is"]


# ---- plots ------------------------------------------------------------------------------------------------------
def _rows(n, **keys):
    ws = np.linspace(0, 4, n)
    return {float(w): {"w": float(w), "fid": 30 - 10 * np.exp(-((w - 1) ** 2)), **{k: f(w) for k, f in keys.items()}}
            for w in ws}


@pytest.mark.parametrize("rows,xkey", [
    (_rows(51, is_mean=lambda w: 10 + 20 * w, precision=lambda w: 0.5), "is_mean"),
    (_rows(5, is_mean=lambda w: None, precision=lambda w: 0.5 + w / 10), "precision"),  # no IS head
    (_rows(5, is_mean=lambda w: None, precision=lambda w: None), "w"),  # statistics-only ref, no IS head
    ({0.0: {"w": 0.0, "fid": None}, 1.0: {"w": 1.0}}, "w"),  # no FID at all
])
def test_plot_never_fails_on_a_missing_metric(tmp_path, rows, xkey):
    assert plot_axes(rows)[0] == xkey
    path = write_plot(rows, tmp_path / "p.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300


def test_score_shows_kid_times_1000_as_the_sweep_and_report_do(tmp_path, capsys, random_weights):  # noqa: F811
    """The terminal shows KID ×10³ (its label says so); the results file keeps the raw value."""
    np.savez(tmp_path / "gen.npz", arr_0=random_images(6, seed=3))
    np.savez(tmp_path / "ref.npz", arr_0=random_images(6, seed=4))
    assert main(["score", str(tmp_path / "gen.npz"), "--ref", str(tmp_path / "ref.npz"), "--inception",
                 str(random_weights[0]), "--metrics", "kid", "--results", str(tmp_path / "r.json")]) == 0
    shown = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    raw = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert float(shown["KID ×10³"]) == pytest.approx(1e3 * raw["kid"], rel=1e-5)
    assert float(shown["KID std ×10³"]) == pytest.approx(1e3 * raw["kid_std"], rel=1e-5)
