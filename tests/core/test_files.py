"""cfgdiff.files: atomic writes, the ownership ledger, output rules, locks, the parts store."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cfgdiff import files
from cfgdiff.errors import ConfigError, DataError

OWN = files.Owner("score-results", "score", "job-1")  # a writer for the rules' tests

REPO = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:  # an independent oracle for files.sha256_file
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---- atomic writes ----------------------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.json"
    files.write_json(path, {"a": 1})

    def half(f):
        f.write(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(path, half)
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        files.write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_writes_fsync_the_file_and_the_folder_before_and_after_the_rename(tmp_path, monkeypatch):
    synced: list[tuple[int, int]] = []
    real = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = tmp_path / "a.npz"
    files.write_npz(path, arr_0=np.arange(3))
    st, folder = path.stat(), tmp_path.stat()
    assert (st.st_dev, st.st_ino) in synced and (folder.st_dev, folder.st_ino) in synced
    assert synced.index((st.st_dev, st.st_ino)) < synced.index((folder.st_dev, folder.st_ino))
    with np.load(path) as f:
        assert f["arr_0"].tolist() == [0, 1, 2]


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(os.urandom(files.CHUNK + 123))  # more than one read
    assert files.sha256_file(path) == _sha(path)


def test_a_dead_writers_temporary_is_removed_by_the_next_write_a_live_ones_is_not(tmp_path):
    target = tmp_path / "stats.npz"
    host = files.temp_path(target).name.split("-")[1]
    dead = tmp_path / f".stats.npz.tmp-{host}-{_dead_pid()}-0a0b0c0d"
    live = tmp_path / f".stats.npz.tmp-{host}-{os.getpid()}-01020304"
    other_host = tmp_path / f".stats.npz.tmp-ffffffff-{_dead_pid()}-01020304"  # may be alive elsewhere
    other_target = tmp_path / f".other.npz.tmp-{host}-{_dead_pid()}-01020304"
    for p in (dead, live, other_host, other_target):
        p.write_bytes(b"x" * 1000)
    files.write_npz(target, mu=np.zeros(2))
    assert not dead.exists() and live.exists() and other_host.exists() and other_target.exists()


# ---- ownership ledger and output rules --------------------------------------------------------------------------
def test_an_existing_output_is_replaced_only_if_cfgdiff_wrote_exactly_those_bytes(tmp_path):
    ours, theirs = tmp_path / "r.json", tmp_path / "user.json"
    files.write_json(ours, {"fid": 1.0}, owner=OWN)
    theirs.write_text("{}\n")
    files.check_outputs({"--results": ours}, owners=OWN)  # ours, unchanged: may be replaced
    for force in (False, True):  # a user's file: never, not even with --force
        with pytest.raises(ConfigError, match="--results .*user.json exists and was not written by cfgdiff.*even with"):
            files.check_outputs({"--results": theirs}, owners=OWN, force=force)
    ours.write_text('{"fid": 2.0}\n')  # replaced by hand: no longer ours
    with pytest.raises(ConfigError, match="not written by cfgdiff"):
        files.check_outputs({"--results": ours}, owners=OWN)
    with pytest.raises(ConfigError, match="not written by cfgdiff"):  # and at the commit too: kept as it is
        files.write_json(ours, {"fid": 3.0}, owner=OWN)
    assert ours.read_text() == '{"fid": 2.0}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == [files.LEDGER, "r.json", "user.json"]  # no temporary


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink", "dotted"])
def test_an_output_that_is_an_input_is_refused_even_with_force(tmp_path, alias):
    src = tmp_path / "S.npz"
    np.savez(src, arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    before = _sha(src)
    out = {"same": src, "symlink": tmp_path / "link.npz", "hardlink": tmp_path / "hard.npz",
           "dotted": tmp_path / "." / "sub" / ".." / "S.npz"}[alias]
    (tmp_path / "sub").mkdir()
    if alias == "symlink":
        out.symlink_to(src)
    elif alias == "hardlink":
        os.link(src, out)
    for force in (False, True):
        with pytest.raises(ConfigError, match="is an input of this command"):
            files.check_outputs({"--results": out}, [src], force=force, owners=OWN)
    assert _sha(src) == before


def test_two_outputs_on_one_file_are_refused(tmp_path):
    (tmp_path / "g").mkdir()
    a = tmp_path / "g" / "x.npz"
    b = tmp_path / "link"
    b.symlink_to(tmp_path / "g")
    with pytest.raises(ConfigError, match="--grid .* is also --out"):
        files.check_outputs({"--out": a, "--grid": a}, owners=OWN)
    with pytest.raises(ConfigError, match="is also --out"):
        files.check_outputs({"--out": a, "--grid": b / "x.npz"}, owners=OWN)  # the same file through a linked folder


def test_an_output_folder_must_exist_or_be_creatable(tmp_path):
    with pytest.raises(DataError, match="folder .*missing does not exist"):
        files.check_outputs({"--grid": tmp_path / "missing" / "g.png"}, owners=OWN)
    files.check_outputs({"--out": tmp_path / "new" / "deeper" / "d.h5"}, make_folders=True, owners=OWN)
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "afile").write_text("")
    with pytest.raises(DataError, match="cannot create the output folder .*afile of --out .*afile is not a folder"):
        files.check_outputs({"--out": tmp_path / "afile" / "d.h5"}, make_folders=True, owners=OWN)
    with pytest.raises(ConfigError, match="is a folder"):
        files.check_outputs({"--out": tmp_path}, force=True, owners=OWN)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataError, match="is not writable"):
            files.check_outputs({"--results": ro / "r.json"}, owners=OWN)
        with pytest.raises(DataError, match="cannot write .*r.json: Permission denied"):
            files.write_text(ro / "r.json", "x")
    finally:
        ro.chmod(0o755)


# ---- locks ------------------------------------------------------------------------------------------------------
HOLDER = """
import sys, time
from pathlib import Path
from cfgdiff.files import output_lock
with output_lock(Path(sys.argv[1]), "sample --out x.npz"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_on_the_same_output_is_one_line_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "x.npz"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError) as e, files.output_lock(out, "sample"):
            pass
        msg = str(e.value)
        assert "\n" not in msg and f"pid {holder.pid} on {socket.gethostname()} (sample --out x.npz)" in msg
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert files.lock_path(out).exists()  # kill -9 left it behind
    with files.output_lock(out, "sample") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_lock_of_a_live_process_on_another_host_is_respected(tmp_path):
    out = tmp_path / "x.npz"
    files.lock_path(out).write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere", "command": "sweep"}))
    with pytest.raises(DataError, match="on elsewhere \\(sweep\\)"), files.output_lock(out, "sample"):
        pass


