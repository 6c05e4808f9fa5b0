"""Benchmark whole-process `cfgdiff prepare` against a single-process Pillow loop.

The baseline is the naive loop a user would write (and the way EDM's dataset_tool and Chrabaszcz
et al.'s resizer work): one process, `Image.open → convert("RGB") → resize((S, S), BOX)` per
file, stacked into one array. `prepare` runs as a user runs it, `python -m cfgdiff prepare` in a
subprocess, start-up (torch included) counted; `--resize box` must give the baseline's pixels
exactly (checked), the default `area` is the exact area mean. Rounds alternate the variants and the
medians are compared, so load from other processes hits all alike. The machine's limit is
cores × the single-process decode-only rate (open + convert, no resize): no prepare can beat it.
On a shared machine the wall-clock ratio depends on how many cores are free, so every round also
measures the machine's parallel capacity (how much faster two CPU-bound processes finish two jobs
than one), and each variant's CPU time per image (its workers included), which load barely moves.

    .venv/bin/python bench/prepare.py                      # CIFAR-10 test split + 5000 large JPEGs
    .venv/bin/python bench/prepare.py --photos a.jpg b.jpg # also: draft error on real photos

It also measures how much --draft changes pixels (mean absolute difference on uint8) on the large
JPEGs and on any real photos given (each photo and a few random 500x375 crops of it, at 64 and 32).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the baseline is one process on one core
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from cfgdiff.data.decode import ImageSpec, decode_image  # noqa: E402
from cfgdiff.data.pool import cpu_count  # noqa: E402
from cfgdiff.config import PrepareConfig  # noqa: E402
from cfgdiff.data.prepare import prepare  # noqa: E402
import subprocess  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def synthetic_photo(rng: np.random.Generator, w: int = 500, h: int = 375) -> Image.Image:
    """A photo-like image: smooth noise over five scales, a few shapes, a slight blur and sensor grain.

    Sized like ImageNet's photos: about 70 KiB at 500x375 and 110 KiB at 640x480 (quality 90), where
    a real 500x375 photo crop at quality 90 is 75 KiB; the entropy-coded size is what decoding costs.
    """
    octaves = ((3, 1.0), (8, 0.5), (24, 0.3), (80, 0.2), (200, 0.15))
    field = np.zeros((h, w, 3))
    for cells, weight in octaves:
        coarse = rng.uniform(0, 255, (cells, max(2, cells * w // h), 3)).astype(np.uint8)
        field += weight * np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.float64)
    img = Image.fromarray((field / sum(wt for _, wt in octaves)).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 9)):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        box = [x0, y0, x0 + rng.integers(30, w // 2), y0 + rng.integers(30, h // 2)]
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    grain = rng.normal(0, 10, (h, w, 3))
    return Image.fromarray((np.asarray(img, dtype=np.float64) + grain).clip(0, 255).astype(np.uint8))


def make_large_jpegs(root: Path, n: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (500, 375) if i % 3 else (640, 480)
        synthetic_photo(rng, *size).save(folder / f"{i:05d}.jpg", quality=90)


def extract_cifar_test(root: Path, limit: int) -> None:
    with tarfile.open(CIFAR) as tf:
        members = [m for m in tf if m.isfile() and "/test/" in m.name]
        per_class: dict[str, int] = {}
        for m in members:
            cls = m.name.split("/")[-2]
            if per_class.get(cls, 0) < limit // 10:
                per_class[cls] = per_class.get(cls, 0) + 1
                (root / cls).mkdir(parents=True, exist_ok=True)
                (root / cls / Path(m.name).name).write_bytes(tf.extractfile(m).read())


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())  # prepare's order (sorted paths)


def baseline(root: Path, size: int) -> np.ndarray:
    """One process: open, convert("RGB"), Pillow's BOX resize; one array."""
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BOX)) for p in _files(root)])


def decode_only(root: Path) -> None:
    """The decode floor: open and convert every file, no resize."""
    for p in _files(root):
        Image.open(p).convert("RGB").load()


