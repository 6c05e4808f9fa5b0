"""docs/results.md quotes files that examples/cifar10.sh writes, and nothing else (issue 26: "every figure
on the page comes from a file the script writes").

Two checks, on the committed folder results/cifar10/ itself:
- the committed report (tables.md, training.md) is what examples/cifar10_report.py makes of the committed
  sweep rows and training stats now: a row added without rerunning the report, or a report edited by
  hand, fails;
- every table the page marks `<!-- report: FILE#HEADING -->` is that section's table of
  results/cifar10/report/FILE as it is (`cifar10_report.py --page docs/results.md` refreshes them), and
  every image the page shows exists.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "results" / "cifar10"
PAGE = REPO / "docs" / "results.md"
MARK = re.compile(r"^<!-- report: ([^\s#]+)(?:#(.+?))? -->$")

pytestmark = pytest.mark.skipif(not (WORK / "report" / "tables.md").exists(), reason="no committed results")


def quoted_tables(text: str) -> list[tuple[str, str | None, list[str]]]:
    """(report file, heading, table lines) for each `<!-- report: FILE#HEADING -->` mark: the table right after it."""
    out, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        m = MARK.match(line.strip())
        if not m:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("|"):
            j += 1
        table = []
        while j < len(lines) and lines[j].startswith("|"):
            table.append(lines[j])
            j += 1
        out.append((m.group(1), m.group(2), table))
    return out


def test_the_committed_report_is_what_the_script_makes_of_the_committed_rows(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "examples" / "cifar10_report.py"), str(WORK),
                        str(WORK / "runs" / "tiny"), "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("tables.md", "training.md", "width.md"):
        if (WORK / "report" / name).exists() or (tmp_path / name).exists():
            assert (tmp_path / name).read_text() == (WORK / "report" / name).read_text(), (
                f"results/cifar10/report/{name} is stale: rerun examples/cifar10_report.py")


def test_every_table_the_page_quotes_is_in_the_report_and_every_image_exists():
    text = PAGE.read_text()
    quoted = quoted_tables(text)
    assert quoted, "docs/results.md marks no table as quoted from the report"
    spec = importlib.util.spec_from_file_location("cifar10_report", REPO / "examples" / "cifar10_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    for name, heading, table in quoted:
        assert table, f"a <!-- report: {name} --> mark with no table after it"
        assert table == report.report_section((WORK / "report" / name).read_text(), heading), (
            f"docs/results.md's table from {name}#{heading} is not the report's: rerun examples/cifar10_report.py "
            "with --page docs/results.md")
    for link in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
        assert (PAGE.parent / link).resolve().exists(), f"docs/results.md shows a missing image: {link}"


def test_the_quote_parser_reads_the_table_after_each_mark():
    text = "x\n<!-- report: a.md#s t -->\n\n| h |\n| --- |\n| 1 |\n\nprose\n<!-- report: b.md -->\n| 2 |\n"
    assert quoted_tables(text) == [("a.md", "s t", ["| h |", "| --- |", "| 1 |"]), ("b.md", None, ["| 2 |"])]


def test_every_table_of_the_v2_section_is_a_quoted_one():
    """No table on the v2 page is typed by hand, and no stray rows survive an edit around a quoted table."""
    text = PAGE.read_text()
    v2 = text[text.index("## v2"):text.index("## v1")] if "## v1" in text else text[text.index("## v2"):]
    lines, stray = v2.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):  # a table's first line
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            if k < 0 or not MARK.match(lines[k].strip()):
                stray.append(line[:80])
    assert not stray, f"tables on the v2 page that no <!-- report: --> mark quotes: {stray}"
