"""Fault injection: bad input to every command. Each case gets exactly one clear message line
(`cfgdiff: error: ...`, usage errors included), its exit code, and leaves no
new file at a final path (only what the case lists). docs/faults.md holds the table of all
cases with the exact message; `test_the_table_in_docs_is_up_to_date` checks it
(CFGDIFF_UPDATE_DOCS=1 rewrites it).
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from cfgdiff.cli.app import main
from cfgdiff.runs import content_digest
from faults_support import cfgdiff, env_for, error_lines, file_size_limit, workspace

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Detected pickle protocol")]  # our hostile pickle, refused
REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "faults.md"
MARKER = "pwned"  # what the malicious pickles would create if they ever ran


class _Evil:
    """Unpickling this runs `touch <marker>`: the payload a hostile checkpoint or npz would carry."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- setups: each writes its input files into the case's working folder -----------------------------------------
def _photos(d: Path, ws: Path) -> None:
    for cls in ("a", "b"):
        folder = d / "photos" / "train" / cls
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((20, 20, 3), 40 * i + 90, np.uint8)).save(folder / f"{i}.jpg")
    good = (d / "photos" / "train" / "a" / "0.jpg").read_bytes()
    (d / "photos" / "train" / "a" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "photos" / "train" / "b" / "garbage.jpg").write_bytes(b"this is not a JPEG")


def _non_images(d: Path, ws: Path) -> None:
    for cls in ("a", "b"):
        (d / "docs" / "train" / cls).mkdir(parents=True)
        (d / "docs" / "train" / cls / "readme.jpg").write_text("text, not an image")


def _exists(d: Path, ws: Path) -> None:
    (d / "d.h5").write_bytes(b"an earlier result")


