"""Class-folder sources: a folder, a tar (plain, compressed, or a tar of tars) or a zip archive.

Nothing is extracted. Tar members are located by their byte offset in the (decompressed) tar
stream; for a tar of tars (ILSVRC2012_img_train.tar) that is the inner tar's offset plus the
member's offset inside it. Who reads the bytes depends on the container:

- a folder or a plain tar allows random access, so each worker reads its own files (by path, or
  with `os.pread` at the offset): the main process only sends names, and no image bytes are
  pickled between processes (that cost 0.2 ms of CPU per ImageNet-sized photo);
- a compressed tar is one stream and a zip one central directory, so the main process reads them
  front to back and sends the bytes.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import posixpath
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cfgdiff.data.decode import Decoded, EncodedBatch, ImageSpec
from cfgdiff.data.sources import Member, Source, Task, class_names, find_class_map, is_image_name, label_by_folder
from cfgdiff.errors import DataError

BATCH_IMAGES = 64  # images per task: enough to amortise the inter-process hop for CIFAR-sized files
BATCH_BYTES = 8 << 20  # ... but bounded in bytes for large photos
_SYNSET = re.compile(r"n\d{8}")
_COMPRESSED = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}

# what reading one member of a damaged archive can raise; the member is then skipped
READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError)

Reader = Callable[[Any], bytes]


def read_all(read: Reader, refs: Sequence[Any]) -> list[bytes | str]:
    """The bytes of each ref, or the reason it could not be read (the image is then skipped)."""
    out: list[bytes | str] = []
    for ref in refs:
        try:
            out.append(read(ref))
        except READ_ERRORS as exc:
            out.append(f"unreadable: {exc}")
    return out


@dataclass(frozen=True)
class RandomAccess:
    """Files a worker can open itself: paths under a folder, or (offset, size) in a plain tar."""

    path: str
    plain_tar: bool = False

    @contextlib.contextmanager
    def open(self) -> Iterator[Reader]:
        if not self.plain_tar:
            yield lambda rel: Path(self.path, rel).read_bytes()
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            yield lambda ref: os.pread(fd, ref[1], ref[0])
        finally:
            os.close(fd)


@dataclass(frozen=True)
class ReadBatch:
    """A task: read these files in the worker, then decode them."""

    files: RandomAccess
    refs: list[Any]
    spec: ImageSpec

    def run(self) -> Decoded:
        with self.files.open() as read:
            return EncodedBatch(read_all(read, self.refs), self.spec).run()


def _runs(members: Sequence[Member], size_of: Callable[[Member], int]) -> Iterator[Sequence[Member]]:
    """Consecutive runs of at most BATCH_IMAGES members and (about) BATCH_BYTES bytes."""
    start, nbytes = 0, 0
    for i, m in enumerate(members):
        nbytes += size_of(m)
        if i + 1 - start == BATCH_IMAGES or nbytes >= BATCH_BYTES:
            yield members[start : i + 1]
            start, nbytes = i + 1, 0
    if start < len(members):
        yield members[start:]


class EncodedSource(Source):
    """Encoded image files: subclasses list them and say how to read them."""

    def __init__(self, path: Path, paths: Sequence[tuple[str, Any]], split: str | None, class_map: str | None):
        members, class_ids, chosen = label_by_folder(paths, split, str(path))
        cmap = find_class_map(path, class_map)
        synsets = all(_SYNSET.fullmatch(c) for c in class_ids)
        order = "sorted synset ids" if synsets else "sorted class folder names"
        super().__init__(path.name, class_ids, class_names(class_ids, cmap), members, order, chosen)
        self.path = path
        self.class_map_path = str(cmap.path) if cmap else ""
        if synsets:
            self.kind = "imagenet-" + self.kind

    def random_access(self) -> RandomAccess | None:
        """How workers read the files themselves, or None if the main process must stream them."""
        return None

    @contextlib.contextmanager
    def stream(self) -> Iterator[Reader]:
        """Reading in the main process, in member order."""
        raise NotImplementedError

    def size_of(self, m: Member) -> int:
        return 0  # unknown: batches are bounded by count only

    def tasks(self, parts: Sequence[Sequence[Member]], spec: ImageSpec) -> Iterator[Task]:
        files = self.random_access()
        if files is not None:
            for members in parts:
                for run in _runs(members, self.size_of):
                    yield ReadBatch(files, [m.ref for m in run], spec)
            return
        with self.stream() as read:
            for members in parts:
                for run in _runs(members, self.size_of):
                    yield EncodedBatch(read_all(read, [m.ref for m in run]), spec)


class FolderSource(EncodedSource):
    """DIR/[<split>/]<class>/<image>, in sorted path order."""

    kind = "class-folder"

    def __init__(self, path: Path, split: str | None, class_map: str | None):
        paths = []
        for root, dirs, files in os.walk(path, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = Path(root).relative_to(path).as_posix()
            paths += [posixpath.join(rel, f) if rel != "." else f for f in sorted(files)]
        super().__init__(path, [(p, p) for p in paths], split, class_map)

    def random_access(self) -> RandomAccess:
        return RandomAccess(str(self.path))


def _decompressor(path: Path) -> Callable[..., BinaryIO] | None:
    """gzip.open, bz2.open or lzma.open for a compressed file; None for a plain one."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((opener for magic, opener in _COMPRESSED.items() if head.startswith(magic)), None)


