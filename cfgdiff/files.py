"""Durable files: every file cfgdiff writes goes through this module, and so do the rules for them.

- **Atomic writes.** A file is written under a temporary name in its own folder,
  `.<name>.tmp-<host>-<pid>-<random>` (`<host>`: 8 hex digits of the host name's SHA-256), flushed
  and fsynced, renamed onto its name, and the folder is fsynced. Readers see the old file or the new
  one, never a part; an exception (disk full, Ctrl-C) deletes the temporary file. A temporary file
  whose writer is dead (same host, pid gone) is removed by the next write of the same target (never a
  link or a folder). Private names (`hidden_name`) fit NAME_MAX for every legal output name.
- **Ownership** (`refusal`, the one rule). Every output is recorded in `.cfgdiff-outputs.json` in its
  folder with its size, SHA-256, kind (`KINDS`), command and job (`job_id`); the record is updated
  atomically under a lock on the folder. A command replaces only a file of its own kind and job (a
  rerun), or with `--force` of its own kind; never a file of another kind, a user's file (not
  recorded, or changed since), the ledger or another private file, or a file inside a folder another
  kind of job owns (`claim_folder`: a run, a sweep, the demo). So "complete" and "ours" are judged from
  the output itself.
- **Output rules** (`check_outputs`), run before any work: no output resolves (realpath, or the same
  inode through a hard link) to an input or to another output, with or without `--force`; an output's
  folder exists (or may be made) and is writable; then `refusal` for each.
- **Locks** (`output_lock`): `.<name>.lock` beside an output names its holder (pid, host, command);
  a second run on the same output stops with one line; a lock whose holder is dead on this host, or
  that is empty or unreadable and older than a few seconds (a disk filled while it was written), is
  taken over with one note.
- **Resumable parts** (`PartStore`): finished parts of long work in `.<name>.partial/`, with
  `plan.json`; one rule for a plan that does not match: the old parts are discarded, with one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cfgdiff.errors import DataError, OutputError

CHUNK = 1 << 22  # 4 MiB reads keep hashing at disk speed without holding the file in memory
LEDGER = ".cfgdiff-outputs.json"
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


# ---- hashing ----------------------------------------------------------------------------------------------------
def sha256_file(path: Path, h: Any = None) -> str:
    """Hex SHA-256 of a file's bytes (or feed them into `h`, a hashlib object, and return its digest)."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---- inputs: regular files only ---------------------------------------------------------------------------------
def _what(st: os.stat_result) -> str:
    mode = st.st_mode
    return next((name for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                                         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                                         (stat.S_ISDIR, "a folder")) if test(mode)), "not a regular file")


def require_regular(path: Path | str, what: str = "") -> os.stat_result:
    """The input rule: cfgdiff reads only regular files (links followed), checked with stat before any
    open, so a FIFO, a device (a link to /dev/zero), a socket, a folder or a link loop is one line
    (DataError), never a hang or a read without end. `what` names the input in the message."""
    label = f"{what} {path}" if what else str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{label}: no such file or folder") from None
    except OSError as e:
        raise DataError(f"{label}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{label} is {_what(st)}, not a regular file; cfgdiff reads only regular files")
    return st


