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
from pathlib import Path

from cfgdiff.files import atomic_path, sha256_file


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


def _listing(path: Path) -> str:
    """What the memo is keyed on: size and mtime_ns of a file, or of every file of a folder with its relative
    name (a folder's own size and mtime do not change when an image is rewritten in place)."""
    if path.is_file():
        st = path.stat()
        return f"{st.st_size}\0{st.st_mtime_ns}"
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return "\0".join(f"{p.relative_to(path)}\0{p.stat().st_size}\0{p.stat().st_mtime_ns}" for p in files)


def memo_content_sha256(path: Path, cache_dir: Path | None) -> str:
    """`content_sha256`, remembered under `cache_dir/hashes` for an unchanged path and `_listing`."""
    path = Path(path).resolve()
    if cache_dir is None:
        return content_sha256(path)
    key = hashlib.sha256(f"{path}\0{_listing(path)}".encode()).hexdigest()[:32]
    memo = Path(cache_dir) / "hashes" / f"{key}.json"
    try:
        return json.loads(memo.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = content_sha256(path)
    with atomic_path(memo) as tmp:
        tmp.write_text(json.dumps({"path": str(path), "sha256": digest}) + "\n")
    return digest
