"""Class-folder sources: a folder, a tar (plain, compressed, or a tar of tars) or a zip archive.

The main process reads each file's bytes in the source's order and hands batches to the workers,
so archives are read front to back and never extracted. Tar members are located by their byte
offset in the (decompressed) tar stream; for a tar of tars (ILSVRC2012_img_train.tar) that is the
inner tar's offset plus the member's offset inside it. A plain tar is then read with `os.pread`;
a compressed one as one forward stream.
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
from pathlib import Path
from typing import Any, BinaryIO

from cfgdiff.data.decode import EncodedBatch, ImageSpec
from cfgdiff.data.sources import Member, Source, Task, class_names, find_class_map, is_image_name, label_by_folder
from cfgdiff.errors import DataError

BATCH_IMAGES = 64  # images per task: enough to amortise the inter-process hop for CIFAR-sized files
BATCH_BYTES = 8 << 20  # ... but bounded in bytes for large photos
_SYNSET = re.compile(r"n\d{8}")
_COMPRESSED = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}

# what reading one member of a damaged archive can raise; the member is then skipped
READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError)

Reader = Callable[[Any], bytes]


class EncodedSource(Source):
    """A source of encoded image files: subclasses say how to list them and read one."""

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

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Reader]:
        raise NotImplementedError

    def tasks(self, parts: Sequence[Sequence[Member]], spec: ImageSpec) -> Iterator[Task]:
        with self._reader() as read:
            for members in parts:
                batch: list[bytes | str] = []
                size = 0
                for m in members:
                    try:
                        data: bytes | str = read(m.ref)
                    except READ_ERRORS as exc:  # unreadable member: skipped like an undecodable one
                        data = f"unreadable: {exc}"
                    batch.append(data)
                    size += len(data)
                    if len(batch) == BATCH_IMAGES or size >= BATCH_BYTES:
                        yield EncodedBatch(batch, spec)
                        batch, size = [], 0
                if batch:
                    yield EncodedBatch(batch, spec)


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

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Reader]:
        yield lambda rel: (self.path / rel).read_bytes()


def _open_stream(path: Path) -> tuple[Callable[..., BinaryIO] | None, bool]:
    """The decompressor for a compressed file (None for a plain one)."""
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, opener in _COMPRESSED.items():
        if head.startswith(magic):
            return opener, True
    return None, False


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

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Reader]:
        opener, compressed = _open_stream(self.path)
        if not compressed:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                yield lambda ref: os.pread(fd, ref[1], ref[0])
            finally:
                os.close(fd)
            return
        with opener(self.path, "rb") as stream:  # members come in offset order: forward seeks only

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
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"cannot read zip archive {path}: {exc}") from None
        super().__init__(path, [(n, n) for n in names], split, class_map)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Reader]:
        with zipfile.ZipFile(self.path) as zf:
            yield zf.read