def is_regular(path: Path | str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def open_regular(path: Path | str) -> BinaryIO:
    """Open a file for reading only if it is a regular file, without blocking on a FIFO swapped in after
    a check (O_NONBLOCK, then fstat): OSError(EINVAL) otherwise, which bulk readers (a folder of images)
    report per file like any unreadable file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{_what(st)}, not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# ---- temporary names --------------------------------------------------------------------------------------------
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_path(path: Path) -> Path:
    """The one temporary-name scheme: `.<name>.tmp-<host>-<pid>-<random>` beside `path` (`hidden_name`)."""
    return hidden_name(Path(path), f".tmp-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporary files of `path` left by dead writers on this host; returns what was removed."""
    path = Path(path)
    host, removed = _host_tag(), []
    prefix = hidden_name(path, f".tmp-{host}-").name[: -len(f"{host}-")]
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        fields = name[len(prefix) :].split("-")
        if len(fields) != 3 or fields[0] != host or not fields[1].isdigit():
            continue
        stale = path.parent / name
        if not pid_alive(int(fields[1])) and stat.S_ISREG(stale.lstat().st_mode):  # never a link or a folder
            with contextlib.suppress(OSError):
                stale.unlink()
                removed.append(stale)
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cannot_write(path: Path, e: OSError) -> DataError:
    if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return DataError(f"cannot write {path}: {e.strerror} (disk full or over a size limit)")
    return DataError(f"cannot write {path}: {e.strerror or e}")


# ---- atomic writes ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: Path, *, owner: Owner | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that wants a name (torch.save, h5py, PNG);
    on success fsync it, rename it onto `path` and fsync the folder; on any exception delete it.
    `owner`: enter the result in the folder's ownership ledger as that kind and job; the ownership
    rule (`refusal`) is checked again at the rename, so a file put there while the job ran is kept."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(path.parent, e) from None
    remove_stale_temps(path)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        from cfgdiff import stops

        with stops.critical():  # the rename and its ledger entries are one step for a stop signal
            if owner is not None:
                _replace_recorded(tmp, path, owner)
            else:
                os.replace(tmp, path)
    except OSError as e:  # permissions changed mid-run, a read-only mount: one line, not a traceback
        if e.errno in _DENIED and e.filename is not None and Path(e.filename).parent == path.parent:
            raise DataError(f"cannot write {path}: {e.strerror}") from None
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):  # a full disk: one line naming the file
            raise DataError(f"cannot write {path}: {e.strerror} (disk full or over a size limit); the file it "
                            "would replace is kept, and completed work is saved: free space and rerun") from None
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[Any], None], *, owner: Owner | None = None) -> None:
    """Call `write(f)` with a binary file object open on a temporary name, then publish it atomically."""
    with atomic_path(path, owner=owner) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()


@contextlib.contextmanager
def serializer_errors(path: Path, *kinds: type[BaseException]) -> Iterator[None]:
    """A third-party serializer (torch.save, safetensors) that reports a failed write (a full disk, a
    file-size limit) as an error of its own type: one line naming the file, never a traceback."""
    try:
        yield
    except kinds as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DataError(f"cannot write {path}: {reason} (disk full or over a size limit?); "
                        "the file it would replace is kept") from None


def publish(tmp: Path, path: Path, *, sync: bool = True) -> None:
    """Rename a finished file or folder `tmp` onto `path` and (with `sync`) fsync the folder: for writers
    that stage many files in a private folder (sample's PNG folder), where `atomic_path`'s scan of the
    folder for stale temporaries on every write would cost O(N²)."""
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise _cannot_write(path, e) from None
    if sync:
        _fsync_dir(Path(path).parent)


def write_bytes(path: Path, data: bytes, *, owner: Owner | None = None) -> None:
    atomic_write(path, lambda f: f.write(data), owner=owner)


def write_text(path: Path, text: str, *, owner: Owner | None = None) -> None:
    write_bytes(path, text.encode("utf-8"), owner=owner)


def write_json(path: Path, obj: Any, *, indent: int | None = 2, owner: Owner | None = None) -> None:
    """Strict JSON (NaN and infinities refused: they are not JSON), newline-terminated."""
    write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n", owner=owner)


def write_npz(path: Path, *, owner: Owner | None = None, **arrays: np.ndarray) -> None:
    """np.savez to `path` (to a file object: np.savez would append .npz to a temporary name)."""
    atomic_write(path, lambda f: np.savez(f, **arrays), owner=owner)


# ---- hidden names -----------------------------------------------------------------------------------------------
NAME_MAX = 255  # bytes in one file name (Linux, macOS, Windows); os.pathconf may say less


