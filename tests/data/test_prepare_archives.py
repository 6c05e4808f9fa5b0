"""Archives and folders as real tools make them: `tar -C dir -cf x.tar .`, tars of tars, a tar holding
one tar, class folders with subfolders, GNU and PAX sparse members, link cycles, oversized members."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image
from prepare_support import SIZE, block_mean, class_folder_files, expected_pixels, write_folder

from cfgdiff.data import archives
from cfgdiff.data.decode import ImageSpec
from cfgdiff.data.prepare import PrepareConfig, open_source
from cfgdiff.errors import DataError

FILES = class_folder_files()
TRAIN = {k.split("/", 1)[1]: v for k, v in FILES.items() if k.startswith("train/")}  # <class>/<image>
SPEC = ImageSpec(SIZE, "area")
needs_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")


def _source(path, **kw):
    return open_source(PrepareConfig(source=str(path), size=SIZE, **kw))


def _pixels(source):
    decoded = [task.run() for task in source.tasks([source.members], SPEC)]
    return np.concatenate([d.images for d in decoded]), [r for d in decoded for r in d.reasons]


def _tar(*args):
    subprocess.run(["tar", *map(str, args)], check=True, capture_output=True)


def _assert_reads(source, files):
    """`source` lists exactly `files` ({"<class>/<image>": bytes}) with their labels and pixels."""
    assert source.class_ids == ["class0", "class1", "class2"]
    names = {m.name[-len("classN/000.png"):]: m for m in source.members}
    assert sorted(names) == sorted(files) and len(source.members) == len(files)
    images, reasons = _pixels(source)
    assert reasons == [""] * len(files)
    for m, img in zip(source.members, images):
        key = m.name[-len("classN/000.png"):]
        assert m.label == int(key[5]) and np.array_equal(img, expected_pixels(files[key]))


@needs_tar
@pytest.mark.parametrize("compress", ["", "z"])
def test_tar_of_dot_made_with_the_tar_command(tmp_path, compress):
    write_folder(tmp_path / "set", FILES)
    _tar(f"-C{tmp_path / 'set'}", f"-c{compress}f", tmp_path / "set.tar", ".")  # members ./train/class0/...
    source = _source(tmp_path / "set.tar")
    assert source.split == "train" and all(not m.name.startswith(".") for m in source.members)
    _assert_reads(source, TRAIN)
    assert [m.name for m in _source(tmp_path / "set.tar", split="test").members][0] == "test/class0/000.png"


@needs_tar
def test_tar_of_tars_made_with_the_tar_command(tmp_path):
    for c in range(3):
        write_folder(tmp_path / "flat" / f"class{c}", {k.split("/")[1]: v for k, v in TRAIN.items() if k.startswith(f"class{c}/")})
        (tmp_path / "tars").mkdir(exist_ok=True)
        _tar(f"-C{tmp_path / 'flat' / f'class{c}'}", "-cf", tmp_path / "tars" / f"class{c}.tar", ".")
    _tar(f"-C{tmp_path / 'tars'}", "-cf", tmp_path / "train.tar", ".")  # ./class0.tar holding ./000.png
    source = _source(tmp_path / "train.tar")
    assert source.split == ""
    _assert_reads(source, TRAIN)


@needs_tar
def test_a_tar_holding_one_tar_of_class_folders_keeps_the_classes(tmp_path):
    write_folder(tmp_path / "set", TRAIN)
    (tmp_path / "box").mkdir()
    _tar(f"-C{tmp_path / 'set'}", "-cf", tmp_path / "box" / "data.tar", ".")
    _tar(f"-C{tmp_path / 'box'}", "-cf", tmp_path / "outer.tar", "data.tar")
    _assert_reads(_source(tmp_path / "outer.tar"), TRAIN)


def test_a_class_folders_subfolder_belongs_to_that_class(tmp_path):
    files = dict(TRAIN)
    files["class1/extra/deeper/x.png"] = files.pop("class1/001.png")  # no split, no class of its own
    source = _source(write_folder(tmp_path / "set", files))
    assert source.class_ids == ["class0", "class1", "class2"] and source.split == ""
    labels = {m.name: m.label for m in source.members}
    assert labels["class1/extra/deeper/x.png"] == 1 and len(labels) == len(files)
    # the same under a split folder: subfolders of train/class1 are still class1 of train
    split = {f"train/{k}": v for k, v in files.items()} | {f"test/{k}": v for k, v in TRAIN.items()}
    source = _source(write_folder(tmp_path / "split", split), split="train")
    assert {m.name: m.label for m in source.members}["train/class1/extra/deeper/x.png"] == 1


def _sparse_bmp(path):
    """A BMP with a black middle written as a file with a hole (a real sparse file); its bytes."""
    a = np.zeros((128, 64, 3), np.uint8)
    a[:8], a[-8:, :, 1] = 200, 90
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "BMP")
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for i in range(0, len(data), 4096):
            block = data[i : i + 4096]
            if any(block) or i + 4096 >= len(data):
                f.seek(i)
                f.write(block)
    return data


@needs_tar
@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_members_read_with_their_holes(tmp_path, fmt):
    data = {f"class{c}/x.bmp": _sparse_bmp(tmp_path / "set" / f"class{c}" / "x.bmp") for c in range(2)}
    if os.stat(tmp_path / "set" / "class0" / "x.bmp").st_blocks * 512 >= len(data["class0/x.bmp"]):
        pytest.skip("this file system stores no holes")
    _tar("--sparse", f"--format={fmt}", f"-C{tmp_path / 'set'}", "-cf", tmp_path / "s.tar", ".")
    with tarfile.open(tmp_path / "s.tar") as tf:
        assert all(m.sparse for m in tf if m.isfile())  # the test is about sparse members
    for path in (tmp_path / "s.tar", tmp_path / "set"):
        source = _source(path)
        images, reasons = _pixels(source)
        assert reasons == ["", ""]
        for m, img in zip(source.members, images):
            assert np.array_equal(img, block_mean(np.asarray(Image.open(io.BytesIO(data[m.name]))), SIZE))


def test_links_back_up_the_tree_are_listed_once(tmp_path):
    root = write_folder(tmp_path / "set", TRAIN)
    os.symlink("..", root / "class0" / "up")
    os.symlink("..", root / "class0" / "up2")
    os.symlink(root, root / "class2" / "root")
    os.symlink(root / "class1", root / "class1" / "self")

    def hung(signum, frame):
        raise TimeoutError("listing a folder with link cycles did not end")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)  # without the cycle check the listing never ends
    try:
        source = _source(root)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert sorted(m.name for m in source.members) == sorted(TRAIN) and source.class_ids == ["class0", "class1", "class2"]


def test_members_over_the_size_limit_are_skipped_unread(tmp_path, monkeypatch):
    files = dict(TRAIN)
    files["class0/big.bmp"] = b"BM" + bytes(200_000)  # compresses to almost nothing
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    write_folder(tmp_path / "set", files)
    with tarfile.open(tmp_path / "set.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "set", ".")
    monkeypatch.setattr(archives, "MAX_FILE_BYTES", 100_000)
    for path in (zpath, tmp_path / "set", tmp_path / "set.tar.gz"):
        source = _source(path)
        _, reasons = _pixels(source)
        by_name = dict(zip((m.name for m in source.members), reasons))
        assert "over the 0 MiB limit" in by_name["class0/big.bmp"] and "200002 bytes" in by_name["class0/big.bmp"]
        assert sum(1 for r in reasons if r) == 1


def _edm_set(files: dict[str, bytes]) -> tuple[dict[str, bytes], dict]:
    """EDM dataset_tool's layout: 00000/img00000000.png, ... and dataset.json with [path, label]."""
    images, labels = {}, []
    for i, (name, data) in enumerate(sorted(files.items())):
        path = f"{i // 1000:05d}/img{i:08d}.png"
        images[path] = data
        labels.append([path, int(name[5])])  # class<k>/...
    return images, {"labels": labels}