def _tar_entries(path: Path) -> list[tuple[str, tuple[int, int]]]:
    """(class-folder path, (offset, size)) of every image in a tar, descending into member tars."""
    entries = []
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                if m.name.lower().endswith(".tar"):
                    # ILSVRC2012 train: n01440764.tar holds n01440764_10026.JPEG, ... -> class n01440764
                    folder = posixpath.join(posixpath.dirname(m.name), posixpath.basename(m.name)[:-4])
                    with tarfile.open(fileobj=tf.extractfile(m), mode="r:") as inner:
                        for im in inner:
                            if im.isfile() and is_image_name(im.name):
                                name = posixpath.join(folder, posixpath.basename(im.name))
                                entries.append((name, (m.offset_data + im.offset_data, im.size)))
                elif is_image_name(m.name):
                    entries.append((m.name, (m.offset_data, m.size)))
                # TarFile keeps every TarInfo it has read; iteration does not need them (it reads on
                # from tf.offset), so drop them to keep memory flat on archives of millions of files
                tf.members.clear()
    except (tarfile.TarError, *READ_ERRORS) as exc:
        raise DataError(f"cannot read tar archive {path}: {exc}") from None
    return entries


class TarSource(EncodedSource):
    """A tar, plain or compressed, of class folders or of one tar per class; in archive order."""

    kind = "tar"

    def __init__(self, path: Path, split: str | None, class_map: str | None):
        super().__init__(path, _tar_entries(path), split, class_map)
        self.decompressor = _decompressor(path)

    def size_of(self, m: Member) -> int:
        return m.ref[1]

    def random_access(self) -> RandomAccess | None:
        return RandomAccess(str(self.path), plain_tar=True) if self.decompressor is None else None

    @contextlib.contextmanager
    def stream(self) -> Iterator[Reader]:
        with self.decompressor(self.path, "rb") as stream:  # members come in offset order: forward seeks only

            def read(ref: tuple[int, int]) -> bytes:
                stream.seek(ref[0])
                return stream.read(ref[1])

            yield read


class ZipSource(EncodedSource):
    """A zip of class folders, in the archive's order."""

    kind = "zip"

    def __init__(self, path: Path, split: str | None, class_map: str | None):
        try:
            with zipfile.ZipFile(path) as zf:
                self.sizes = {i.filename: i.file_size for i in zf.infolist() if not i.is_dir()}
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"cannot read zip archive {path}: {exc}") from None
        super().__init__(path, [(n, n) for n in self.sizes], split, class_map)

    def size_of(self, m: Member) -> int:
        return self.sizes[m.ref]

    @contextlib.contextmanager
    def stream(self) -> Iterator[Reader]:
        with zipfile.ZipFile(self.path) as zf:
            yield zf.read
