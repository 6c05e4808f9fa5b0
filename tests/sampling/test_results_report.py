"""examples/cifar10_report.py, which turns the files examples/cifar10.sh writes into docs/results.md's
tables and figures: rows paired with their disjoint-seed twins, each line's best w by the mean FID of
the two sets, the autoguidance score files, the training facts. Inputs are written here in the
sweep's and score's own formats, with numbers chosen so that each aggregate is checked by hand."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "cifar10_report.py"


def _row(sampler: str, steps: int, w: float, fid: float, kid: float, settings: dict | None = None) -> dict:
    return {"sampler": sampler, "sampler_settings": settings or {}, "steps": steps, "grid": "paper",
            "guidance_interval": None, "guidance": "cfg", "guidance_settings": {}, "w": w,
            "nfe": steps * (2 if w else 1), "fid": fid, "kid": kid, "kid_std": 0.001, "precision": 0.5 + w / 10,
            "recall": 0.4 - w / 10, "n": 1000, "seconds": 12.5}


def _sweep(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _work(tmp_path: Path) -> tuple[Path, Path]:
    work, run = tmp_path / "work", tmp_path / "run"
    # the paper's sampler: FID at w = 0, 1 on seeds 1 and 2: (10, 12) and (8, 9): best w = 1, mean 8.5
    _sweep(work / "sweep-paper", [_row("ancestral", 256, 0, 10.0, 0.004, {"v": 0.3}),
                                  _row("ancestral", 256, 1, 8.0, 0.003, {"v": 0.3})])
    _sweep(work / "sweep-paper-seeds2", [_row("ancestral", 256, 0, 12.0, 0.006, {"v": 0.3}),
                                         _row("ancestral", 256, 1, 9.0, 0.005, {"v": 0.3})])
    # a fast solver without a twin: one value a cell, best w = 0 (20 < 21)
    _sweep(work / "sweep-2m-sde", [_row("dpmpp-2m-sde", 16, 0, 20.0, 0.010), _row("dpmpp-2m-sde", 16, 2, 21.0, 0.011)])
    (work / "autoguidance").mkdir()
    for w, seeds, fid in ((1, "0-999", 7.0), (1, "1000-1999", 7.5)):
        (work / "autoguidance" / f"w{w}-seeds{seeds}.json").write_text(
            json.dumps({"metrics": {"fid": fid, "kid": 0.002, "precision": 0.6, "recall": 0.3}}))
        (work / "autoguidance" / f"w{w}-seeds{seeds}.npz.json").write_text(json.dumps({"n": 1000}))  # sample's
    run.mkdir()
    ticks = [{"step": 32 * i, "kimg": 1.024 * i, "loss": 0.1 / i, "elapsed_s": 20.0 * i} for i in range(1, 181)]
    (run / "stats.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ticks))
    return work, run


def test_the_report_pairs_seed_sets_and_picks_each_lines_best_w(tmp_path):
    work, run = _work(tmp_path)
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, str(SCRIPT), str(work), str(run), "--out", str(out)], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    tables = (out / "tables.md").read_text()
    assert "| ancestral, T=256 | 0 | 256 | 10.00 / 12.00 | 4.00 / 6.00 | 0.500 | 0.400 | 12.5 |" in tables
    assert "| dpmpp-2m-sde, T=16 | 2 | 32 | 21.00 | 11.00 |" in tables  # no twin: one value
    assert "| 1 | 7.00 / 7.50 | 2.00 / 2.00 | 0.600 | 0.300 |" in tables  # autoguidance
    summary = tables.split("Each line at its best w")[1]
    assert "| sweep-paper | ancestral, T=256 | 1 | 512 | 8.50 (8.00 / 9.00) | 4.00 (3.00 / 5.00) | 0.600 | 0.300 |" in summary
    assert "| sweep-2m-sde | dpmpp-2m-sde, T=16 | 0 | 16 | 20.00 (20.00) |" in summary
    training = (out / "training.md").read_text()
    assert "184.32 kimg (step 5760), 1.00 h" in training and "loss 0.0006 (mean of the last 10 ticks)" in training
    for name in ("fid_vs_w.png", "fid_vs_nfe.png", "loss.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_best_w_is_by_the_mean_of_the_two_sets_not_the_first():
    spec = importlib.util.spec_from_file_location("cifar10_report", SCRIPT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    # w = 0 wins on seed set 1 (5 < 6) but loses on the mean (5, 9) = 7 > (6, 6) = 6
    pairs = {("k", 1.0): ({"fid": 6.0}, {"fid": 6.0}), ("k", 0.0): ({"fid": 5.0}, {"fid": 9.0})}

    class Key(tuple):
        w = property(lambda self: self[1])

    keyed = {Key(k): v for k, v in pairs.items()}
    report.line_of = lambda key: key[0]  # one line: every key's line is "k"
    (key, pair), = report.best_per_line(keyed).values()
    assert key.w == 1.0 and report.values(pair, "fid") == [6.0, 6.0]
