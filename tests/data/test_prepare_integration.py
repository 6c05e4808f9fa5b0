"""Integration: the CIFAR-10 tar from ../shared, and real interruptions (Ctrl-C, kill -9) of the CLI."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cfgdiff.config import PrepareConfig
from cfgdiff.data.builtin import CHUNK, chunk_params, render
from cfgdiff.data.parts import part_length
from cfgdiff.data.prepare import prepare
from cfgdiff.data.resize import area_resize

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_cifar10_tar(cifar_tar, tmp_path):
    train = prepare(PrepareConfig(source=str(cifar_tar), size=32), dry_run=True)  # lists the train split
    assert (train.count, train.num_classes, train.split, train.output) == (50_000, 10, "train", "data/cifar10-jpg32.h5")

    out = tmp_path / "cifar-test.h5"
    result = prepare(PrepareConfig(source=str(cifar_tar), size=32, split="test"), out, workers=2)
    assert (result.count, result.skipped, result.num_classes) == (10_000, 0, 10)
    with h5py.File(out, "r") as f:
        assert [c for c in f.attrs["class_ids"]] == CIFAR_CLASSES
        labels, names = f["labels"][:], [n.decode() for n in f["names"][:]]
        assert np.array_equal(np.bincount(labels), [1000] * 10)
        picks = [0, 4321, 9999]
        images = f["images"][picks]
    with tarfile.open(cifar_tar) as tf:  # 32x32 JPEGs at size 32: Pillow's decode, unchanged
        from PIL import Image

        for i, img in zip(picks, images):
            assert names[i].split("/")[-2] == CIFAR_CLASSES[labels[i]]
            data = tf.extractfile(names[i]).read()
            assert np.array_equal(img, area_resize(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), 32))


def _cfgdiff() -> str:
    return str(Path(sys.executable).with_name("cfgdiff"))


def _start(cwd: Path, n: int) -> subprocess.Popen:
    args = [_cfgdiff(), "prepare", "builtin:shapes", "--size", "64", "--limit", str(n), "--workers", "1"]
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_parts(partial: Path, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(list(partial.glob("part-*.npz"))) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no part written in time"
        time.sleep(0.02)


@pytest.mark.faults
def test_interrupted_runs_leave_no_output_and_resume(tmp_path):
    per_part = part_length(64)
    n = 3 * per_part
    out, partial = tmp_path / "data" / "shapes64.h5", tmp_path / "data" / ".shapes64.h5.partial"

    first = _start(tmp_path, n)
    _wait_for_parts(partial, 1, first)
    first.send_signal(signal.SIGINT)  # Ctrl-C
    assert first.wait(30) != 0 and not out.exists()

    second = _start(tmp_path, n)
    _wait_for_parts(partial, 2, second)
    second.kill()  # kill -9
    second.wait(30)
    assert not out.exists() and len(list(partial.glob("part-*.npz"))) >= 2

    third = _start(tmp_path, n)
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    assert f"resuming: {2 * per_part} of {n} images already done" in err
    assert not partial.exists() and sorted(p.name for p in out.parent.iterdir()) == [
        ".cfgdiff-outputs.json", "shapes64.h5", "shapes64.json"]

    with h5py.File(out, "r") as f:
        assert f.attrs["count"] == n and np.array_equal(f["labels"][:], np.arange(n) % 10)
        for i in (0, per_part - 1, per_part, 2 * per_part + 5, n - 1):  # on both sides of each part boundary
            chunk = i // CHUNK
            expected = render(chunk_params(0, chunk, 10), 64)[i - chunk * CHUNK]
            assert np.array_equal(f["images"][i], expected), i
