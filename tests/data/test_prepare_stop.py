"""prepare with pool workers, stopped as a terminal, scancel or docker stop stop it (a signal to the
whole process group), or killed with kill -9: no worker dies first or outlives it, and a rerun resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from cfgdiff.data.parts import part_length

pytestmark = [pytest.mark.faults, pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")]
SIZE = 256  # large outputs: small parts, so a part is saved early
PER_PART = part_length(SIZE)
PARTS = 4
ARGS = ["prepare", "set", "--size", str(SIZE), "--workers", "2", "--out", "d.h5"]


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> Path:
    """PARTS parts of 64 × 64 PNGs (cheap to decode) in 2 class folders; image i of class c is i·2 + c."""
    root = tmp_path_factory.mktemp("stop") / "set"
    rng = np.random.default_rng(0)
    for i in range(PARTS * PER_PART):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png", compress_level=0)
    return root


def _group(pgid: int) -> list[str]:
    """`ps` lines of the live (not zombie) processes of process group `pgid`."""
    ps = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [ln for ln in ps.splitlines() if int(ln.split()[1]) == pgid and not ln.split()[2].startswith("Z")]


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    try:
        return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _start(cwd: Path, args: list[str]) -> tuple[subprocess.Popen, Path]:
    err = cwd / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CFGDIFF_DEBUG": ""}
    with open(err, "w") as f:  # a file, so that a kill keeps what was written
        proc = subprocess.Popen([sys.executable, "-m", "cfgdiff", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=f, start_new_session=True)  # its own process group, like a shell job
    return proc, err


def _wait(ready, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "prepare ended before the signal"
        assert time.monotonic() < deadline, "prepare never reached the signal point"
        time.sleep(0.05)


def _no_process_left(pgid: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group(pgid), _group(pgid)


def test_kill_9_of_prepare_takes_its_workers_along(tmp_path, image_set):
    (tmp_path / "set").symlink_to(image_set)
    proc, _ = _start(tmp_path, ARGS)
    try:
        _wait(lambda: len(_children(proc.pid)) >= 2, proc)
        time.sleep(0.5)  # the workers are busy, with results in flight
        proc.kill()
        proc.wait()
        _no_process_left(proc.pid)
    finally:
        if _group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_process_group_signal_keeps_the_parts_and_the_rerun_resumes(tmp_path, image_set, sig):
    (tmp_path / "set").symlink_to(image_set)
    partial = tmp_path / ".d.h5.partial"
    proc, err = _start(tmp_path, ARGS)
    try:
        _wait(lambda: len(list(partial.glob("part-*.npz"))) >= 1 and len(_children(proc.pid)) >= 2, proc)
        os.killpg(proc.pid, sig)  # what Ctrl-C in a terminal, scancel and docker stop do
        code = proc.wait(120)
        if code == 0:
            pytest.skip("prepare finished before the signal landed (a very fast machine)")
        _no_process_left(proc.pid)
    finally:
        if _group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    text = err.read_text()
    errors = [ln for ln in text.splitlines() if ln.startswith("cfgdiff: error:")]
    assert code == 128 + sig, text
    assert len(errors) == 1 and f"stopped by {signal.Signals(sig).name}" in errors[0], text
    assert "Traceback" not in text and "BrokenProcessPool" not in text, text
    saved = len(list(partial.glob("part-*.npz")))
    assert saved >= 1 and not (tmp_path / "d.h5").exists()

    proc, err = _start(tmp_path, ARGS)
    assert proc.wait(300) == 0, err.read_text()
    n = PARTS * PER_PART
    assert f"resuming: {saved * PER_PART} of {n} images already done" in err.read_text()
    with h5py.File(tmp_path / "d.h5") as f:  # class folders in sorted order: c0's images, then c1's
        assert np.array_equal(f["labels"][:], np.repeat([0, 1], n // 2))
        assert [name.decode() for name in f["names"][:3]] == ["c0/00000.png", "c0/00002.png", "c0/00004.png"]
    assert not partial.exists()


class _Slow:
    """A pool task: a short sleep, then one labelled black image."""

    def __init__(self, i: int):
        self.i = i

    def run(self):
        from cfgdiff.data.decode import Decoded

        time.sleep(0.05)
        return Decoded(np.full((1, 1, 1, 3), self.i, np.uint8), [""])


def test_pool_workers_leave_sigint_and_sigterm_to_the_main_process():
    from cfgdiff.data.pool import run_tasks

    results = run_tasks((_Slow(i) for i in range(40)), workers=2)
    got = [int(next(results).images[0, 0, 0, 0])]
    workers = _children(os.getpid())
    assert len(workers) >= 2
    for pid in workers:  # a group signal reaches the workers too; they must neither die nor stop
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
    got += [int(d.images[0, 0, 0, 0]) for d in results]
    assert got == list(range(40))



_FAULTS = """
import io, resource, sys
import numpy as np
from PIL import Image
from cfgdiff.data.decode import ImageSpec, decode_image
if sys.argv[1] == "keep":
    from cfgdiff.data.pool import _keep_heap_pages
    assert _keep_heap_pages()
rng = np.random.default_rng(0)
buf = io.BytesIO()
photo = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
photo.save(buf, "PNG") if sys.argv[2] == "pillow" else photo.save(buf, "JPEG", quality=90)  # PNG: Pillow decodes it
spec = ImageSpec(64, "area")
decode_image(buf.getvalue(), spec)  # the first image may fault whatever malloc does
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    decode_image(buf.getvalue(), spec)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_workers_reuse_heap_pages_for_per_image_arrays():
    """What a worker does per photo (decode a 640x480 JPEG, area-resize to 64²), counted by the kernel
    (ru_minflt): with glibc's defaults it faults in fresh pages (through Pillow's decoder always; through
    the libjpeg-turbo fast path in some runs, as glibc's dynamic mmap threshold happens to move), and
    with the worker's heap kept it almost never does, on either path."""
    counts = {}
    for decoder in ("pillow", "fast"):
        for mode in ("default", "keep"):
            proc = subprocess.run([sys.executable, "-c", _FAULTS, mode, decoder], capture_output=True, text=True,
                                  timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            counts[decoder, mode] = int(proc.stdout)
    print(counts)
    assert counts["pillow", "default"] > 50 * 100, counts  # why workers keep their heap
    assert counts["pillow", "keep"] < 50 * 5 and counts["fast", "keep"] < 50 * 5, counts  # what they then cost
