"""Content-true reuse (docs/faults.md, rule 2): what a "done earlier" or cached path compares is the
content, and a recorded path is used only when it is the very file recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from cfgdiff.errors import DataError
from cfgdiff.metrics.cache import content_key
from cfgdiff.metrics.sources import open_input
from cfgdiff.runs import dataset_fingerprint, locate_dataset
from cfgdiff.train.resume import stats_rows, trim_stats


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Same size, and the old mtime put back (as `cp -p`, `touch -r` or a tar restore leave it)."""
    st = path.stat()
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_an_in_place_rewrite_with_the_old_size_and_mtime_changes_the_content_key(tmp_path, layout):
    target = tmp_path / "ref" if layout == "folder" else tmp_path / "ref.bin"
    victim = target / "img.bin" if layout == "folder" else target
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(b"a" * 64)
    before = content_key(target)
    assert content_key(target) == before  # stable while nothing changes
    _rewrite_in_place(victim, b"b" * 64)
    assert content_key(target) != before


def _dataset(path: Path, labels: list[int]) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((len(labels), 8, 8, 3), np.uint8))
        f.create_dataset("labels", data=np.array(labels, np.int64))
        f.attrs["num_classes"] = 3


def test_a_recorded_dataset_is_found_beside_its_recorder_and_only_if_it_is_the_same(tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "data").mkdir()
    _dataset(project / "data" / "d.h5", [0, 1, 2, 0])
    _dataset(elsewhere / "data" / "d.h5", [2, 2, 2, 2])  # another dataset at the same relative path
    fingerprint = dataset_fingerprint(project / "data" / "d.h5")
    monkeypatch.chdir(elsewhere)  # the current folder has the wrong one: skipped, the recorder's is used
    found, why = locate_dataset("data/d.h5", fingerprint, project / "samples")
    assert found is not None and Path(found).resolve() == (project / "data" / "d.h5").resolve() and why == ""
    found, why = locate_dataset("data/d.h5", fingerprint, tmp_path / "nowhere")
    assert found is None and "fingerprint differs" in why
    found, why = locate_dataset("data/missing.h5", fingerprint, project)
    assert found is None and "is not there" in why


def test_statistics_of_another_dimension_are_refused(tmp_path):
    np.savez(tmp_path / "s.npz", mu=np.zeros(64), sigma=np.eye(64))  # pytorch-fid's 64-d layer, say
    with pytest.raises(DataError, match="mu has 64 dimensions, not the Inception network's 2048"):
        open_input(tmp_path / "s.npz")


def test_a_torn_stats_row_is_dropped_and_trimmed_away(tmp_path, capsys):
    stats = tmp_path / "stats.jsonl"
    stats.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n" + json.dumps({"step": 2, "loss": 0.9}) + "\n"
                     + '{"step": 3, "lo')
    assert [r["step"] for r in stats_rows(stats)] == [1, 2]
    assert "dropped 1 damaged row" in capsys.readouterr().err
    trim_stats(stats, 2)
    assert [json.loads(line)["step"] for line in stats.read_text().splitlines()] == [1, 2]
