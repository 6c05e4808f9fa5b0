"""examples/cifar10_report.py, which turns the files examples/cifar10.sh writes into docs/results.md's
tables and figures: rows joined with their disjoint seed sets (NAME-seeds2, -seeds3, ...), each line's best
w by the mean FID over the sets, the standard deviation from three sets on, each method at its best, the
training facts. Inputs are written here in the sweep's own format, with numbers chosen so that each
aggregate is checked by hand."""

from __future__ import annotations

import importlib.util
import json
import shutil
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
    # autoguidance, a sweep folder like the others (made with --guide-with)
    _sweep(work / "sweep-autoguidance", [_row("dpmpp-2m", 20, 1, 7.0, 0.002)])
    _sweep(work / "sweep-autoguidance-seeds2", [_row("dpmpp-2m", 20, 1, 7.5, 0.002)])
    # the fast curve: w = 0 on one set (30), w = 1 on three: FID 10, 12, 14 (mean 12, std 2, range 4),
    # KID 5, 6, 7 (×10³: mean 6, std 1)
    _sweep(work / "sweep", [_row("dpmpp-2m", 20, 0, 30.0, 0.020),
                            {**_row("dpmpp-2m", 20, 1, 10.0, 0.005), "device": "AMD EPYC, 2 threads"}])
    # precision 0.60, 0.62, 0.64 (std 0.02), recall 0.30, 0.33, 0.36 (std 0.03)
    _sweep(work / "sweep-seeds2", [{**_row("dpmpp-2m", 20, 1, 12.0, 0.006), "precision": 0.62, "recall": 0.33}])
    _sweep(work / "sweep-seeds3", [{**_row("dpmpp-2m", 20, 1, 14.0, 0.007), "precision": 0.64, "recall": 0.36}])
    run.mkdir()
    ticks = [{"step": 32 * i, "kimg": 1.024 * i, "loss": 0.1 / i, "elapsed_s": 20.0 * i} for i in range(1, 181)]
    (run / "stats.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ticks))
    return work, run


def test_the_report_joins_seed_sets_and_picks_each_lines_best_w(tmp_path):
    work, run = _work(tmp_path)
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, str(SCRIPT), str(work), str(run), "--out", str(out)], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    tables = (out / "tables.md").read_text()
    assert "| ancestral, T=256 | 0 | 256 | 10.00 / 12.00 | 4.00 / 6.00 | 0.500 | 0.400 | 12.5 |" in tables
    assert "| dpmpp-2m-sde, T=16 | 2 | 32 | 21.00 | 11.00 |" in tables  # no twin: one value
    assert "| dpmpp-2m, T=20 | 1 | 40 | 7.00 / 7.50 | 2.00 / 2.00 | 0.600 | 0.300 | 12.5 |" in tables  # autoguidance
    assert "| dpmpp-2m, T=20 | 1 | 40 | 10.00 / 12.00 / 14.00 | 5.00 / 6.00 / 7.00 |" in tables
    assert "measured on: AMD EPYC, 2 threads (1 row); not recorded (1 row)." in tables.split("### sweep\n")[1]
    assert "### sweep-seeds2" not in tables and "### sweep-autoguidance-seeds2" not in tables  # sets, not sweeps
    noise, summary = tables.split("Seed spread")[1].split("Each line at its best w")
    assert noise.count("| sweep") == 1 + 1 and "| sweep | dpmpp-2m, T=20 | 1 | 3 | 12.00 | 2.00 | 4.00 | 6.00 | 1.00 | 0.020 | 0.030 |" in noise
    summary, methods = summary.split("at its best setting and w")
    assert ("| sweep-paper | ancestral, T=256 | 1 | 512 | 2 | 8.50 (8.00 / 9.00) | 4.00 (3.00 / 5.00) | 0.600 | 0.300 "
            "| 12.5 |") in summary
    assert "| sweep-2m-sde | dpmpp-2m-sde, T=16 | 0 | 16 | 1 | 20.00 (20.00) | 10.00 (10.00) |" in summary
    assert "| sweep | dpmpp-2m, T=20 | 1 | 40 | 3 | 12.00 ± 2.00 (10.00 / 12.00 / 14.00) | 6.00 ± 1.00 (5.00 / 6.00 / 7.00) |" \
        in summary
    methods, cost = methods.split("### Cost")
    # sweep: 2 rows on set 1 (1 with a device), 1 on each of sets 2, 3; n = 1000, NFE 20 and 40; 12.5 s each
    assert "| sweep | AMD EPYC, 2 threads | 1 | 1,000 | 40,000 | 0.2 min | 12 |" in cost
    assert "| sweep | not recorded | 3 | 3,000 | 100,000 | 0.6 min | 12 |" in cost
    assert methods.count("| sweep") == 1 + 4 and "| sweep-autoguidance | dpmpp-2m, T=20 | 1 | 40 | 2 | 7.25 (7.00 / 7.50) |" in methods
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