def _h5_files(d: Path, ws: Path) -> None:
    (d / "text.h5").write_text("not HDF5")
    with h5py.File(d / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    data = (ws / "data" / "shapes16.h5").read_bytes()
    (d / "trunc.h5").write_bytes(data[: len(data) // 2])


def _npz_files(d: Path, ws: Path) -> None:
    np.savez(d / "float.npz", arr_0=np.random.default_rng(0).random((4, 16, 16, 3), np.float32))
    np.savez(d / "shape.npz", arr_0=np.zeros((4, 16, 16), np.uint8))
    np.savez(d / "evil.npz", arr_0=np.array([_Evil(d / MARKER)], dtype=object))
    (d / "texts").mkdir()
    (d / "texts" / "a.txt").write_text("no images here")


def _checkpoints(d: Path, ws: Path) -> None:
    shutil.copytree(ws / "runs" / "tiny", d / "run")
    ema = d / "run" / "ema-00000004.pt"
    data = ema.read_bytes()
    (d / "trunc.pt").write_bytes(data[: len(data) // 2])
    (d / "run" / "checkpoint-00000004.pt").write_bytes(data[: len(data) // 3])  # resume from a torn file
    state = torch.load(ema, weights_only=True)
    flipped = {**state, "ema": dict(state["ema"])}
    key = next(k for k, v in state["ema"].items() if v.dtype == torch.float32 and v.numel())
    weights = state["ema"][key].clone()
    weights.view(torch.int32).view(-1)[0] ^= 1 << 30  # one exponent bit of one weight
    flipped["ema"][key] = weights
    torch.save(flipped, d / "flip.pt")
    state["config"]["model"]["model_channels"] *= 2  # weights of a twice wider network, consistently recorded
    state["content_sha256"] = content_digest(state)
    torch.save(state, d / "wide.pt")
    (d / "evil.pt").write_bytes(pickle.dumps(_Evil(d / MARKER)))
    torch.save({"format": "cfgdiff-ema", "ema": _Evil(d / MARKER)}, d / "evil-zip.pt")
    state = torch.load(ema, weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "ema"}, d / "nokey.pt")
    torch.save({**state, "images_seen": str(state["images_seen"])}, d / "strkey.pt")


def _run_copy(d: Path, ws: Path) -> None:
    """The workspace's run and dataset at the paths it was trained with."""
    shutil.copytree(ws / "runs" / "tiny", d / "runs" / "tiny")
    shutil.copytree(ws / "data", d / "data")


def _swapped(d: Path, ws: Path) -> None:
    """The run, and at its dataset's path a file whose last image was edited (same count and labels)."""
    _run_copy(d, ws)
    with h5py.File(d / "data" / "shapes16.h5", "r+") as f:
        f["images"][-1] = 255 - f["images"][-1]


def _failed_start(d: Path, ws: Path) -> None:
    """runs/ holding only the config.json of a start that died before its first checkpoint."""
    (d / "runs" / "failed").mkdir(parents=True)
    shutil.copy(ws / "runs" / "tiny" / "config.json", d / "runs" / "failed" / "config.json")


def _bad_inception(d: Path, ws: Path) -> None:
    (d / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"\0" * 4096)


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path, Path], None] | None
    args: tuple[str, ...]  # "{ws}" is the shared workspace
    code: int
    expect: str  # a substring of the message line
    leaves: tuple[str, ...] = ()  # new paths the case may leave (globs, relative to its folder)


WS = "{ws}"
RUN, DATA, REF = f"{WS}/runs/tiny", f"{WS}/data/shapes16.h5", f"{WS}/ref.npz"
TRAIN = ("--preset", "tiny", "--kimg", "0.064", "--batch", "16", "--workers", "0", "--preview-every", "100")
CASES = [
    # prepare
    Case("corrupt and truncated JPEGs are skipped and listed", _photos,
         ("prepare", "photos", "--size", "16", "--out", "d.h5", "--workers", "1"), 0,
         "prepare: skipped 2 unreadable images; they are listed in d.skipped.tsv",
         ("d.h5", "d.json", "d.skipped.tsv", ".cfgdiff-outputs.json")),
    Case("a folder of non-images", _non_images, ("prepare", "docs", "--size", "16", "--out", "d.h5", "--workers", "1"),
         1, "none of the 2 images could be decoded; see d.skipped.tsv", ("d.skipped.tsv", ".cfgdiff-outputs.json")),
    Case("a source that does not exist", None, ("prepare", "nowhere", "--out", "d.h5"), 1, "source not found: nowhere"),
    Case("an unknown builtin source", None, ("prepare", "builtin:faces", "--out", "d.h5"), 1,
         "unknown built-in data set 'faces'"),
    Case("an output that exists", _exists, ("prepare", "builtin:shapes", "--out", "d.h5"), 1,
         "--out d.h5 exists and was not written by cfgdiff"),
    Case("a size out of range", None, ("prepare", "builtin:shapes", "--size", "4"), 2, "Invalid value for '--size'"),
    # train
    Case("a dataset that is not HDF5", _h5_files, ("train", "--data", "text.h5", *TRAIN), 1, "is not an HDF5 file"),
    Case("an HDF5 file that is not a cfgdiff dataset", _h5_files, ("train", "--data", "other.h5", *TRAIN), 1,
         "other.h5 is not a cfgdiff dataset"),
    Case("a truncated HDF5 dataset", _h5_files, ("train", "--data", "trunc.h5", *TRAIN), 1,
         "truncated or damaged HDF5 file"),
    Case("resuming from a checkpoint truncated mid-write", _checkpoints,
         ("train", "--data", DATA, "--run-dir", "run", *TRAIN), 1, "truncated or not a cfgdiff checkpoint"),
    Case("resuming a run with another architecture", _run_copy,
         ("train", "--data", "data/shapes16.h5", "--preset", "tiny", "--run-dir", "runs/tiny", "--kimg", "0.128",
          "--batch", "32", "--workers", "0", "--preview-every", "100", "--set", "model.model_channels=64"), 1,
         "is from a different run (model.model_channels: 32 -> 64)"),
    Case("resuming on a dataset swapped under the run", _swapped,
         ("train", "--data", "data/shapes16.h5", "--preset", "tiny", "--run-dir", "runs/tiny", "--kimg", "0.128",
          "--batch", "32", "--workers", "0", "--preview-every", "100"), 1,
         "data/shapes16.h5 is not the dataset this run was trained on (other images; recorded in "
         "runs/tiny/checkpoint-00000004.pt); to train on it, start a new run with another --run-dir"),
    Case("a non-finite loss (--lr 1e30)", None,
         ("train", "--data", DATA, "--run-dir", "run", "--lr", "1e30", "--snapshot", "0.016", *TRAIN), 1,
         "training stopped; the last good checkpoint is run/checkpoint-00000001.pt", ("run", "run/*")),
    Case("a duration of 0", None, ("train", "--data", DATA, "--kimg", "0"), 2, "Invalid value for '--kimg'"),
    # sample
    Case("a checkpoint truncated mid-write", _checkpoints, ("sample", "trunc.pt", "--n", "2", "--out", "s.npz"), 1,
         "trunc.pt: truncated or not a cfgdiff checkpoint"),
    Case("a checkpoint for another architecture", _checkpoints, ("sample", "wide.pt", "--n", "2", "--out", "s.npz"),
         1, "wide.pt: weights of another architecture"),
    Case("a checkpoint with one flipped bit", _checkpoints, ("sample", "flip.pt", "--n", "2", "--out", "s.npz"),
         1, "flip.pt: damaged checkpoint: its contents do not match their recorded SHA-256"),
    Case("a pickle that runs code (raw pickle)", _checkpoints, ("sample", "evil.pt", "--n", "2", "--out", "s.npz"), 1,
         "evil.pt: not a cfgdiff checkpoint: it pickles objects other than tensors"),
    Case("a pickle that runs code (torch zip)", _checkpoints,
         ("sample", "evil-zip.pt", "--n", "2", "--out", "s.npz"), 1,
         "evil-zip.pt: not a cfgdiff checkpoint: it pickles objects other than tensors"),
    Case("a checkpoint that does not exist", None, ("sample", "nowhere.pt", "--n", "2", "--out", "s.npz"), 1,
         "nowhere.pt: no such checkpoint file"),
    Case("a checkpoint missing a key", _checkpoints, ("sample", "nokey.pt", "--n", "2", "--out", "s.npz"), 1,
         "nokey.pt: damaged checkpoint: key 'ema' is missing"),
    Case("a checkpoint with a key of the wrong type", _checkpoints,
         ("sample", "strkey.pt", "--n", "2", "--out", "s.npz"), 1,
         "strkey.pt: damaged checkpoint: key 'images_seen' is str, expected int"),
    Case("no run under runs/ has a checkpoint yet", _failed_start, ("sample", "--n", "2", "--out", "s.npz"), 1,
         "no trained run under runs/ (failed: no checkpoint yet)"),
    Case("--n 0", None, ("sample", RUN, "--n", "0"), 2, "Invalid value for '--n'"),
    Case("a negative w", None, ("sample", RUN, "--w", "-1", "--n", "2"), 2, "Invalid value for '--w'"),
    Case("w = NaN", None, ("sample", RUN, "--w", "nan", "--n", "2"), 2, "Invalid value for '--w'"),
    Case("an output that is not .npz", None, ("sample", RUN, "--n", "2", "--out", "s.txt"), 2,
         "--out must end in .npz, got s.txt"),
    Case("a decreasing seed range", None, ("sample", RUN, "--n", "2", "--seeds", "5-2", "--out", "s.npz"), 2,
         "is a decreasing range"),
    Case("seeds without bound", None, ("sample", RUN, "--n", "2", "--seeds", "0-99999999999"), 2,
         "more than 100,000,000 seeds"),
    Case("seeds above int64", None, ("sample", RUN, "--n", "2", "--seeds", "0-99999999999999999999"), 2,
         "is above 9223372036854775807 (seeds are int64)"),
    Case("a class that does not exist", None, ("sample", RUN, "--n", "2", "--classes", "99", "--out", "s.npz"), 2,
         "--classes: [99] outside 0..9"),
    Case("NaN samples (w = 1e300, no clipping)", None,
         ("sample", RUN, "--n", "2", "--steps", "3", "--w", "1e300", "--no-clip", "--out", "s.npz"), 1,
         "non-finite samples (NaN/Inf) at w=1e+300 for seeds [0, 1]", (".s.npz.partial", ".s.npz.partial/plan.json")),
    # sweep
    *[Case(f"a grid {grid!r}", None, ("sweep", RUN, "--w", grid, "--n", "2"), 2, f"guidance grid {grid!r}: {why}")
      for grid, why in [("", "no values"), (",", "no values"), ("nan", "'nan' is not finite"),
                        ("-1,2", "w must be >= 0"), ("1:0:0.5", "stop is below start"), ("0:1:0", "step must be positive"),
                        ("abc", "'abc' is not a number"), ("0,1e400", "'1e400' is not finite"),
                        ("0:1000000:0.000001", "1,000,000,000,001 values, more than 10,000")]],
    Case("Inception weights with the wrong hash (sweep)", _bad_inception,
         ("sweep", RUN, "--w", "0", "--n", "2", "--ref", REF, "--out-dir", "sw",
          "--inception", "pt_inception-2015-12-05-6726825d.pth"), 1, "does not match the 6726825d in its name",
         ("sw",)),
    # score
    Case("an npz of float images", _npz_files, ("score", "float.npz"), 1, "arr_0 must be uint8 images, got dtype float32"),
    Case("an npz of the wrong shape", _npz_files, ("score", "shape.npz"), 1,
         "arr_0 must have shape (N, H, W, 3), got (4, 16, 16)"),
    Case("an npz whose pickle runs code", _npz_files, ("score", "evil.npz"), 1,
         "arr_0 must be uint8 images, got dtype object"),
    Case("an HDF5 file that is not a cfgdiff dataset", _h5_files, ("score", "other.h5"), 1,
         "other.h5: not a cfgdiff dataset"),
    Case("a truncated HDF5 dataset", _h5_files, ("score", "trunc.h5"), 1, "trunc.h5: truncated or damaged HDF5 file"),
    Case("a folder without images", _npz_files, ("score", "texts"), 1, "texts: no image files"),
    Case("Inception weights with the wrong hash (score)", _bad_inception,
         ("score", REF, "--inception", "pt_inception-2015-12-05-6726825d.pth", "--results", "r.json"), 1,
         "does not match the 6726825d in its name"),
    Case("an unknown metric", None, ("score", REF, "--metrics", "fid,bogus"), 2, "unknown metric(s) bogus"),
]
MESSAGES: dict[tuple[str, str], tuple[str, int, str]] = {}  # (command, case) -> (command line, exit, message)


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[f"{c.args[0]}: {c.name}" for c in CASES])
def test_bad_input_is_one_line_an_exit_code_and_nothing_half_written(case, tmp_path, monkeypatch, capsys):
    ws = workspace()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(ws / "cache"))
    if case.setup is not None:
        case.setup(tmp_path, ws)
    before = _files(tmp_path)
    args = [a.replace(WS, str(ws)) for a in case.args]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == case.code, err
    lines = [ln for ln in err.splitlines() if ln.startswith("prepare: skipped")] if code == 0 else error_lines(err)
    assert len(lines) == 1 and case.expect in lines[0], err
    assert "Traceback" not in err
    new = _files(tmp_path) - before
    assert all(any(Path(n).match(g) for g in case.leaves) for n in new), sorted(new)
    assert not (tmp_path / MARKER).exists()  # the pickled payload never ran
    MESSAGES[case.args[0], case.name] = (" ".join(["cfgdiff", *case.args]), code, lines[0].replace(str(ws), "<ws>"))
    if case.setup is _photos:
        report = (tmp_path / "d.skipped.tsv").read_text().splitlines()
        assert sorted(ln.split("\t")[0] for ln in report[1:]) == ["train/a/truncated.jpg", "train/b/garbage.jpg"]


@pytest.mark.parametrize("command", ["prepare", "sample"])
def test_a_full_disk_is_one_line_and_leaves_no_part(command, tmp_path):
    """A file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes writes fail with EFBIG as on a full disk."""
    ws = workspace()
    args = (["prepare", "builtin:shapes", "--size", "16", "--limit", "200", "--workers", "1", "--out", "d.h5"]
            if command == "prepare" else ["sample", str(ws / "runs" / "tiny"), "--n", "10", "--steps", "2", "--out", "d.npz"])
    r = cfgdiff(args, tmp_path, env_for(ws), preexec=file_size_limit(2000))
    lines = error_lines(r.stderr)
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    part = f".d.{'h5' if command == 'prepare' else 'npz'}.partial/part-000000000.npz"
    assert lines[0].startswith(f"cfgdiff: error: cannot write {part}: File too large (disk full or over a size limit)")
    # only the resumable bookkeeping remains, no partly written part
    partial = tmp_path / (".d.h5.partial" if command == "prepare" else ".d.npz.partial")
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted([partial.name, "plan.json"])
    MESSAGES[command, "a full disk (file-size limit)"] = (f"cfgdiff {' '.join(args).replace(str(ws), '{ws}')}", 1, lines[0])


def _table() -> str:
    rows = ["| case | command | exit | message |", "| --- | --- | ---: | --- |"]
    for (_, name), (cmd, code, msg) in MESSAGES.items():
        cells = [name, f"`` {cmd} ``", str(code), f"`` {msg} ``"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- cases: generated by tests/faults/test_faults_input.py -->\n", "<!-- end of cases -->\n"


def test_the_table_in_docs_is_up_to_date():
    if len(MESSAGES) != len(CASES) + 2:
        pytest.skip("run the whole module to check docs/faults.md")
    text = DOC.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    table = _table()
    if os.environ.get("CFGDIFF_UPDATE_DOCS"):
        DOC.write_text(head + BEGIN + table + END + tail)
    assert rest.split(END)[0] == table, "docs/faults.md is stale: rerun with CFGDIFF_UPDATE_DOCS=1"
    assert len(MESSAGES) >= 25