# ---- the parts store --------------------------------------------------------------------------------------------
def test_parts_of_the_same_plan_are_kept_and_of_another_plan_discarded(tmp_path, capsys):
    out = tmp_path / "s.npz"
    store = files.PartStore(out, {"n": 4, "seeds": [0, 1]}, "sample")
    assert store.open() == set() and store.dir == tmp_path / ".s.npz.partial"
    store.write(2, {"arr_0": np.ones(2)})
    assert files.PartStore(out, {"seeds": [0, 1], "n": 4}).open() == {2}  # same plan (tuples, key order)
    assert files.PartStore(out, {"n": 4, "seeds": (0, 1)}).read(2)["arr_0"].tolist() == [1.0, 1.0]
    (store.dir / "part-000000003.npz").write_bytes(b"torn")
    assert store.read_or_none(3) is None
    with pytest.raises(DataError, match="part-000000003.npz is missing or damaged"):
        store.read(3)
    assert files.PartStore(out, {"n": 5}, "sample").open() == set()
    assert "sample: discarding partial work" in capsys.readouterr().err
    assert json.loads((store.dir / "plan.json").read_text()) == {"n": 5}


def test_npz_rows_reads_the_count_from_the_header_and_rejects_other_files(tmp_path):
    np.savez(tmp_path / "a.npz", arr_0=np.zeros((7, 2, 2, 3), np.uint8), arr_1=np.arange(7))
    assert files.npz_rows(tmp_path / "a.npz") == 7 and files.npz_rows(tmp_path / "a.npz", "seeds") is None
    (tmp_path / "b.npz").write_bytes(b"\x89PNG\r\n\x1a\n not an npz")
    assert files.npz_rows(tmp_path / "b.npz") is None and files.npz_rows(tmp_path / "missing.npz") is None


def test_the_ledger_vouches_for_the_file_at_every_step_of_a_recorded_write(tmp_path, monkeypatch):
    """A kill between the ledger update and the rename must not make our own file look foreign."""
    path = tmp_path / "sweep.jsonl"
    files.write_text(path, "old\n", owner=OWN)
    seen = []
    real = os.replace

    def spy(src, dst):
        if Path(dst) == path:  # just before the rename: the old bytes are still vouched for
            seen.append(files.is_ours(path))
        real(src, dst)
        if Path(dst) == path:  # just after it (before the ledger drops the old version): the new ones
            seen.append(files.is_ours(path))

    monkeypatch.setattr(os, "replace", spy)
    files.write_text(path, "new\n", owner=OWN)
    assert seen == [True, True] and files.is_ours(path)
    files.forget_output(path)
    assert not files.is_ours(path)
