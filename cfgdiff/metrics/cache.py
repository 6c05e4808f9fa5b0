"""The metrics' on-disk cache: where it lives, and content hashes (writes go through `cfgdiff.files`).

Layout under the cache root (`$XDG_CACHE_HOME/cfgdiff`, else `~/.cache/cfgdiff`):

    inception/     downloaded Inception weights
    references/    reference statistics, keyed by input content hash + weights hash
    hashes/        memo of content hashes, keyed by (path, size, mtime_ns), for a folder by every file's
                   (relative name, size, mtime_ns), so a 15 GB dataset is hashed once
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cfgdiff.errors import CfgdiffError
from cfgdiff.files import atomic_path, sha256_file

_NOTED: set[str] = set()


def cache_write(path: Path, write: Callable[[Path], None]) -> bool:
    """The cache rule: the cache only saves time, so a cache that cannot be written (read-only, full,
    not a folder) degrades to no cache, with one note per process; `write(tmp)` fills a temporary
    file that is renamed onto `path`. Returns whether it was written."""
    try:
        with atomic_path(path) as tmp:
            write(tmp)
        return True
    except (OSError, CfgdiffError) as e:
        root = str(Path(path).parent.parent)
        if root not in _NOTED:
            _NOTED.add(root)
            reason = getattr(e, "strerror", None) or str(e)
            print(f"cfgdiff: note: the cache {root} cannot be written ({reason}); going on without it",
                  file=sys.stderr)
        return False


def cache_root() -> Path:
    """$XDG_CACHE_HOME/cfgdiff, or ~/.cache/cfgdiff (the XDG default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cfgdiff"


def content_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a folder's regular files (relative name and bytes, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        sha256_file(f, h)
    return h.hexdigest()


def _stamp(st: os.stat_result) -> str:
    # ctime cannot be set by a user (touch -d, cp -p and tar restore mtime, not ctime) and changes with
    # every write, rename or chmod; with the inode, an in-place rewrite always changes the stamp (Git's index
    # keys on the same fields)
    return f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}"


def _listing(path: Path) -> str:
    """What the memo is keyed on: size, mtime, ctime and inode of a file, or of every file of a folder
    with its relative name (a folder's own stamp does not change when an image is rewritten in place)."""
    if path.is_file():
        return _stamp(path.stat())
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return "\0".join(f"{p.relative_to(path)}\0{_stamp(p.stat())}" for p in files)


def content_key(path: Path | str) -> str:
    """The key every "done earlier" check compares an input by (the memo's key): a digest of its real path
    and `_listing`; any change to the content changes it."""
    path = Path(path).resolve()
    return hashlib.sha256(f"{path}\0{_listing(path)}".encode("utf-8", "surrogateescape")).hexdigest()[:32]


def memo_content_sha256(path: Path, cache_dir: Path | None) -> str:
    """`content_sha256`, remembered under `cache_dir/hashes` for an unchanged path and `_listing`."""
    path = Path(path).resolve()
    if cache_dir is None:
        return content_sha256(path)
    memo = Path(cache_dir) / "hashes" / f"{content_key(path)}.json"
    try:
        return json.loads(memo.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = content_sha256(path)
    cache_write(memo, lambda tmp: tmp.write_text(json.dumps({"path": str(path), "sha256": digest}) + "\n"))
    return digest
