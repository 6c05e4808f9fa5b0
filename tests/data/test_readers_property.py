"""Generated malformed inputs for the file readers (issue 15): npz samples/statistics, HDF5 datasets,
sweep.jsonl rows. Every input either reads (and then holds what the reader promises) or is one
`CfgdiffError`; never any other exception, and never an allocation beyond a stated bound.

The oracle is the readers' documented contract, restated here: images are (N, H, W, 3) uint8 with
N ≥ 1; statistics are `mu` (D,) and `sigma` (D, D) with a scalar integer `count`; a dataset has
`images` (N, S, S, 3) uint8, `labels` in [0, K) and its attributes.
"""

from __future__ import annotations

import io
import json
import tracemalloc

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfgdiff.data.dataset import dataset_info, read_labels
from cfgdiff.errors import CfgdiffError
from cfgdiff.metrics.sources import open_input
from cfgdiff.sampling.sweep_files import read_rows

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MEMORY_BOUND = 64 << 20  # bytes a reader may allocate for any of these (at most a few KB) files

DTYPES = st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_, np.int8, "U3"])
SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


@st.composite
def arrays(draw):
    dtype, shape = draw(DTYPES), draw(SHAPES)
    n = int(np.prod(shape)) if shape else 1
    if np.dtype(dtype).kind == "U":
        return np.array(["abc"] * n, dtype=dtype).reshape(shape)
    values = draw(st.lists(st.integers(-3, 300), min_size=n, max_size=n))
    return np.array(values).astype(dtype).reshape(shape)


MEMBERS = st.dictionaries(st.sampled_from(["arr_0", "arr_1", "mu", "sigma", "count", "mu_s", "sigma_s", "x"]),
                          arrays(), max_size=4)


def _bounded(fn):
    """Run fn under tracemalloc; fail if its peak exceeds MEMORY_BOUND."""
    tracemalloc.start()
    try:
        return fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_BOUND, f"reader allocated {peak} bytes"


def _read_everything(path):
    inp = open_input(path)
    if inp.images is not None:  # what the reader promises of images
        assert inp.images.count >= 1
        for batch in inp.images.batches(0, min(inp.images.count, 4), 2):
            assert batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[-1] == 3
    if inp.stats is not None:  # ... and of statistics
        mu, sigma = inp.stats["mu"], inp.stats["sigma"]
        assert mu.ndim == 1 and sigma.shape == (mu.shape[0], mu.shape[0])
    return inp


@SETTINGS
@given(members=MEMBERS)
def test_any_npz_reads_as_promised_or_is_one_error(tmp_path, members):
    path = tmp_path / "x.npz"
    buf = io.BytesIO()
    np.savez(buf, **members)
    path.write_bytes(buf.getvalue())
    try:
        _bounded(lambda: _read_everything(path))
    except CfgdiffError as e:
        assert "\n" not in str(e) and str(e)


@SETTINGS
@given(data=st.binary(max_size=200), cut=st.integers(0, 400))
def test_truncated_or_garbage_npz_is_one_error(tmp_path, data, cut):
    buf = io.BytesIO()
    np.savez(buf, arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    path = tmp_path / "x.npz"
    path.write_bytes(buf.getvalue()[:cut] + data)
    try:
        _bounded(lambda: _read_everything(path))
    except CfgdiffError as e:
        assert "\n" not in str(e)


@st.composite
def hdf5_files(draw):
    n = draw(st.integers(0, 3))
    k = draw(st.integers(0, 3))
    attrs = {"format": draw(st.sampled_from(["cfgdiff-dataset", "other", 7])),
             "size": draw(st.sampled_from([4, 0, -1, 2.5, "4"])),
             "num_classes": draw(st.sampled_from([k, 0, -2, "k"])),
             "count": draw(st.sampled_from([n, n + 1, 0, "n"]))}
    drop = draw(st.sets(st.sampled_from(sorted(attrs))))
    images = draw(st.sampled_from([np.zeros((n, 4, 4, 3), np.uint8), np.zeros((n, 4, 4, 3), np.float32),
                                   np.zeros((n, 4, 4), np.uint8), np.zeros((n, 4, 5, 3), np.uint8)]))
    labels = np.array(draw(st.lists(st.integers(-1, 4), min_size=n, max_size=n)), dtype=np.int64)
    class_ids = draw(st.sampled_from([[f"c{i}" for i in range(k)], ["only"], []]))
    return {a: v for a, v in attrs.items() if a not in drop}, images, labels, class_ids


@SETTINGS
@given(spec=hdf5_files())
def test_any_hdf5_dataset_opens_as_promised_or_is_one_error(tmp_path, spec):
    attrs, images, labels, class_ids = spec
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)
        f.create_dataset("names", data=np.array([b"x"] * len(labels)))
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["class_ids"] = class_ids
        f.attrs["class_names"] = class_ids
    try:
        info = _bounded(lambda: dataset_info(path))
        got = read_labels(path)
    except CfgdiffError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return
    # it opened: then it is a valid dataset by the contract
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == (4, 4, 3) and len(images) >= 1
    assert info.num_classes >= 1 and ((0 <= got) & (got < info.num_classes)).all()


@SETTINGS
@given(lines=st.lists(st.one_of(
    st.text(max_size=30),
    st.dictionaries(st.sampled_from(["w", "steps", "sampler", "grid", "guidance_interval", "fid"]),
                    st.one_of(st.none(), st.floats(allow_nan=True), st.integers(-5, 10**30), st.text(max_size=5),
                              st.lists(st.floats(), max_size=3)), max_size=6).map(json.dumps),
), max_size=8))
def test_any_sweep_rows_file_reads_or_drops_damaged_rows(tmp_path, lines):
    path = tmp_path / "sweep.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows = read_rows(path)  # never raises: damaged rows are dropped (and computed again)
    for key, row in rows.items():
        assert isinstance(row, dict) and float(row["w"]) == key[-1] and np.isfinite(key[-1])


def test_a_damaged_row_is_announced_once(tmp_path, capsys):
    path = tmp_path / "sweep.jsonl"
    path.write_text('{"w": 0, "fid": 3.5}\n{"fid": 1}\n[1, 2]\n{"w": "abc"}\n')
    rows = read_rows(path)
    assert [r["fid"] for r in rows.values()] == [3.5]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 damaged row(s) dropped" in err[0]


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
