"""Source kinds: listing, labels, splits, class maps, selection, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from prepare_support import (
    SIZE,
    block_mean,
    class_folder_files,
    expected_pixels,
    write_folder,
    write_tar,
    write_tar_of_tars,
    write_zip,
)

from cfgdiff.config import PrepareConfig
from cfgdiff.data.decode import ImageSpec
from cfgdiff.data.prepare import open_source
from cfgdiff.data.sources import Member, output_stem, select
from cfgdiff.errors import DataError

FILES = class_folder_files()
SPEC = ImageSpec(SIZE, "area")


def _pixels(source, members=None):
    members = source.members if members is None else members
    decoded = [task.run() for task in source.tasks([members], SPEC)]
    return np.concatenate([d.images for d in decoded]), [r for d in decoded for r in d.reasons]


def _source(path, **kw):
    return open_source(PrepareConfig(source=str(path), size=SIZE, **kw))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The same class-folder set as a folder and as every archive kind."""
    root = tmp_path_factory.mktemp("packed")
    return {
        "folder": write_folder(root / "set", FILES),
        "tar": write_tar(root / "set.tar", FILES),
        "tar.gz": write_tar(root / "set.tar.gz", FILES, "w:gz"),
        "tar.xz": write_tar(root / "set.tar.xz", FILES, "w:xz"),
        "zip": write_zip(root / "set.zip", FILES),
    }


@pytest.mark.parametrize("kind", ["folder", "tar", "tar.gz", "tar.xz", "zip"])
@pytest.mark.parametrize("split", [None, "test"])
def test_every_container_gives_the_same_members_and_pixels(packed, kind, split):
    source = _source(packed[kind], split=split)
    chosen = split or "train"  # several splits: train by default
    names = sorted(n for n in FILES if n.startswith(chosen + "/"))
    assert source.split == chosen and source.class_ids == ["class0", "class1", "class2"]
    assert sorted(m.name for m in source.members) == names
    assert all(m.label == int(m.name.split("/")[1][-1]) for m in source.members)
    images, reasons = _pixels(source)
    assert reasons == [""] * len(names)
    for m, img in zip(source.members, images):
        assert np.array_equal(img, expected_pixels(FILES[m.name]))


def test_tar_of_tars_reads_inner_members_by_offset(tmp_path):
    train = {k: v for k, v in FILES.items() if k.startswith("train/")}
    source = _source(write_tar_of_tars(tmp_path / "ILSVRC_train.tar", train))
    assert source.class_ids == ["class0", "class1", "class2"] and source.split == ""
    assert [m.name for m in source.members] == sorted(k.split("/", 1)[1] for k in train)
    images, _ = _pixels(source)
    for m, img in zip(source.members, images):
        assert np.array_equal(img, expected_pixels(train["train/" + m.name]))


def test_synset_folders_take_names_from_a_class_map_beside_them(tmp_path):
    files = {f"n0{i}000000/{j}.png": FILES[f"train/class{i}/00{j}.png"] for i in range(3) for j in range(2)}
    root = write_folder(tmp_path / "train", files)
    (tmp_path / "LOC_synset_mapping.txt").write_text("n02000000 kit fox, Vulpes macrotis\nn00000000 tench\n")
    source = _source(root)
    assert source.kind == "imagenet-class-folder" and source.label_order == "sorted synset ids"
    assert source.class_names == ["tench", "n01000000", "kit fox, Vulpes macrotis"]


def test_split_errors_name_the_splits(packed, tmp_path):
    with pytest.raises(DataError, match=r"has no split 'val' \(it has: test, train\)"):
        _source(packed["zip"], split="val")
    files = {k.replace("train/", "a/").replace("test/", "b/"): v for k, v in FILES.items()}
    with pytest.raises(DataError, match=r"several splits \(a, b\): choose one with --split"):
        _source(write_folder(tmp_path / "ab", files))


def test_bad_sources_fail_with_one_clear_line(tmp_path):
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "flat", {"a.png": FILES["train/class0/000.png"]})
    (tmp_path / "noise.tar").write_bytes(b"\x00garbage" * 100)
    cases = {
        tmp_path / "missing": "source not found",
        tmp_path / "empty": "contains no images",
        tmp_path / "flat": "has images but no class folders",
        tmp_path / "noise.tar": "unknown source",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message) as err:
            _source(path)
        assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="unknown built-in data set 'nope'"):
        _source("builtin:nope")


def test_select_takes_first_classes_then_balances_the_limit():
    members = [Member(f"{c}/{i}", c, None) for c in range(3) for i in range(4)]  # class-major order
    picked = select(members, classes=None, limit=5)
    assert [m.name for m in picked] == ["0/0", "0/1", "1/0", "1/1", "2/0"]  # 2 + 2 + 1, reading order kept
    assert [m.label for m in select(members, classes=2, limit=None)] == [0] * 4 + [1] * 4
    assert select(members, classes=None, limit=100) == members


def _write_npz(path, labels, side, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (len(labels), 3 * side * side), dtype=np.uint8)
    np.savez(path, data=data, labels=np.array(labels))
    return data


def test_npz_labels_are_remapped_from_map_clsloc_to_sorted_synsets(tmp_path):
    # map_clsloc order: index 1 = n02119789 (kit fox), 2 = n01440764 (tench), 3 = n01443537 (goldfish)
    (tmp_path / "map_clsloc.txt").write_text("n02119789 1 kit_fox\nn01440764 2 tench\nn01443537 3 goldfish\n")
    first = _write_npz(tmp_path / "train_data_batch_1.npz", [1, 2, 3, 1], 2 * SIZE, 0)  # 16x16 -> 8x8
    second = _write_npz(tmp_path / "train_data_batch_2.npz", [3, 2], 2 * SIZE, 1)
    source = _source(tmp_path)
    assert source.class_ids == ["n01440764", "n01443537", "n02119789"]  # tench = 0, as in sorted-synset order
    assert source.class_names == ["tench", "goldfish", "kit fox"]
    assert [m.label for m in source.members] == [2, 0, 1, 2, 1, 0]
    assert "remapped" in source.label_order
    images, _ = _pixels(source)
    hwc = np.concatenate([first, second]).reshape(-1, 3, 2 * SIZE, 2 * SIZE).transpose(0, 2, 3, 1)  # R, G, B planes
    assert np.array_equal(images, np.stack([block_mean(a, SIZE) for a in hwc]))


def test_npz_needs_its_class_map(tmp_path):
    _write_npz(tmp_path / "val_data.npz", [1], SIZE, 0)
    with pytest.raises(DataError, match="map_clsloc.txt"):
        _source(tmp_path / "val_data.npz")


@pytest.mark.parametrize(
    "source, split, stem",
    [
        ("../shared/data/cifar10-jpg.tar.gz", "", "cifar10-jpg"),
        ("../shared/data/cifar10-jpg.tar.gz", "test", "cifar10-jpg-test"),
        ("/data/imagenet/train", "", "imagenet"),
        ("/data/imagenet/val/", "", "imagenet-val"),
        ("/data/ILSVRC2012_img_train.tar", "", "ILSVRC2012_img_train"),
        ("builtin:shapes", "", "shapes"),
    ],
)
def test_default_output_names(source, split, stem):
    assert output_stem(source, split) == stem
