"""Fixture builders shared by the prepare tests (no tests here): small image sets the tests write
themselves, with pixels whose downsampled value the tests know independently of cfgdiff's code."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 8


def block_mean(a: np.ndarray, size: int) -> np.ndarray:
    """The reference area downsampling for sides that are multiples of `size`: rounded block means."""
    h, w, c = a.shape
    blocks = a.reshape(size, h // size, size, w // size, c).astype(np.float64)
    return np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def smooth_image(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth random RGB image (a photo-like low-frequency field, not white noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))


def encode(a: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    img = Image.fromarray(a)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def expected_pixels(data: bytes, size: int = SIZE) -> np.ndarray:
    """Pillow's own full decode to RGB, then the block-mean reference."""
    return block_mean(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), size)


def class_folder_files(classes: int = 3, per_class: int = 4, splits: tuple[str, ...] = ("train", "test")) -> dict:
    """{"<split>/<class>/<file>": PNG bytes} with sides 2·SIZE × 3·SIZE (exact block means)."""
    files = {}
    for s, split in enumerate(splits):
        for c in range(classes):
            for i in range(per_class):
                a = smooth_image(1000 * s + 10 * c + i, 2 * SIZE, 3 * SIZE)
                files[f"{split}/class{c}/{i:03d}.png"] = encode(a, "PNG")
    return files


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            _add(tf, name, data)
    return path


def write_tar_of_tars(path: Path, files: dict[str, bytes]) -> Path:
    """ILSVRC2012_img_train.tar's layout: <class>.tar members holding that class's flat files."""
    by_class: dict[str, dict[str, bytes]] = {}
    for name, data in files.items():
        cls, fname = name.split("/")[-2:]
        by_class.setdefault(cls, {})[fname] = data
    with tarfile.open(path, "w") as outer:
        for cls, members in sorted(by_class.items()):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for fname, data in members.items():
                    _add(inner, fname, data)
            _add(outer, f"{cls}.tar", buf.getvalue())
    return path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path
