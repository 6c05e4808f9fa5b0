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
import json
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
from cfgdiff.data.sources import (
    Member,
    Source,
    Task,
    class_names,
    find_class_map,
    is_image_name,
    label_by_folder,
    member_path,
)
from cfgdiff.errors import DataError
from cfgdiff.files import open_regular

BATCH_IMAGES = 64  # images per task: enough to amortise the inter-process hop for CIFAR-sized files
BATCH_BYTES = 8 << 20  # ... but bounded in bytes for large photos
_SYNSET = re.compile(r"n\d{8}")
_COMPRESSED = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}

# what reading one member of a damaged archive can raise; the member is then skipped
READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError)
# no image file is larger (a 100-megapixel TIFF is 300 MB); a bigger member is skipped unread, so a
# 3 MB zip that inflates to gigabytes costs no memory (at most this much per member, per worker)
MAX_FILE_BYTES = 1 << 30

Reader = Callable[[Any], bytes]
# a tar member's ref: (offset, size) of its bytes in the tar stream, or for a GNU sparse member
# (offset, size, ((offset in the file, length), ...)): its stored blocks, the rest being holes
TarRef = tuple[int, int] | tuple[int, int, tuple[tuple[int, int], ...]]


def check_size(size: int) -> None:
    """OSError (the member is then skipped as unreadable) for a member larger than MAX_FILE_BYTES."""
    if size > MAX_FILE_BYTES:
        raise OSError(f"{size} bytes, over the {MAX_FILE_BYTES >> 20} MiB limit for one image file")


def read_capped(f: BinaryIO, declared: int) -> bytes:
    """A file's bytes, refusing one that declares or turns out more than MAX_FILE_BYTES."""
    check_size(declared)
    data = f.read(MAX_FILE_BYTES + 1)
    check_size(len(data))
    return data


def read_tar_member(read_at: Callable[[int, int], bytes], ref: TarRef) -> bytes:
    """A tar member's bytes through `read_at(offset, n)`; a sparse member's holes become zeros."""
    check_size(ref[1])
    if len(ref) == 2:
        return read_at(ref[0], ref[1])
    data, pos = bytearray(ref[1]), ref[0]
    for start, n in ref[2]:
        data[start : start + n] = read_at(pos, n)
        pos += n
    return bytes(data)


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
            yield self._read_file
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            yield lambda ref: read_tar_member(lambda offset, n: os.pread(fd, n, offset), ref)
        finally:
            os.close(fd)

    def _read_file(self, rel: str) -> bytes:
        with open_regular(Path(self.path, rel)) as f:  # a FIFO or a link to a device: unreadable, not a hang
            return read_capped(f, os.fstat(f.fileno()).st_size)


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

    def __init__(
        self,
        path: Path,
        paths: Sequence[tuple[str, Any]],
        split: str | None,
        class_map: str | None,
        labels: dict[str, int] | None = None,
    ):
        if labels is None:
            members, class_ids, chosen = label_by_folder(paths, split, str(path))
            order = "sorted class folder names"
        else:
            members, class_ids, chosen = label_by_json(paths, labels, split, str(path))
            order = "dataset.json labels"
        cmap = find_class_map(path, class_map)
        synsets = labels is None and all(_SYNSET.fullmatch(c) for c in class_ids)
        order = "sorted synset ids" if synsets else order
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


EDM_LABELS = "dataset.json"  # EDM's dataset_tool: {"labels": [["00000/img00000000.png", 6], ...]}


def edm_labels(text: bytes | str, where: str) -> dict[str, int]:
    """The labels of an EDM `dataset.json` by image path; DataError in one line if malformed."""
    try:
        pairs = json.loads(text)["labels"]
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{where}: not an EDM dataset.json ({type(exc).__name__}: {exc})") from None
    if pairs is None:
        raise DataError(f"{where} has no labels (\"labels\": null): an unconditional set cannot train a guided model")
    ok = isinstance(pairs, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and type(p[1]) is int and p[1] >= 0 for p in pairs
    )
    if not ok or not pairs:
        raise DataError(f"{where}: \"labels\" must be a non-empty list of [path, label >= 0] pairs")
    return {member_path(name): label for name, label in pairs}


def label_by_json(
    paths: Sequence[tuple[str, Any]], labels: dict[str, int], split: str | None, source: str
) -> tuple[list[Member], list[str], str]:
    """Members labelled by an EDM dataset.json, in the given order; class ids "0" .. "K-1"."""
    if split:
        raise DataError(f"{source} is labelled by {EDM_LABELS}, which has no splits; omit --split")
    images = [(member_path(p), ref) for p, ref in paths if is_image_name(p)]
    images = [(p, ref) for p, ref in images if not any(s.startswith(".") or s == "__MACOSX" for s in p.split("/"))]
    unlabelled = [p for p, _ in images if p not in labels]
    missing = sorted(set(labels) - {p for p, _ in images})
    if unlabelled or missing:
        what = f"{len(unlabelled)} images have no label in it" if unlabelled else f"it names {len(missing)} missing images"
        first = (unlabelled or missing)[0]
        raise DataError(f"{source}: {EDM_LABELS} does not match the images: {what} (first: {first})")
    members = [Member(p, labels[p], ref) for p, ref in images]
    return members, [str(k) for k in range(max(labels.values()) + 1)], ""