def run_prepare(root: Path, size: int, flags: list[str], out: Path, workers: int) -> np.ndarray:
    """`cfgdiff prepare` as a user runs it: a whole process, start-up included."""
    argv = [sys.executable, "-m", "cfgdiff", "prepare", str(root), "--size", str(size), "--out", str(out), "--force",
            "--workers", str(workers), *flags]
    subprocess.run(argv, check=True, capture_output=True, cwd=REPO)
    with h5py.File(out, "r") as f:
        return f["images"][:]


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (prepare's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _burn(n: int) -> int:
    return sum(i * i for i in range(n))


def parallel_capacity(workers: int, n: int = 2_000_000) -> float:
    """How much faster `workers` CPU-bound processes finish `workers` jobs than one process: the
    speed-up the machine can give right now (about `workers` when idle, about 1 when others load it)."""
    t0 = time.perf_counter()
    for _ in range(workers):
        _burn(n)
    serial = time.perf_counter() - t0
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        t0 = time.perf_counter()
        pool.map(_burn, [n] * workers)
        parallel = time.perf_counter() - t0
    return serial / parallel


VARIANTS = {"pillow loop (box)": None, "decode only": None, "prepare": [], "prepare --resize box": ["--resize", "box"],
            "prepare --draft": ["--draft"]}


def compare(name: str, root: Path, size: int, rounds: int, workers: int, tmp: Path) -> None:
    n = len(_files(root))
    wall: dict[str, list[float]] = {k: [] for k in VARIANTS}
    cpu: dict[str, list[float]] = {k: [] for k in VARIANTS}
    capacity, outputs = [], {}
    for _ in range(rounds):
        capacity.append(parallel_capacity(workers))
        for key, flags in VARIANTS.items():
            t0, c0 = time.perf_counter(), cpu_seconds()
            if key == "decode only":
                decode_only(root)
            elif flags is None:
                outputs[key] = baseline(root, size)
            else:
                outputs[key] = run_prepare(root, size, flags, tmp / "out.h5", workers)
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(cpu_seconds() - c0)
    assert np.array_equal(outputs["pillow loop (box)"], outputs["prepare --resize box"]), "box must equal Pillow's BOX"
    rate = {k: n / statistics.median(v) for k, v in wall.items()}
    base, limit = rate["pillow loop (box)"], cpu_count() * rate["decode only"]
    print(f"\n{name}: {n} files -> {size}x{size}, {workers} workers, median of {rounds} rounds")
    print(f"  parallel capacity of the machine during the rounds: x{statistics.median(capacity):.2f}"
          f" ({workers} busy processes vs 1; x{workers} when idle)")
    print(f"  machine limit (cores x decode-only rate): {limit:.1f} img/s")
    print(f"  {'':<22} {'img/s':>8} {'vs loop':>8} {'of limit':>9} {'CPU ms/img':>11}")
    for k in VARIANTS:
        ms = 1e3 * statistics.median(cpu[k]) / n
        print(f"  {k:<22} {rate[k]:8.1f} {rate[k] / base:7.2f}x {rate[k] / limit:8.0%} {ms:11.3f}")
    diff = np.abs(outputs["prepare --draft"].astype(np.int64) - outputs["prepare"]).astype(np.float64)
    print(f"  draft vs exact: mean |diff| {diff.mean():.3f}, max {int(diff.max())} (uint8 levels)")


def draft_error_on_photos(paths: list[Path]) -> None:
    rng = np.random.default_rng(0)
    for size in (64, 32):
        diffs = []
        for p in paths:
            img = Image.open(p).convert("RGB")
            crops = [img] + [
                img.crop((x, y, x + 500, y + 375))
                for x, y in zip(rng.integers(0, img.width - 500, 4), rng.integers(0, img.height - 375, 4))
            ]
            for crop in crops:
                buf = io.BytesIO()
                crop.save(buf, "JPEG", quality=90)
                exact = decode_image(buf.getvalue(), ImageSpec(size, "area"))
                drafted = decode_image(buf.getvalue(), ImageSpec(size, "area", draft=True))
                diffs.append(np.abs(exact.astype(np.int64) - drafted))
        d = np.stack(diffs)
        print(f"real photos ({len(d)} images from {len(paths)} photos) at {size}x{size}: draft vs exact "
              f"mean |diff| {d.mean():.3f}, 99th pct {np.percentile(d, 99):.0f}, max {d.max()} (uint8 levels)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", type=int, default=5000, help="number of large synthetic JPEGs")
    ap.add_argument("--cifar", type=int, default=10_000, help="CIFAR-10 test images (0 to skip)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="0: one per core")
    ap.add_argument("--photos", type=Path, nargs="*", default=[], help="real JPEG photos (>= 500x375)")
    args = ap.parse_args()
    workers = args.workers or cpu_count()
    print(f"cores: {cpu_count()}, python {sys.version.split()[0]}, pillow {Image.__version__}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_large_jpegs(tmp / "large", args.large)
        sizes = [p.stat().st_size for p in (tmp / "large").rglob("*.jpg")]
        print(f"large JPEGs: 500x375 and 640x480, quality 90, mean {np.mean(sizes) / 1024:.0f} KiB")
        compare("large JPEGs", tmp / "large", 64, args.rounds, workers, tmp)
        if args.cifar and CIFAR.exists():
            extract_cifar_test(tmp / "cifar", args.cifar)
            compare("CIFAR-10 test", tmp / "cifar", 32, args.rounds, workers, tmp)
    if args.photos:
        draft_error_on_photos(args.photos)


if __name__ == "__main__":
    main()
