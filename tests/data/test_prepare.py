"""`prepare` end to end: the file contract, damaged files, workers, resume, overwrite, and the CLI."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
from PIL import Image
from prepare_support import SIZE, class_folder_files, encode, expected_pixels, smooth_image, write_folder

from cfgdiff.cli.app import main
from cfgdiff.config import PrepareConfig
from cfgdiff.data.parts import Part, PartStore, part_length
from cfgdiff.data.prepare import _plan_id, open_source, prepare
from cfgdiff.files import LEDGER
from cfgdiff.data.resize import adm_center_crop
from cfgdiff.data.sources import select
from cfgdiff.errors import OutputError

FILES = {k: v for k, v in class_folder_files(per_class=3).items() if k.startswith("train/")}


def _damaged_set() -> dict[str, bytes]:
    """FILES plus the files ImageNet is known for: CMYK and grayscale JPEGs, a PNG named .JPEG,
    and two that cannot be decoded (a truncated JPEG and a non-image)."""
    photo = smooth_image(7, 2 * SIZE, 2 * SIZE)
    jpeg = encode(photo, "JPEG", quality=90)
    return {
        **FILES,
        "train/class0/cmyk.JPEG": encode(photo, "JPEG", mode="CMYK", quality=90),
        "train/class1/gray.JPEG": encode(photo, "JPEG", mode="L", quality=90),
        "train/class2/png.JPEG": encode(photo, "PNG"),
        "train/class1/truncated.JPEG": jpeg[: len(jpeg) // 2],
        "train/class2/garbage.JPEG": b"<html>404</html>",
    }


def _read(path):
    with h5py.File(path, "r") as f:
        return f["images"][:], f["labels"][:], [n.decode() for n in f["names"][:]], dict(f.attrs)


def test_the_file_follows_the_contract_and_skips_damaged_images(tmp_path):
    files = _damaged_set()
    src = write_folder(tmp_path / "src", files)
    out = tmp_path / "out" / "set.h5"
    result = prepare(PrepareConfig(source=str(src), size=SIZE), out, workers=1)

    good = sorted(n for n in files if "truncated" not in n and "garbage" not in n)
    assert (result.count, result.skipped, result.num_classes) == (len(good), 2, 3)
    images, labels, names, attrs = _read(out)
    assert sorted(names) == good and len(set(names)) == len(names)
    for img, label, name in zip(images, labels, names):
        assert np.array_equal(img, expected_pixels(files[name])), name
        assert label == int(name.split("/")[1][-1])
    with h5py.File(out, "r") as f:
        assert f["images"].dtype == np.uint8 and f["images"].chunks == (1, SIZE, SIZE, 3)
        assert f["labels"].dtype == np.int64 and h5py.check_string_dtype(f["names"].dtype).encoding == "utf-8"
    assert attrs["format"] == "cfgdiff-dataset" and attrs["size"] == SIZE and attrs["num_classes"] == 3
    assert list(attrs["class_ids"]) == list(attrs["class_names"]) == ["class0", "class1", "class2"]
    assert (attrs["count"], attrs["skipped"], attrs["resize"]) == (len(good), 2, "area")
    assert attrs["source"] == str(src) and attrs["label_order"] == "sorted class folder names"
    assert attrs["cfgdiff_version"] and json.loads(attrs["config"])["size"] == SIZE

    report = (tmp_path / "out" / "set.skipped.tsv").read_text().splitlines()
    assert report[0] == "name\treason" and sorted(r.split("\t")[0] for r in report[1:]) == [
        "train/class1/truncated.JPEG",
        "train/class2/garbage.JPEG",
    ]
    assert json.loads((tmp_path / "out" / "set.json").read_text())["count"] == len(good)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LEDGER, "set.h5", "set.json", "set.skipped.tsv"]


def test_adm_crop_option_reaches_the_images(tmp_path):
    photo = smooth_image(9, 3 * SIZE, 5 * SIZE)
    src = write_folder(tmp_path / "src", {"train/a/x.png": encode(photo, "PNG"), "train/b/y.png": encode(photo, "PNG")})
    result = prepare(PrepareConfig(source=str(src), size=SIZE, resize="center-crop-adm"), tmp_path / "o.h5", workers=1)
    images, _, _, attrs = _read(result.output)
    assert attrs["resize"] == "center-crop-adm"
    assert np.array_equal(images[0], adm_center_crop(Image.fromarray(photo), SIZE))


def test_worker_processes_write_the_same_file(tmp_path):
    src = write_folder(tmp_path / "src", _damaged_set())
    one = prepare(PrepareConfig(source=str(src), size=SIZE), tmp_path / "one.h5", workers=1)
    two = prepare(PrepareConfig(source=str(src), size=SIZE), tmp_path / "two.h5", workers=2)
    a, b = _read(one.output), _read(two.output)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_rerun_reuses_finished_parts_and_discards_other_plans(tmp_path, capsys):
    cfg = PrepareConfig(source="builtin:shapes", size=SIZE, limit=part_length(SIZE) + 100)
    out = tmp_path / "shapes.h5"
    members = select(open_source(cfg).members, None, cfg.limit)
    n0 = part_length(SIZE)
    # an interrupted run that finished part 0; its images are marked (all 7) to tell them apart
    store = PartStore(out, _plan_id(cfg, members, n0))
    store.open()
    names = np.array([m.name for m in members[:n0]])
    labels = np.array([m.label for m in members[:n0]])
    empty = np.array([], dtype=str)
    store.write(0, Part(np.full((n0, SIZE, SIZE, 3), 7, np.uint8), labels, names, empty, empty))
    assert not out.exists()

    result = prepare(cfg, out, workers=1)
    images, _, _, _ = _read(out)
    assert result.resumed == n0 and "resuming: %d of %d" % (n0, cfg.limit) in capsys.readouterr().err
    assert (images[:n0] == 7).all() and not (images[n0:] == 7).all()
    assert not store.dir.exists()

    other = PartStore(out, {"another": "plan"})
    other.open()
    other.write(0, Part(np.full((n0, SIZE, SIZE, 3), 7, np.uint8), labels, names, empty, empty))
    prepare(cfg, out, workers=1, force=True)
    assert "discarding partial work" in capsys.readouterr().err
    assert not (_read(out)[0][:n0] == 7).all()


def test_existing_output_needs_force_unless_it_is_this_finished_job(tmp_path):
    cfg = PrepareConfig(source="builtin:shapes", size=SIZE, limit=20)
    out = tmp_path / "s.h5"
    prepare(cfg, out, workers=1)
    before = out.read_bytes()
    again = prepare(cfg, out, workers=1)  # the same command again: nothing to do
    assert (again.count, again.resumed, again.size, again.num_classes) == (20, 20, SIZE, 10)
    with pytest.raises(OutputError, match="holds the output of another prepare job; pass --force"):
        prepare(dataclasses.replace(cfg, limit=21), out, workers=1)
    assert out.read_bytes() == before
    assert prepare(dataclasses.replace(cfg, limit=21), out, workers=1, force=True).count == 21


def test_a_kill_after_the_final_rename_leaves_a_finished_job(tmp_path):
    """Killed between renaming the output into place and removing the partial folder: the rerun
    keeps the finished file and clears the leftover parts."""
    cfg = PrepareConfig(source="builtin:shapes", size=SIZE, limit=20)
    out = tmp_path / "s.h5"
    prepare(cfg, out, workers=1)
    before = out.read_bytes()
    leftover = tmp_path / ".s.h5.partial"
    leftover.mkdir()
    (leftover / "part-000000.npz").write_bytes(b"parts of the finished run")
    assert prepare(cfg, out, workers=1).count == 20
    assert out.read_bytes() == before and not leftover.exists()


def test_builtin_shapes_is_deterministic_prefix_stable_and_balanced(tmp_path):
    a = prepare(PrepareConfig(source="builtin:shapes", size=16, limit=300), tmp_path / "a.h5", workers=1)
    b = prepare(PrepareConfig(source="builtin:shapes", size=16, limit=700), tmp_path / "b.h5", workers=2)
    c = prepare(PrepareConfig(source="builtin:shapes", size=16, limit=300, seed=1), tmp_path / "c.h5", workers=1)
    (ia, la, na, attrs), (ib, lb, _, _), (ic, _, _, _) = _read(a.output), _read(b.output), _read(c.output)
    assert np.array_equal(ia, ib[:300]) and np.array_equal(la, lb[:300]) and not np.array_equal(ia, ic)
    assert np.array_equal(la, np.arange(300) % 10) and na[:2] == ["shapes/000000", "shapes/000001"]
    assert attrs["num_classes"] == 10 and list(attrs["class_names"])[:2] == ["red disc", "blue square"]
    dry = prepare(PrepareConfig(source="builtin:shapes", size=32), tmp_path / "d.h5", dry_run=True)
    assert dry.count == 20_000 and not (tmp_path / "d.h5").exists()


def test_builtin_classes_are_distinct_and_diverse(tmp_path):
    out = prepare(PrepareConfig(source="builtin:shapes", size=32, limit=2000), tmp_path / "s.h5", workers=1).output
    images, labels, _, _ = _read(out)
    x = images.reshape(len(images), -1).astype(np.float64) / 255
    train, test = slice(0, 1000), slice(1000, 2000)
    # distinct: a nearest-class-mean classifier on raw pixels gets 84.5% of held-out images (chance: 10%)
    means = np.stack([x[train][labels[train] == k].mean(0) for k in range(10)])
    pred = np.argmin(((x[test, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == labels[test]).mean() > 0.75
    # diverse: in every class the RMS distance to the class mean (0.10 to 0.16) exceeds the smallest
    # distance between two class means (0.047): position, size, rotation and background vary
    spread = [np.sqrt(((x[labels == k] - means[k]) ** 2).mean()) for k in range(10)]
    between = np.sqrt(((means[:, None] - means[None]) ** 2).mean(-1))
    assert min(spread) > 0.08 and min(spread) > between[~np.eye(10, dtype=bool)].min()


def _cli(capsys, *args):
    code = main(["prepare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_and_default_output_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, "builtin:shapes", "--limit", 40, "--size", 16, "--workers", 1, "--json")
    assert code == 0 and "prepare: wrote data/shapes16.h5" in err
    doc = json.loads(out)  # stdout holds exactly one JSON document: the envelope of docs/json.md
    assert doc["outputs"]["dataset"] == "data/shapes16.h5" and doc["results"]["count"] == 40
    assert doc["settings"]["size"] == 16
    assert (tmp_path / "data" / "shapes16.h5").is_file()
    code, out, _ = _cli(capsys, "builtin:shapes", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["results"]["dry_run"] is True and json.loads(out)["results"]["count"] == 20_000


def test_cli_under_torchrun_only_rank_0_prepares(tmp_path, capsys, monkeypatch):
    """N torchrun copies must not write the same parts and output: rank 0 works, the others exit 0."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # as torchrun sets them
    monkeypatch.setenv("MASTER_PORT", "29500")
    args = ("builtin:shapes", "--limit", 20, "--size", 16, "--workers", 1)
    monkeypatch.setenv("RANK", "1")
    code, out, err = _cli(capsys, *args)
    assert (code, out, err) == (0, "", "") and not (tmp_path / "data").exists()
    monkeypatch.setenv("RANK", "0")
    code, _, err = _cli(capsys, *args)
    assert code == 0 and "rank 0 alone prepares" in err and (tmp_path / "data" / "shapes16.h5").is_file()