def test_a_methods_best_setting_is_the_searchs_pick_on_seed_set_1_not_a_mean_over_unequal_sets():
    spec = importlib.util.spec_from_file_location("cifar10_report", SCRIPT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)

    class Key(tuple):
        w = property(lambda self: self[1])

    # the search ran lines a and b on set 1; a won (5 < 6) and got set 2 (9): its mean, 7, is above b's
    # single value 6, but b was never measured on set 2, so a stays the pick (at its best w, 1)
    pairs = {Key(("a", 1.0)): ({"fid": 5.0}, {"fid": 9.0}), Key(("a", 2.0)): ({"fid": 8.0}, {"fid": 10.0}),
             Key(("b", 1.0)): ({"fid": 6.0}, None)}
    report.line_of = lambda key: key[0]
    key, pair = report.best_per_folder(pairs)
    assert key == ("a", 1.0) and report.values(pair, "fid") == [5.0, 9.0]

def test_error_bars_are_the_std_from_three_sets_and_the_range_of_two():
    spec = importlib.util.spec_from_file_location("cifar10_report", SCRIPT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    assert report._bar([10.0, 12.0, 14.0], 10.0) == (2.0, 2.0)  # sample std: sqrt((4 + 0 + 4) / 2), about y
    assert report._bar([1.0, 2.0, 3.0, 6.0], 1.0) == (2.160246899469287, 2.160246899469287)  # sqrt(14 / 3)
    assert report._bar([8.0, 9.0], 8.0) == (0.0, 1.0) and report._bar([7.0, 10.0], 8.5) == (1.5, 1.5)  # the range
    assert report._bar([5.0], 5.0) == (0.0, 0.0)


def test_a_curve_averages_only_the_seed_sets_all_its_points_have():
    spec = importlib.util.spec_from_file_location("cifar10_report", SCRIPT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    # w = 0 on set 1 only, w = 1 on sets 1..3: the line is set 1's values; the extra sets only make bars
    pairs = [({"fid": 30.0},), ({"fid": 10.0}, {"fid": 12.0}, {"fid": 14.0})]
    assert report.curve(pairs) == [30.0, 10.0]
    # both points on sets 1 and 2 (set 3 missing at w = 0, NaN counts as missing): the mean of sets 1, 2
    pairs = [({"fid": 30.0}, {"fid": 34.0}, {"fid": float("nan")}), ({"fid": 10.0}, {"fid": 12.0}, {"fid": 14.0})]
    assert report.curve(pairs) == [32.0, 11.0]
    # points on disjoint sets (set 1 failed on one: NaN, None, absent or no row) share none: each is the
    # mean of its own
    for failed in ({"fid": float("nan")}, {"fid": None}, {}, None):
        assert report.curve([({"fid": 30.0},), (failed, {"fid": 12.0}, {"fid": 14.0})]) == [30.0, 13.0]


def test_fig3_puts_the_grid_previews_side_by_side_in_order_of_w(tmp_path):
    import numpy as np

    from cfgdiff.images import save_grid

    spec = importlib.util.spec_from_file_location("cifar10_report", SCRIPT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    (tmp_path / "grid").mkdir()
    for w in (4, 0.3, 0):  # written out of order; w10 would sort before w4 as text
        save_grid(np.full((16, 8, 8, 3), 40 * w, np.uint8), tmp_path / "grid" / f"w{w:g}.png", 4)
    save_grid(np.zeros((16, 8, 8, 3), np.uint8), tmp_path / "grid" / "w10.png", 4)
    assert report.fig3(tmp_path / "grid", [1, 3], ["a", "b", "c", "d"], tmp_path / "fig3.png") == [0.0, 0.3, 4.0, 10.0]
    with Image.open(tmp_path / "fig3.png") as im:
        assert im.format == "PNG" and im.size[0] > 2 * im.size[1]  # four panels in a row
    assert report.fig3(tmp_path / "none", [1], [], tmp_path / "x.png") == [] and not (tmp_path / "x.png").exists()


def test_refresh_page_replaces_each_marked_table_with_the_reports_and_keeps_the_prose(tmp_path):
    spec = importlib.util.spec_from_file_location("cifar10_report", SCRIPT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    (tmp_path / "tables.md").write_text("### a\n\n| x |\n| --- |\n| 1 |\n\n### b\n\n| y |\n| --- |\n| 2 |\n| 3 |\n")
    (tmp_path / "width.md").write_text("| z |\n| 9 |\n")
    page = ("# p\n\nprose 1\n<!-- report: tables.md#b -->\n\n| y |\n| old |\n\nprose 2\n"
            "<!-- report: width.md -->\n| z |\n\n<!-- report: tables.md#a -->\n| x |\n| --- |\n| 0 |\nend\n"
            "<!-- report: width.md -->\nprose 3\n")
    # prose right after a table would read as one more row of it (GFM): a blank line ends each table
    assert report.refresh_page(page, tmp_path) == (
        "# p\n\nprose 1\n<!-- report: tables.md#b -->\n\n| y |\n| --- |\n| 2 |\n| 3 |\n\nprose 2\n"
        "<!-- report: width.md -->\n| z |\n| 9 |\n\n<!-- report: tables.md#a -->\n| x |\n| --- |\n| 1 |\n\nend\n"
        "<!-- report: width.md -->\n| z |\n| 9 |\n\nprose 3\n")


def _load_report():
    spec = importlib.util.spec_from_file_location("cifar10_report", SCRIPT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    return report


def test_each_kind_of_line_lands_in_its_own_plot(tmp_path):
    """Samplers' CFG, the methods against w beside CFG on their sampler, CFG++ against its λ beside CFG's
    best on its sampler: every kind of folder the script writes, each placed by its rows and sweep.json."""
    work = tmp_path / "work"

    def method(sampler, steps, w, fid, **axes):
        return {**_row(sampler, steps, w, fid, 0.01), **axes}

    _sweep(work / "sweep-2m-sde", [_row("dpmpp-2m-sde", 16, 0, 50.0, 0.01), _row("dpmpp-2m-sde", 16, 1, 44.0, 0.01)])
    _sweep(work / "sweep-apg", [method("dpmpp-2m-sde", 16, 1, 46.0, guidance="apg", guidance_settings={"eta": 1.0})])
    _sweep(work / "sweep-interval", [method("dpmpp-2m-sde", 16, 2, 45.0, guidance_interval=[-3.4, 2.6])])
    _sweep(work / "sweep-autoguidance-80", [_row("dpmpp-2m-sde", 16, 1, 55.0, 0.01)])
    (work / "sweep-autoguidance-80" / "sweep.json").write_text(json.dumps({"meta": {"guide": {"kimg": 80.0}}}))
    _sweep(work / "sweep-ddim", [_row("ddim", 20, 0, 90.0, 0.05), _row("ddim", 20, 2, 70.0, 0.04)])
    _sweep(work / "sweep-ddim-seeds2", [_row("ddim", 20, 0, 92.0, 0.05), _row("ddim", 20, 2, 74.0, 0.04)])
    _sweep(work / "sweep-cfgpp", [method("ddim", 20, 0.4, 65.0, guidance="cfgpp")])
    _sweep(work / "sweep-paper", [_row("ancestral", 256, 1, 40.0, 0.01, {"v": 0.3})])
    report = _load_report()
    folders = {p.name: report.paired_rows(p) for p in report.sweep_folders(work)}
    guides = {n: g for n in folders if (g := report.folder_guide(work / n)) is not None}
    assert guides == {"sweep-autoguidance-80": {"kimg": 80.0}}
    groups = report.plot_groups(folders, guides)
    labels = {k: [c.label for c in v] for k, v in groups.items()}
    assert labels["samplers"] == ["sweep-2m-sde: dpmpp-2m-sde, T=16", "sweep-ddim: ddim, T=20",
                                  "sweep-paper: ancestral, T=256"]
    assert labels["methods"] == [  # CFG on the methods' sampler first; ddim's CFG goes with CFG++, not here
        "sweep-2m-sde: dpmpp-2m-sde, T=16 (CFG)",
        "sweep-apg: dpmpp-2m-sde, T=16, apg(eta=1, momentum=-0.75, norm_threshold=2.5)",
        "sweep-autoguidance-80: dpmpp-2m-sde, T=16, autoguidance, guide: the 80-kimg EMA",
        "sweep-interval: dpmpp-2m-sde, T=16, λ∈[-3.4, 2.6]"]
    assert labels["cfgpp"] == ["sweep-cfgpp: ddim, T=20, cfgpp"]
    assert [c.xs for c in groups["samplers"]] == [[0.0, 1.0], [0.0, 2.0], [1.0]]
    # CFG is marked by a flag, not read off its label: the samplers and the CFG beside the methods only
    assert [c.cfg for c in groups["samplers"]] == [True] * 3
    assert [c.cfg for c in groups["methods"]] == [True, False, False, False]
    # CFG's level on CFG++'s sampler: ddim's best w by the mean of its two sets, (70 + 74) / 2 = 72
    assert report.cfgpp_levels(folders) == [("sweep-ddim: ddim, T=20, CFG at its best w = 2", 72.0)]
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, str(SCRIPT), str(work), str(tmp_path / "run"), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    with Image.open(out / "methods_vs_w.png") as im:
        assert im.format == "PNG" and im.size[1] > im.size[0] / 2  # two panels, one above the other


def test_the_zoom_panel_spans_cfgs_curve_and_every_lines_lowest_point():
    spec = importlib.util.spec_from_file_location("cifar10_report", SCRIPT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    # CFG from 50 to 64 (one set a point), a method from 43 to 200: the window is [43, 64] widened by
    # 5% of its 21 FID plus 1 (2.05), so the method's 200 leaves the panel and its 43 stays in it
    cfg = report.Curve("s: line", [0.0, 4.0], [({"fid": 50.0},), ({"fid": 64.0},)], cfg=True)
    method = report.Curve("s: line, apg (CFG)", [1.0, 4.0], [({"fid": 43.0},), ({"fid": 200.0},)])
    lo, hi = report.zoom_window([cfg, method])
    assert abs(lo - 40.95) < 1e-9 and abs(hi - 66.05) < 1e-9
    assert report.zoom_window([method]) is None  # no CFG to scale by (whatever the label says): no zoom panel



FAILED_SCORES = ({"fid": float("nan"), "kid": float("nan"), "precision": float("nan"), "recall": float("nan")},
                 {"fid": None, "kid": None, "precision": None, "recall": None}, "absent")


def test_a_failed_score_in_any_row_leaves_the_report_whole(tmp_path):
    """The class: a row whose scores failed (NaN, null or absent, as a sweep interrupted between sampling and
    scoring or a diverged sampler leaves them). Generated over every row of every sweep file of the fixture
    (samplers, seed sets, every guidance method, CFG++), one at a time, cycling through the three kinds: the
    report writes every table and figure, and the row reads n/a."""
    work, run = _work(tmp_path / "base")

    def method(sampler, steps, w, fid, **kw):
        return {**_row(sampler, steps, w, fid, 0.01), **kw}

    _sweep(work / "sweep-apg", [method("dpmpp-2m-sde", 16, 1, 46.0, guidance="apg", guidance_settings={"eta": 1.0}),
                                method("dpmpp-2m-sde", 16, 2, 44.0, guidance="apg", guidance_settings={"eta": 1.0})])
    _sweep(work / "sweep-interval", [method("dpmpp-2m-sde", 16, 2, 45.0, guidance_interval=[-3.4, 2.6])])
    _sweep(work / "sweep-cfgpp", [method("ddim", 20, 0.4, 65.0, guidance="cfgpp"),
                                  method("ddim", 20, 0.8, 60.0, guidance="cfgpp")])
    _sweep(work / "sweep-ddim", [_row("ddim", 20, 0, 90.0, 0.05), _row("ddim", 20, 2, 70.0, 0.04)])
    report = _load_report()
    files = sorted(work.glob("*/sweep.jsonl"))
    cases = [(f, i) for f in files for i in range(len(f.read_text().splitlines()))]
    assert len(cases) == 19  # every row of the fixture, so that a new fixture row is generated too
    for n, (file, i) in enumerate(cases):
        case = tmp_path / f"case{n}"
        shutil.copytree(work, case / "work")
        target = case / "work" / file.parent.name / "sweep.jsonl"
        rows = [json.loads(line) for line in target.read_text().splitlines()]
        kind = FAILED_SCORES[n % len(FAILED_SCORES)]
        rows[i] = {k: v for k, v in rows[i].items() if k not in FAILED_SCORES[0]} if kind == "absent" else {**rows[i], **kind}
        target.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = case / "report"
        assert report.main([str(case / "work"), str(run), "--out", str(out)]) == 0, (file, i, kind)
        for name in ("fid_vs_w.png", "methods_vs_w.png", "fid_vs_nfe.png"):
            with Image.open(out / name) as im:
                assert im.format == "PNG", (file, i, name)
        # the failed row's line in its folder's table: its set's FID and KID read n/a in that set's place
        # (or, the last set, are left off), and the other sets keep their own values in theirs
        folder, _, k = file.parent.name.partition("-seeds")
        k = int(k or 1)
        section = (out / "tables.md").read_text().split(f"### {folder}\n")[1].split("###")[0]
        cells = [line.split(" | ") for line in section.splitlines() if line.startswith("| ")]
        [line] = [c for c in cells if c[1] == f"{rows[i]['w']:g}"]
        for cell in line[3:5]:
            sets = cell.split(" / ") + ["n/a"] * 5
            assert sets[k - 1] == "n/a" and all(v == "n/a" or float(v) >= 0 for v in sets), (file, i, cell)
        fids = [json.loads(r)["fid"] for f in sorted((work / folder).parent.glob(folder + "*/sweep.jsonl"))
                if f.parent.name in (folder, *(f"{folder}-seeds{j}" for j in range(2, 9)))
                for r in f.read_text().splitlines() if json.loads(r)["w"] == rows[i]["w"]]
        assert len([v for v in line[3].split(" / ") if v != "n/a"]) == len(fids) - 1, (file, i, line[3])
        # and where the summaries pick that row, its mean is over the other sets, listed with n/a in its place
        tables = (out / "tables.md").read_text().split("### Each line at its best w")[1].split("### Cost")[0]
        for c in (line.split(" | ") for line in tables.splitlines() if line.startswith(f"| {folder} | ")):
            if c[2] == f"{rows[i]['w']:g}" and c[5] != "n/a":
                sets = c[5].split("(")[1].rstrip(")").split(" / ") + ["n/a"] * 5
                assert sets[k - 1] == "n/a" and int(c[4]) == len(fids) - 1, (file, i, c)