def test_edm_dataset_json_zips_and_folders_take_their_labels_from_it(tmp_path):
    import json

    images, meta = _edm_set(TRAIN)
    with zipfile.ZipFile(tmp_path / "edm.zip", "w") as zf:
        for name, data in images.items():
            zf.writestr(name, data)
        zf.writestr("dataset.json", json.dumps(meta))
    folder = write_folder(tmp_path / "edm", images)
    (folder / "dataset.json").write_text(json.dumps(meta))
    want = {p: k for p, k in meta["labels"]}
    for path in (tmp_path / "edm.zip", folder):
        source = _source(path)
        assert source.class_ids == ["0", "1", "2"] and source.label_order == "dataset.json labels"
        assert {m.name: m.label for m in source.members} == want
        pixels, reasons = _pixels(source)
        assert reasons == [""] * len(images)
        for m, img in zip(source.members, pixels):
            assert np.array_equal(img, expected_pixels(images[m.name]))


def test_bad_dataset_json_fails_in_one_line(tmp_path):
    import json

    images, meta = _edm_set(TRAIN)
    cases = {
        "null": ({"labels": None}, "has no labels"),
        "text": ("not json", "not an EDM dataset.json"),
        "negative": ({"labels": [[p, -1] for p, _ in meta["labels"]]}, "must be a non-empty list"),
        "short": ({"labels": meta["labels"][1:]}, "1 images have no label in it"),
        "extra": ({"labels": meta["labels"] + [["00000/nope.png", 0]]}, "names 1 missing images"),
    }
    for name, (content, message) in cases.items():
        folder = write_folder(tmp_path / name, images)
        (folder / "dataset.json").write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(DataError, match=message) as err:
            _source(folder)
        assert "\n" not in str(err.value)