def test_cli_errors_are_one_line_and_leave_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "junk.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 10)
    cases = [
        (["missing/"], 1, "cfgdiff: error: source not found: missing/"),
        (["junk.zip"], 1, "cfgdiff: error: "),
        (["builtin:shapes", "--out", "afile/x.h5"], 1, "cfgdiff: error: cannot create the output folder afile"),
        (["builtin:shapes", "--limit", "0"], 2, "Invalid value for '--limit'"),
    ]
    for args, want_code, message in cases:
        code, out, err = _cli(capsys, *args)
        assert code == want_code and message in err and out == "", (args, err)
        if want_code == 1:
            assert err.strip().splitlines()[-1].startswith("cfgdiff: error:") and err.count("cfgdiff: error") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "junk.zip"]  # no data/, no partial files
    code, _, err = _cli(capsys, "builtin:shapes", "--size", 4)
    assert code == 2 and "--size" in err


def test_cli_prepare_never_imports_torch(tmp_path):
    """Decoding needs no torch; its import (seconds) would be most of a small prepare's wall time and
    counts against bench/prepare.py's whole-process ratio. A fresh interpreter runs the real CLI."""
    import subprocess
    import sys

    out = tmp_path / "s.h5"
    code = ("import sys; from cfgdiff.cli.app import main; "
            f"rc = main(['prepare', 'builtin:shapes', '--limit', '20', '--size', '16', '--workers', '1', '--out', {str(out)!r}]); "
            "sys.exit(rc or ('torch' in sys.modules and 'torch imported'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file()