def _identity(folder: Path) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino


class FolderSource(EncodedSource):
    """DIR/[<split>/]<class>/<image>, in sorted path order."""

    kind = "class-folder"

    def __init__(self, path: Path, split: str | None, class_map: str | None):
        paths = []
        # links are followed, but not one back to a folder above it (that would list forever): the
        # (st_dev, st_ino) of the folders on the way down to each folder
        above = {str(path): {_identity(path)}}
        for root, dirs, files in os.walk(path, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            chain = above.pop(root)
            for d in list(dirs):
                key = _identity(Path(root, d))
                if key in chain:
                    dirs.remove(d)
                else:
                    above[os.path.join(root, d)] = chain | {key}
            rel = Path(root).relative_to(path).as_posix()
            paths += [posixpath.join(rel, f) if rel != "." else f for f in sorted(files)]
        labels = None
        if (path / EDM_LABELS).is_file():
            labels = edm_labels((path / EDM_LABELS).read_bytes(), str(path / EDM_LABELS))
        super().__init__(path, [(p, p) for p in paths], split, class_map, labels)

    def random_access(self) -> RandomAccess:
        return RandomAccess(str(self.path))


def _decompressor(path: Path) -> Callable[..., BinaryIO] | None:
    """gzip.open, bz2.open or lzma.open for a compressed file; None for a plain one."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((opener for magic, opener in _COMPRESSED.items() if head.startswith(magic)), None)


def _tar_ref(m: tarfile.TarInfo, base: int = 0) -> TarRef:
    if m.sparse is None:
        return (base + m.offset_data, m.size)
    return (base + m.offset_data, m.size, tuple((int(o), int(n)) for o, n in m.sparse))


def _tar_entries(path: Path) -> list[tuple[str, TarRef]]:
    """(class-folder path, ref) of every image in a tar, descending into member tars."""
    entries = []
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                name = member_path(m.name)
                if name.lower().endswith(".tar"):
                    entries += _inner_tar_entries(tf, m, name[:-4], path)
                elif is_image_name(name):
                    entries.append((name, _tar_ref(m)))
                # TarFile keeps every TarInfo it has read; iteration does not need them (it reads on
                # from tf.offset), so drop them to keep memory flat on archives of millions of files
                tf.members.clear()
    except (tarfile.TarError, *READ_ERRORS) as exc:
        raise DataError(f"cannot read tar archive {path}: {exc}") from None
    return entries


def _inner_tar_entries(tf: tarfile.TarFile, m: tarfile.TarInfo, folder: str, path: Path) -> list[tuple[str, TarRef]]:
    """The images of the member tar `m` as if it were the folder `folder` (its name less `.tar`).

    ILSVRC2012 train: n01440764.tar holds n01440764_10026.JPEG, ... -> class n01440764; a tar
    holding `<class>/<image>` keeps its class folders; a leading folder named like the tar itself
    (`tar -cf n01440764.tar n01440764/`) is that same folder.
    """
    if m.sparse is not None:
        raise DataError(f"cannot read tar archive {path}: its member {m.name} is a sparse tar (unpack it first)")
    stem = posixpath.basename(folder)
    entries = []
    with tarfile.open(fileobj=tf.extractfile(m), mode="r:") as inner:
        for im in inner:
            rel = member_path(im.name)
            if rel.split("/", 1)[0] == stem and "/" in rel:
                rel = rel.split("/", 1)[1]
            if im.isfile() and is_image_name(rel):
                entries.append((posixpath.join(folder, rel), _tar_ref(im, m.offset_data)))
            inner.members.clear()
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

            def read_at(offset: int, n: int) -> bytes:
                stream.seek(offset)
                return stream.read(n)

            yield lambda ref: read_tar_member(read_at, ref)


class ZipSource(EncodedSource):
    """A zip of class folders, in the archive's order."""

    kind = "zip"

    def __init__(self, path: Path, split: str | None, class_map: str | None):
        labels = None
        try:
            with zipfile.ZipFile(path) as zf:
                self.sizes = {i.filename: i.file_size for i in zf.infolist() if not i.is_dir()}
                if EDM_LABELS in self.sizes:
                    with zf.open(EDM_LABELS) as f:
                        labels = edm_labels(read_capped(f, self.sizes[EDM_LABELS]), f"{path}:{EDM_LABELS}")
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"cannot read zip archive {path}: {exc}") from None
        super().__init__(path, [(n, n) for n in self.sizes], split, class_map, labels)

    def size_of(self, m: Member) -> int:
        return self.sizes[m.ref]

    @contextlib.contextmanager
    def stream(self) -> Iterator[Reader]:
        with zipfile.ZipFile(self.path) as zf:

            def read(name: str) -> bytes:
                info = zf.getinfo(name)
                with zf.open(info) as f:
                    return read_capped(f, info.file_size)

            yield read
