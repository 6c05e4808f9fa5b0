"""The dataset file's reader: info, errors, ImageDataset in DataLoader workers and under DistributedSampler."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from cfgdiff.config import PrepareConfig
from cfgdiff.data.dataset import ImageDataset, dataset_info, read_images, read_labels
from cfgdiff.data.prepare import prepare
from cfgdiff.errors import DataError

N = 60


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "shapes16.h5"
    prepare(PrepareConfig(source="builtin:shapes", size=16, limit=N), out, workers=1)
    return out


def test_info_and_readers(shapes):
    info = dataset_info(shapes)
    assert (info.size, info.num_classes, info.count, info.skipped) == (16, 10, N, 0)
    assert info.class_ids[:3] == ["disc", "square", "triangle"] and info.source == "builtin:shapes"
    with h5py.File(shapes, "r") as f:
        raw, labels = f["images"][:], f["labels"][:]
    assert np.array_equal(read_images(shapes, 5, 9), raw[5:9]) and read_images(shapes, 5, 9).dtype == np.uint8
    assert np.array_equal(read_labels(shapes), labels) and read_labels(shapes).dtype == np.int64
    with pytest.raises(DataError, match=r"images \[50, 61\) are outside the 60 images"):
        read_images(shapes, 50, 61)


def test_items_are_scaled_to_minus_one_one_and_flip_mirrors(shapes):
    raw = read_images(shapes, 0, N)
    plain = ImageDataset(shapes)
    x, label = plain[7]
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16) and label.dtype == torch.int64 and int(label) == 7
    assert torch.equal(x, torch.from_numpy(raw[7]).permute(2, 0, 1).float() / 127.5 - 1)
    assert x.min() >= -1 and x.max() <= 1
    torch.manual_seed(0)
    flipping = ImageDataset(shapes, flip=True)
    flipped = [flipping[i][0] for i in range(N)]
    mirrored = [torch.equal(f, plain[i][0].flip(-1)) for i, f in enumerate(flipped)]
    same = [torch.equal(f, plain[i][0]) for i, f in enumerate(flipped)]
    assert all(m or s for m, s in zip(mirrored, same)) and 15 < sum(mirrored) < 45  # each one or the other, ~half


def test_dataloader_workers_open_their_own_handle(shapes):
    ds = ImageDataset(shapes)
    ds[0]  # the parent holds an open handle before the workers fork
    loader = DataLoader(ds, batch_size=8, num_workers=2)
    labels = torch.cat([y for _, y in loader])
    assert torch.equal(labels, torch.from_numpy(read_labels(shapes)))


def test_distributed_sampler_shards_cover_every_image_once(shapes):
    ds = ImageDataset(shapes)
    seen = []
    for rank in range(3):
        sampler = DistributedSampler(ds, num_replicas=3, rank=rank, shuffle=True, seed=1)
        seen += [int(y) for _, y in DataLoader(ds, batch_size=7, sampler=sampler) for y in y]
    assert sorted(seen) == sorted(read_labels(shapes).tolist())


def test_bad_files_raise_one_clear_line(tmp_path, shapes):
    (tmp_path / "text.h5").write_text("hello")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(shapes.read_bytes()[: shapes.stat().st_size // 2])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with h5py.File(tmp_path / "damaged.h5", "w") as f:
        f.attrs.update(format="cfgdiff-dataset", size=16, num_classes=1, class_ids=["a"], class_names=["a"], count=2)
        f["images"] = np.zeros((2, 16, 16, 3), np.uint8)
    cases = {
        tmp_path / "missing.h5": "dataset file not found",
        tmp_path / "text.h5": "is not an HDF5 file",
        truncated: "truncated or damaged HDF5 file",
        tmp_path / "other.h5": "is not a cfgdiff dataset",
        tmp_path / "damaged.h5": "damaged cfgdiff dataset: labels, names missing",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message) as err:
            ImageDataset(path)
        assert "\n" not in str(err.value)


def _copy_with(src, dst, change):
    """A copy of the dataset file `src` at `dst`, with `change(f)` applied to the open copy."""
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        change(f)
    return dst


def _replace(key, value):
    def change(f):
        del f[key]
        f[key] = value

    return change


def _attr(key, value):
    def change(f):
        f.attrs[key] = value

    return change


def _labels(y):
    def change(f):
        f["labels"][:] = y

    return change


FAULTS = {  # a change to a good file -> what the one line must say
    "label-equal-k": (_labels(np.r_[np.zeros(N - 1, np.int64), 10]), r"label 10 is outside \[0, 10\)"),
    "label-above-k": (_labels(np.r_[np.zeros(N - 1, np.int64), 12]), r"label 12 is outside \[0, 10\)"),
    "label-negative": (_labels(np.r_[-1, np.zeros(N - 1, np.int64)]), r"label -1 is outside \[0, 10\)"),
    "float-images": (_replace("images", np.zeros((N, 16, 16, 3), np.float32)), "images are float32, not uint8"),
    "float-labels": (_replace("labels", np.zeros(N, np.float64)), "labels are float64, not integers"),
    "images-group": (lambda f: (f.__delitem__("images"), f.create_group("images")), "images not an array"),
    "count-zero": (_attr("count", 0), "attribute count is 0, must be >= 1"),
    "count-text": (_attr("count", "60"), "attribute count is '60', not an integer"),
    "count-vector": (_attr("count", np.array([60, 60])), "attribute count is .*not an integer"),
    "size-float": (_attr("size", 16.0), "attribute size is 16.0, not an integer"),
    "classes-missing": (lambda f: f.attrs.__delitem__("num_classes"), "num_classes missing"),
    "class-ids-short": (_attr("class_ids", np.array(["a"], dtype=h5py.string_dtype())), "class_ids does not hold"),
    "format-number": (_attr("format", 3), "is not a cfgdiff dataset"),
    "shape-mismatch": (_attr("count", N + 1), r"shapes .* do not match count 61"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_malformed_datasets_fail_when_opened_naming_the_file(tmp_path, shapes, fault):
    change, message = FAULTS[fault]
    path = _copy_with(shapes, tmp_path / f"{fault}.h5", change)
    for opener in (ImageDataset, dataset_info, read_labels):
        with pytest.raises(DataError, match=message) as err:
            opener(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_labels_up_to_k_minus_one_and_unsigned_labels_are_accepted(tmp_path, shapes):
    y = np.arange(N, dtype=np.uint8) % 10
    path = _copy_with(shapes, tmp_path / "u8.h5", _replace("labels", y))
    assert read_labels(path).tolist() == y.tolist() and int(ImageDataset(path)[N - 1][1]) == 9
