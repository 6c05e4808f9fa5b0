"""Inputs to `cfgdiff score`, each read in batches so 50,000 images never sit in memory at once.

- npz with `arr_0` (N, H, W, 3) uint8: ADM's sample and reference-batch format (`arr_1` labels ignored).
  The array is streamed from the zip member (np.savez and np.savez_compressed both work).
- npz of statistics: `mu`, `sigma`, optionally `mu_s`, `sigma_s` (ADM reference batches carry both these
  and `arr_0`; pytorch-fid stats files carry `mu` and `sigma`).
- cfgdiff HDF5 dataset: `images` (N, S, S, 3) uint8 with root attribute format = "cfgdiff-dataset".
- a folder of images (the suffixes `prepare` reads: `cfgdiff.data.sources.IMAGE_SUFFIXES`), nested
  folders included (EDM's `ImageFolderDataset`), sorted by relative path; hidden files and folders
  are skipped. Each image becomes RGB as `prepare` makes it (`cfgdiff.data.decode.to_rgb`).
- a zip of images (EDM's `dataset_tool.py` output, with or without its `dataset.json`), sorted by member name.

Images are decoded as RGB with Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) enforced
as an error, not a warning.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cfgdiff.data.decode import to_rgb
from cfgdiff.data.sources import IMAGE_SUFFIXES
from cfgdiff.errors import ConfigError, DataError
from cfgdiff.files import is_regular, require_regular

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # one image-input layer: the suffixes `prepare` reads (cfgdiff.data.sources)
STATS_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
# The feature dimensions every statistics file must have: the FID Inception's pool_3 (2048) and ADM's
# sFID spatial features (7 channels of mixed_6/conv at 17×17 = 2023); cfgdiff.metrics.inception's
# POOL_DIM and SPATIAL_DIM (torch-free here). Statistics of another network or another layer are
# refused: an FID between them would be a number that means nothing.
STATS_DIMS = {"mu": 2048, "mu_s": 2023}


class ImageSource:
    """N uint8 (H, W, 3) images readable in order; `batches(start, stop, size)` yields (B, H, W, 3) arrays."""

    kind = "images"

    def __init__(self, path: Path, count: int):
        self.path, self.count = Path(path), count

    def batches(self, start: int, stop: int, size: int) -> Iterator[np.ndarray]:
        raise NotImplementedError


class NpzImages(ImageSource):
    """`arr_0` of an npz, read row block by row block from the zip member."""

    kind = "npz"

    def __init__(self, path: Path, member: str = "arr_0.npy"):
        self.member = member  # np.savez names it arr_0.npy; other writers may leave out the suffix
        with zipfile.ZipFile(path) as z, z.open(member) as f:
            shape, self.dtype, self._offset = _npy_header(f, path)
        _check_image_array(shape, self.dtype, f"{path}: arr_0")
        self.shape = shape
        super().__init__(path, shape[0])

    def batches(self, start: int, stop: int, size: int) -> Iterator[np.ndarray]:
        row = int(np.prod(self.shape[1:]))
        with zipfile.ZipFile(self.path) as z, z.open(self.member) as f:
            f.seek(self._offset + start * row)  # forward seeks in a deflated member decompress and discard
            for i in range(start, stop, size):
                n = min(size, stop - i)
                data = f.read(n * row)
                if len(data) != n * row:
                    raise DataError(f"{self.path}: arr_0 is truncated (images {i}..{i + n - 1} incomplete)")
                yield np.frombuffer(data, np.uint8).reshape(n, *self.shape[1:])


class Hdf5Images(ImageSource):
    """The `images` dataset of a cfgdiff HDF5 dataset file."""

    kind = "hdf5"

    def __init__(self, path: Path):
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as e:  # h5py's "truncated file: eof = ..." would otherwise be a traceback
            raise DataError(f"{path}: truncated or damaged HDF5 file ({str(e).splitlines()[0]})") from None
        with f:
            if f.attrs.get("format") != "cfgdiff-dataset" or "images" not in f:
                raise DataError(f"{path}: not a cfgdiff dataset (no format='cfgdiff-dataset' attribute or no images)")
            shape, dtype = f["images"].shape, f["images"].dtype
        _check_image_array(shape, dtype, f"{path}: images")
        super().__init__(path, shape[0])

    def batches(self, start: int, stop: int, size: int) -> Iterator[np.ndarray]:
        import h5py

        with h5py.File(self.path, "r") as f:
            for i in range(start, stop, size):
                yield f["images"][i : min(i + size, stop)]


class FolderImages(ImageSource):
    """Image files of a folder and its subfolders in relative-path order; a batch ends where the size changes."""

    kind = "folder"

    def __init__(self, path: Path):
        self.files = image_files(Path(path))
        if not self.files:
            raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        super().__init__(path, len(self.files))

    def batches(self, start: int, stop: int, size: int) -> Iterator[np.ndarray]:
        return _same_size_batches((_read_image(f, f) for f in self.files[start:stop]), size)


class ZipImages(ImageSource):
    """Image members of a zip (EDM's dataset_tool output) in member-name order."""

    kind = "zip"

    def __init__(self, path: Path, members: list[str]):
        self.members = members
        super().__init__(path, len(members))

    def batches(self, start: int, stop: int, size: int) -> Iterator[np.ndarray]:
        with zipfile.ZipFile(self.path) as z:
            images = (_read_image(io.BytesIO(_member_bytes(z, m, self.path)), f"{self.path}:{m}")
                      for m in self.members[start:stop])
            yield from _same_size_batches(images, size)


MAX_MEMBER_BYTES = 1 << 30  # an image file above 1 GiB is a zip bomb, not a sample


def _member_bytes(z: zipfile.ZipFile, member: str, path: Path) -> bytes:
    if z.getinfo(member).file_size > MAX_MEMBER_BYTES:
        raise DataError(f"{path}:{member}: {z.getinfo(member).file_size:,} bytes uncompressed; refused as a zip bomb")
    return z.read(member)


def image_files(root: Path) -> list[Path]:
    """Image files under `root`, recursively (symlinked folders are not followed: no cycles), by relative path."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder) / f for f in files  # regular files only: a FIFO named x.png would block
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
                  and is_regular(Path(folder) / f)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _same_size_batches(images: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    run: list[np.ndarray] = []
    for image in images:
        if run and (image.shape != run[0].shape or len(run) == size):
            yield np.stack(run)
            run = []
        run.append(image)
    if run:
        yield np.stack(run)


# How a reference whose images are not the samples' size is compared (`score --ref-resize`):
# area: each image area-downsampled to the samples' size by prepare's exact area resize, as the
# training data was made; none: as they are (the Inception then resizes both to 299² from different
# sizes). Without either, a difference in size is refused: FID would measure it too.
REF_RESIZES = ("area", "none")


def first_size(source: ImageSource) -> tuple[int, int]:
    """(H, W) of the source's first image."""
    return tuple(next(iter(source.batches(0, 1, 1))).shape[1:3])  # type: ignore[return-value]


def size_refusal(path: Path, got: tuple[int, int], want: tuple[int, int], hint: str) -> str:
    """The one line that refuses a reference of another size than the samples."""
    return (f"{path}: the reference's images are {got[0]}x{got[1]} (first: {_first_name(path)}), the samples "
            f"{want[0]}x{want[1]}; FID, KID and precision/recall would measure that difference too. {hint}")


def _first_name(path: Path) -> str:
    return "image 0" if not path.is_dir() else str(next(iter(image_files(path)), path).name)


class SizeChecked(ImageSource):
    """Another source's images, each required to be (H, W) = `want`: a DataError names the first that is not."""

    def __init__(self, inner: ImageSource, want: tuple[int, int], hint: str):
        self.inner, self.want, self.hint, self.kind = inner, want, hint, inner.kind
        got = first_size(inner)
        if got != want:
            raise ConfigError(size_refusal(inner.path, got, want, hint))
        super().__init__(inner.path, inner.count)

    def batches(self, start: int, stop: int, size: int) -> Iterator[np.ndarray]:
        done = start
        for batch in self.inner.batches(start, stop, size):
            if batch.shape[1:3] != self.want:
                raise ConfigError(f"{self.path}: image {done} is {batch.shape[1]}x{batch.shape[2]}, the samples "
                                  f"{self.want[0]}x{self.want[1]}; {self.hint}")
            done += len(batch)
            yield batch


class AreaResized(ImageSource):
    """Another source's images, each resized to size × size by prepare's exact area resize."""

    def __init__(self, inner: ImageSource, size: int):
        from cfgdiff.data.resize import area_resize  # numpy and the optional C kernel, no torch

        self.inner, self.size, self.kind, self._resize = inner, size, inner.kind, area_resize
        super().__init__(inner.path, inner.count)

    def batches(self, start: int, stop: int, size: int) -> Iterator[np.ndarray]:
        for batch in self.inner.batches(start, stop, size):
            yield np.stack([self._resize(image, self.size) for image in batch])


@dataclasses.dataclass(frozen=True)
class Input:
    """One input path: its images (None for a statistics file) and stored statistics (None if none)."""

    path: Path
    kind: str  # npz | npz-stats | npz-reference | hdf5 | folder
    images: ImageSource | None
    stats: dict[str, np.ndarray] | None


def open_input(path: str | Path) -> Input:
    """Recognise an input by its content; DataError (one line) if it is none of the supported kinds."""
    path = Path(path)
    if path.is_dir():
        return Input(path, "folder", FolderImages(path), None)
    require_regular(path)
    if zipfile.is_zipfile(path):
        return _open_zip(path)
    with open(path, "rb") as f:
        if f.read(8) == b"\x89HDF\r\n\x1a\n":
            return Input(path, "hdf5", Hdf5Images(path), None)
    raise DataError(f"{path}: not an npz, a cfgdiff HDF5 dataset or a folder of images")


def _open_zip(path: Path) -> Input:
    """An npz (members `*.npy`, or ADM-style names without the suffix) or a zip of images."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"{path}: corrupt zip ({type(e).__name__}: {e})".splitlines()[0]) from e
    pictures = sorted(m for m in members if not m.endswith("/") and Path(m).suffix.lower() in IMAGE_EXTENSIONS)
    if pictures and not any(m.removesuffix(".npy") in ("arr_0", "mu") for m in members):
        return Input(path, "zip", ZipImages(path, pictures), None)
    return _open_npz(path, members)


def _open_npz(path: Path, members: list[str]) -> Input:
    try:
        names = {n.removesuffix(".npy") for n in members}
        arr_0 = "arr_0.npy" if "arr_0.npy" in members else "arr_0"
        images = NpzImages(path, arr_0) if "arr_0" in names else None
        stats = _read_stats(path) if {"mu", "sigma"} <= names else None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: corrupt npz ({type(e).__name__}: {e})".splitlines()[0]) from e
    if images is None and stats is None:
        raise DataError(f"{path}: npz has neither arr_0 (images) nor mu/sigma (statistics); keys: {sorted(names)}")
    kind = "npz-reference" if images and stats else ("npz" if images else "npz-stats")
    return Input(path, kind, images, stats)


def _read_stats(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        stats = {k: np.asarray(z[k], np.float64) for k in STATS_KEYS if k in z.files}
        if "count" in z.files:  # written by save_statistics; ADM's and pytorch-fid's files do not say
            stats["count"] = np.asarray(z["count"])
    check_stats(stats, str(path))
    return stats


def check_stats(stats: dict[str, np.ndarray], name: str) -> None:
    """DataError (one line) unless mu is (D,), sigma (D, D), mu_s/sigma_s paired alike, count one integer >= 0."""
    if ("mu_s" in stats) != ("sigma_s" in stats):
        raise DataError(f"{name}: has only one of mu_s and sigma_s")
    for mu, sigma in (("mu", "sigma"), ("mu_s", "sigma_s")):
        if mu in stats and (stats[mu].ndim != 1 or stats[sigma].shape != (len(stats[mu]),) * 2):
            raise DataError(f"{name}: {mu} must be (D,) and {sigma} (D, D), got {stats[mu].shape} and "
                            f"{stats[sigma].shape}")
        if mu in stats and len(stats[mu]) != STATS_DIMS[mu]:
            raise DataError(f"{name}: {mu} has {len(stats[mu])} dimensions, not the Inception network's "
                            f"{STATS_DIMS[mu]}; statistics of another network cannot be compared")
    if "count" in stats:
        count = stats["count"]
        if count.shape != () or count.dtype.kind not in "iu" or count < 0:
            raise DataError(f"{name}: count must be one non-negative integer, got {count.dtype} of shape "
                            f"{count.shape}")


def recorded_dataset(samples: str | Path) -> tuple[str | None, dict | None]:
    """The training dataset that `cfgdiff sample` recorded in `<samples>.json` and its fingerprint, or
    (None, None) (no or unreadable file)."""
    try:
        meta = json.loads(Path(f"{samples}.json").read_text())
    except (OSError, ValueError):
        return None, None
    dataset = meta.get("dataset") if isinstance(meta, dict) else None
    fingerprint = meta.get("dataset_fingerprint") if isinstance(meta, dict) else None
    return (dataset if isinstance(dataset, str) and dataset else None,
            fingerprint if isinstance(fingerprint, dict) else None)


def _npy_header(f, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of an .npy stream (numpy's format, versions 1.0 and 2.0)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except ValueError as e:
        raise DataError(f"{path}: corrupt arr_0 header ({e})") from e
    if fortran:
        raise DataError(f"{path}: arr_0 is stored in Fortran order; save it C-contiguous")
    return shape, dtype, f.tell()


def _check_image_array(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    if dtype != np.uint8:
        raise DataError(f"{name} must be uint8 images, got dtype {dtype}")
    if len(shape) != 4 or shape[-1] != 3:
        raise DataError(f"{name} must have shape (N, H, W, 3), got {tuple(shape)}")


def _read_image(file, name: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file or stream; DataError for an unreadable file or a decompression bomb."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # > MAX_IMAGE_PIXELS: refuse
            with Image.open(file) as im:
                im.load()
                return np.asarray(to_rgb(im))  # prepare's conventions: 16-bit scaled, palette alpha dropped
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{name}: refused as a possible decompression bomb ({e})".splitlines()[0]) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{name}: cannot read image ({e})".splitlines()[0]) from e