def hidden_name(path: Path, suffix: str) -> Path:
    """`.<name><suffix>` beside `path`: the one scheme for cfgdiff's private files (temporaries, locks,
    partial work). A name too long for NAME_MAX keeps its head and gains 12 hex digits of its SHA-256,
    so every legal output name has legal private names."""
    path = Path(path)
    name = f".{path.name}{suffix}"
    if len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX:
        return path.with_name(name)
    digest = hashlib.sha256(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    room = NAME_MAX - len(f"..~{digest}{suffix}".encode())
    head = path.name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return path.with_name(f".{head}~{digest}{suffix}")


def is_private(name: str) -> bool:
    """Whether `name` is one of cfgdiff's bookkeeping files: the ledger, a lock, a temporary, partial
    work. No output may land on one."""
    return name == LEDGER or (name.startswith(".") and any(m in name for m in (".lock", ".tmp-", ".partial")))


# ---- ownership ledger -------------------------------------------------------------------------------------------
# The kinds of file cfgdiff writes. A file may be replaced only by a writer of its own kind.
KINDS = {
    "dataset": "a dataset (cfgdiff prepare)",
    "dataset-summary": "a dataset's summary (cfgdiff prepare)",
    "skipped-list": "a list of skipped images (cfgdiff prepare)",
    "samples": "samples (cfgdiff sample)",
    "provenance": "a samples file's provenance sidecar (cfgdiff sample)",
    "preview": "a preview grid (cfgdiff sample --preview)",
    "score-results": "score results (cfgdiff score --results)",
    "reference-stats": "reference statistics (cfgdiff score --save-stats)",
    "export": "a safetensors export (cfgdiff export)",
    "run": "a training run's file (cfgdiff train)",
    "sweep": "a sweep's file (cfgdiff sweep)",
    "demo": "the demo's report (cfgdiff demo)",
}


@dataclass(frozen=True)
class Owner:
    """Who writes a file: its kind (one of KINDS), the command, and the job: a digest of what makes
    the output what it is (`job_id`), equal for a rerun of the same job."""

    kind: str
    command: str
    job: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown file kind {self.kind!r}")

    def entry(self) -> dict[str, str]:
        return {"kind": self.kind, "command": self.command, "job": self.job}


def job_id(command: str, settings: Any) -> str:
    """The identity of a job: 16 hex digits of the SHA-256 of the command and its settings (JSON)."""
    text = json.dumps([command, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@contextlib.contextmanager
def _ledger_locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (flock on its descriptor) around a read-modify-write of
    its ledger, so that parallel writers lose no entry; no lock file is left behind."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # no folder descriptors (Windows): the rename is still atomic
        yield
        return
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _read_ledger(folder: Path) -> dict[str, Any]:
    """{"folder": owner entry or None, "files": name -> [entries]}; version 1 (name -> entries) is
    read as files without kind or job (written by an earlier cfgdiff: ours, of any kind)."""
    empty: dict[str, Any] = {"folder": None, "files": {}}
    path = Path(folder) / LEDGER
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return empty
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return empty
    if not isinstance(data, dict):
        return empty
    if data.get("format") != "cfgdiff-ledger":
        data = {"folder": None, "files": data}
    files = data.get("files") if isinstance(data.get("files"), dict) else {}
    folder_owner = data.get("folder") if isinstance(data.get("folder"), dict) else None
    return {"folder": folder_owner,
            "files": {k: [e for e in v if isinstance(e, dict)] for k, v in files.items() if isinstance(v, list)}}


def _save_ledger(folder: Path, ledger: dict[str, Any]) -> None:
    files = {k: v for k, v in ledger["files"].items() if v and os.path.lexists(Path(folder) / k)}
    doc = {"format": "cfgdiff-ledger", "version": 2, "folder": ledger["folder"], "files": files}
    with atomic_path(Path(folder) / LEDGER) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def _digest(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _matches(path: Path, entry: dict[str, Any]) -> bool:
    try:
        st = path.lstat()
        return (stat.S_ISREG(st.st_mode) and st.st_size == entry.get("size")
                and sha256_file(path) == entry.get("sha256"))
    except OSError:
        return False


def recorded(path: Path) -> dict[str, Any] | None:
    """The ledger entry vouching for `path` as it is now (a regular file whose size and SHA-256 are
    those cfgdiff recorded when writing it), or None: a user's file, or ours changed since."""
    path = Path(path)
    entries = _read_ledger(path.parent)["files"].get(path.name, [])
    return next((e for e in entries if _matches(path, e)), None)


def is_ours(path: Path, owner: Owner | None = None, *, same_job: bool = True) -> bool:
    """True when cfgdiff wrote `path` as it is now; with `owner`, as that kind (and, with `same_job`,
    for that job)."""
    entry = recorded(path)
    if entry is None or owner is None:
        return entry is not None
    return entry.get("kind", owner.kind) == owner.kind and (not same_job or entry.get("job", owner.job) == owner.job)


def _replace_recorded(tmp: Path, path: Path, owner: Owner) -> None:
    """Rename `tmp` onto `path` so that the ledger vouches for whatever `path` holds at any instant
    (a kill between two steps included): first accept both the old and the new bytes, then, once
    renamed, only the new ones. Under the folder's ledger lock."""
    new = {**_digest(tmp), **owner.entry()}
    with _ledger_locked(path.parent):
        why = refusal(path, owner, force=True)  # again at the commit: a file put there while the job ran
        if why is not None:
            raise OutputError(f"{path} {why}")
        ledger = _read_ledger(path.parent)
        old = [e for e in ledger["files"].get(path.name, []) if _matches(path, e)]
        ledger["files"][path.name] = [*old[:1], new]
        _save_ledger(path.parent, ledger)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        ledger = _read_ledger(path.parent)
        ledger["files"][path.name] = [new]
        _save_ledger(path.parent, ledger)


def forget_output(path: Path) -> None:
    path = Path(path)
    with _ledger_locked(path.parent):
        ledger = _read_ledger(path.parent)
        ledger["files"].pop(path.name, None)
        _save_ledger(path.parent, ledger)


# ---- the ownership rule -----------------------------------------------------------------------------------------
def refusal(out: Path, owner: Owner, *, force: bool = False) -> str | None:
    """THE rule for replacing a file, as the reason it is refused (None: allowed).

    - cfgdiff's own bookkeeping (the ledger, locks, temporaries, partial work): never;
    - a file inside a folder that another kind of job owns (a run, a sweep, the demo): never;
    - a file cfgdiff did not write, or that changed since (a user's file): never, not even with
      --force (move or delete it yourself);
    - a file cfgdiff wrote as another kind (samples under --results): never;
    - a file of the same kind from another job: only with --force;
    - the same kind and job (a rerun): yes.
    Absent paths are allowed (the folder rules are `check_outputs`' and `claim_folder`'s)."""
    out = Path(out)
    if is_private(out.name):
        return "is one of cfgdiff's bookkeeping files; choose another path"
    if not os.path.lexists(out):
        return None
    claim = _read_ledger(out.parent)["folder"]
    entry = recorded(out)
    if entry is None and claim is not None and claim.get("kind") != owner.kind:
        return f"is inside a folder that cfgdiff {claim.get('command', '')} owns; choose another path"
    if entry is None:
        return ("exists and was not written by cfgdiff (or changed since); cfgdiff never replaces it, "
                "even with --force: move it away or choose another path")
    kind = entry.get("kind", owner.kind)
    if kind != owner.kind:
        return f"holds {KINDS.get(kind, kind)}, not {KINDS[owner.kind]}; choose another path"
    job = entry.get("job")
    if job is not None and job != owner.job and not force:
        return f"holds the output of another {owner.command} job; pass --force to replace it"
    return None


def claim_folder(folder: Path, owner: Owner, *, writes: Callable[[str], bool],
                 legacy: Callable[[Path], bool] = lambda folder: False, flag: str, create: bool = True) -> None:
    """Make `folder` a folder of `owner`'s kind (a run, a sweep, the demo), or check that it is one
    (`create=False`: check only, write nothing).

    A folder of another kind is refused. An existing folder not yet claimed is claimed only if none of
    the names the job writes (`writes`) is there as a file cfgdiff did not write as this kind: a user's
    config.json is never taken over; `legacy(folder)` accepts a folder an earlier cfgdiff made without a
    claim. Files the job does not write (a user's notes) are left alone."""
    folder = Path(folder)
    if folder.is_symlink() or (os.path.lexists(folder) and not folder.is_dir()):
        raise OutputError(f"{flag} {folder} exists and is not a folder")
    if not folder.exists() and not create:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(folder, e) from None
    with _ledger_locked(folder):
        ledger = _read_ledger(folder)
        claim = ledger["folder"]
        if claim is not None:
            if claim.get("kind") != owner.kind:
                raise OutputError(f"{flag} {folder} is a folder that cfgdiff {claim.get('command', '')} owns; "
                                  "choose another path")
            return
        foreign = sorted(name for name in os.listdir(folder) if writes(name) and not is_private(name)
                         and not _ours_of_kind(folder / name, ledger, owner.kind))
        if foreign and not legacy(folder):
            raise OutputError(f"{flag} {folder} holds files not written by cfgdiff ({', '.join(foreign[:3])}); "
                              "cfgdiff never replaces them: choose another path")
        if create:
            ledger["folder"] = owner.entry()
            _save_ledger(folder, ledger)


def _ours_of_kind(path: Path, ledger: dict[str, Any], kind: str) -> bool:
    return any(_matches(path, e) and e.get("kind", kind) == kind for e in ledger["files"].get(path.name, []))


# ---- output rules -----------------------------------------------------------------------------------------------
def same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` name the same file: equal real paths (symlinks), or one inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def run_inputs(path: Path | str | None) -> list[Path]:
    """A checkpoint argument as inputs: the path, and for a run folder its `*.pt` files (the newest
    of which the command reads), so that no output can land on one of them."""
    if path is None:
        return []
    path = Path(path)
    return [path, *sorted(path.glob("*.pt"))] if path.is_dir() else [path]


def check_outputs(
    outputs: Mapping[str, Path | None],
    inputs: Iterable[Path | str | None] = (),
    *,
    owners: Owner | Mapping[str, Owner],
    force: bool = False,
    make_folders: bool = False,
) -> None:
    """The output rules, checked before any work: one line on the first broken rule (OutputError, exit 1; or
    DataError for a missing or unwritable folder).

    `outputs`: option name (for the message) -> path (None: not asked for). `inputs`: files and
    folders the command reads: no output may be one of them (by real path or inode), with or without
    --force. `owners`: who writes each output (one Owner for all, or one per option name); an existing
    output must pass `refusal`. A name must leave room for its private names (NAME_MAX).
    `make_folders`: a missing output folder is fine if the command may create it (its nearest existing
    parent is a writable folder)."""
    named = [(k, Path(p)) for k, p in outputs.items() if p is not None]
    ins = [Path(p) for p in inputs if p is not None and str(p) != ""]
    for i, (flag, out) in enumerate(named):
        for src in ins:
            if same_file(out, src):
                raise OutputError(f"{flag} {out} is an input of this command ({src}); choose another path")
        for flag2, out2 in named[:i]:
            if same_file(out, out2):
                raise OutputError(f"{flag} {out} is also {flag2}; give each output its own path")
    for flag, out in named:
        if len(out.name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise OutputError(f"{flag}: the file name {out.name[:40]}... is longer than {NAME_MAX} bytes")
        folder = out.parent if out.parent != Path("") else Path(".")
        if not folder.is_dir() and make_folders:
            folder = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists() or p == p.parent)
            if not folder.is_dir():
                raise DataError(f"cannot create the output folder {out.parent} of {flag} {out}: {folder} is not a folder")
        elif not folder.is_dir():
            raise DataError(f"{flag} {out}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DataError(f"{flag} {out}: folder {folder} is not writable")
        if out.is_dir() and not out.is_symlink():
            raise OutputError(f"{flag} {out} is a folder")
        owner = owners if isinstance(owners, Owner) else owners[flag]
        why = refusal(out, owner, force=force)
        if why is not None:
            raise OutputError(f"{flag} {out} {why}")


# ---- locks ------------------------------------------------------------------------------------------------------
def lock_path(path: Path) -> Path:
    return hidden_name(Path(path), ".lock")


@contextlib.contextmanager
def output_lock(path: Path, command: str) -> Iterator[Path]:
    """Hold `.<name>.lock` beside `path` while writing it: one line if another live run holds it.

    The holder keeps an flock on the lock file (the kernel drops it when the holder dies, kill -9
    included), and writes its pid, host and command into it for the message. A lock file nobody holds
    an flock on (its writer died, or a full disk left it empty) is taken over, with one note; one that
    names another host is respected (flock may not reach across hosts), unless it is empty."""
    lock = lock_path(path)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
    fd = _acquire(lock, path, me)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _acquire(lock: Path, path: Path, me: dict[str, Any]) -> int:
    import fcntl

    for _ in range(5):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise _cannot_write(lock, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_lock(lock)
            os.close(fd)
            who = "an unknown process" if holder is None else (
                f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command')})")
            raise DataError(f"{path} is being written by another cfgdiff run: {who}; wait for it to finish, "
                            f"or delete {lock} if that run is gone") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a file its last holder unlinked
        except OSError:
            same = False
        if not same:
            os.close(fd)
            continue
        holder = _read_lock(lock)
        if holder is not None and holder.get("host") != me["host"]:
            os.close(fd)
            raise DataError(f"{path} is being written by another cfgdiff run: pid {holder.get('pid')} on "
                            f"{holder.get('host')} ({holder.get('command')}); wait for it to finish, "
                            f"or delete {lock} if that run is gone")
        if os.fstat(fd).st_size:
            left = f"pid {holder.get('pid')} ({holder.get('command')})" if holder else "an empty or damaged lock"
            print(f"cfgdiff: note: took over the lock {lock} left by {left}, no longer running", file=sys.stderr)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(me) + "\n").encode())
        except OSError as e:  # a full disk: leave no lock behind
            with contextlib.suppress(OSError):
                lock.unlink()
            os.close(fd)
            raise _cannot_write(lock, e) from None
        return fd
    raise DataError(f"cannot take the lock {lock}")


def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


# ---- resumable parts --------------------------------------------------------------------------------------------
class PartStore:
    """Finished parts of one plan, in `.<output name>.partial/` beside the output.

    Part k is `part-<k:09d>.npz`, written atomically; `plan.json` says what the parts belong to. A
    store whose plan differs is discarded (one line says so); the caller chooses what the plan holds.
    """

    def __init__(self, out: Path, plan: dict[str, Any], command: str = "cfgdiff"):
        out = Path(out)
        self.dir = hidden_name(out, ".partial")
        self.plan = plan
        self.command = command

    @property
    def plan_file(self) -> Path:
        return self.dir / "plan.json"

    def open(self) -> set[int]:
        """Create the folder, or keep the parts of the same plan; the indices of the finished parts."""
        if self.dir.exists():
            try:
                same = json.loads(self.plan_file.read_text()) == json.loads(json.dumps(self.plan))
            except (OSError, ValueError):
                same = False
            if not same:
                print(f"{self.command}: discarding partial work in {self.dir} (made with other options)", file=sys.stderr)
                shutil.rmtree(self.dir)
        if not self.dir.exists():
            try:
                self.dir.mkdir()
            except OSError as e:
                raise _cannot_write(self.dir, e) from None
            write_json(self.plan_file, self.plan)
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("part-*.npz")}

    def path(self, k: int) -> Path:
        return self.dir / f"part-{k:09d}.npz"

    def write(self, k: int, arrays: Mapping[str, np.ndarray] | Any) -> None:
        """Part k from a mapping of arrays, or from an object whose fields are arrays (a dataclass)."""
        write_npz(self.path(k), **(arrays if isinstance(arrays, Mapping) else vars(arrays)))

    def read(self, k: int, *keys: str) -> dict[str, np.ndarray]:
        """Arrays of part k (all of them, or only `keys`); DataError if it is missing or unreadable."""
        part = self.read_or_none(k, *keys)
        if part is None:
            raise DataError(f"part {self.path(k)} is missing or damaged; rerun the same command to redo it")
        return part

    def read_or_none(self, k: int, *keys: str) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self.path(k), allow_pickle=False) as npz:
                return {key: npz[key] for key in (keys or npz.files)}
        except (OSError, ValueError, KeyError, EOFError):
            return None

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def npz_rows(path: Path, key: str = "arr_0") -> int | None:
    """Rows of `key` in an npz, or None if the file is not a readable npz holding it. Only the
    member's header is read, and the zip's CRC is not checked here (the ledger's SHA-256 is)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(f)
            return int(shape[0]) if shape else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


__all__ = [
    "LEDGER", "PartStore", "atomic_path", "atomic_write", "check_outputs", "forget_output", "is_ours", "lock_path",
    "npz_rows", "output_lock", "publish", "remove_stale_temps", "run_inputs", "same_file",
    "sha256_file",
    "temp_path",
    "write_bytes", "write_json", "write_npz", "write_text",
]
