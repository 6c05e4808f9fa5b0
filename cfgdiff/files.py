"""Durable files: every file cfgdiff writes goes through this module.

- **Atomic writes.** A file is written under a temporary name in its own folder,
  `.<name>.tmp-<host>-<pid>-<random>` (`<host>`: 8 hex digits of the host name's SHA-256), flushed
  and fsynced, renamed onto its name, and the folder is fsynced. Readers see the old file or the new
  one, never a part; an exception (disk full, Ctrl-C) deletes the temporary file. A temporary file
  whose writer is dead (same host, pid gone) is removed by the next write of the same target.
- **Ownership ledger.** Outputs that a user names (`--out`, `--grid`, `--results`, ...) are recorded,
  with size and SHA-256, in `.cfgdiff-outputs.json` in their folder. An existing file is "ours" only
  while its bytes still match that record; anything else (a user's file, or our file replaced or
  damaged since) is refused without `--force`. So "complete" is judged from the output itself.
- **Output rules** (`check_outputs`), run before any work: no output resolves (realpath, or the same
  inode through a hard link) to an input or to another output; `--force` never replaces an input;
  an output's folder exists and is writable.
- **Locks** (`output_lock`): `.<name>.lock` beside an output names its holder (pid, host, command);
  a second run on the same output stops with one line; a lock whose pid is dead on this host is taken
  over.
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
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

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


# ---- temporary names --------------------------------------------------------------------------------------------
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_path(path: Path) -> Path:
    """The one temporary-name scheme: `.<name>.tmp-<host>-<pid>-<random>` beside `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}")


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
    prefix, host, removed = f".{path.name}.tmp-", _host_tag(), []
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
        if not pid_alive(int(fields[1])):
            with contextlib.suppress(OSError):
                (path.parent / name).unlink()
                removed.append(path.parent / name)
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
def atomic_path(path: Path, *, record: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that wants a name (torch.save, h5py, PNG);
    on success fsync it, rename it onto `path` and fsync the folder; on any exception delete it.
    `record`: enter the result in the folder's ownership ledger (for outputs a user names)."""
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
        if record:
            _replace_recorded(tmp, path)
        else:
            os.replace(tmp, path)
    except OSError as e:  # permissions changed mid-run, a read-only mount: one line, not a traceback
        if e.errno in _DENIED and e.filename is not None and Path(e.filename).parent == path.parent:
            raise DataError(f"cannot write {path}: {e.strerror}") from None
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[Any], None], *, record: bool = False) -> None:
    """Call `write(f)` with a binary file object open on a temporary name, then publish it atomically."""
    with atomic_path(path, record=record) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()


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


def write_bytes(path: Path, data: bytes, *, record: bool = False) -> None:
    atomic_write(path, lambda f: f.write(data), record=record)


def write_text(path: Path, text: str, *, record: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), record=record)


def write_json(path: Path, obj: Any, *, indent: int | None = 2, record: bool = False) -> None:
    """Strict JSON (NaN and infinities refused: they are not JSON), newline-terminated."""
    write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n", record=record)


def write_npz(path: Path, *, record: bool = False, **arrays: np.ndarray) -> None:
    """np.savez to `path` (to a file object: np.savez would append .npz to a temporary name)."""
    atomic_write(path, lambda f: np.savez(f, **arrays), record=record)


# ---- ownership ledger -------------------------------------------------------------------------------------------
def _read_ledger(folder: Path) -> dict[str, list[dict[str, Any]]]:
    try:
        data = json.loads((folder / LEDGER).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: [e for e in v if isinstance(e, dict)] for k, v in data.items() if isinstance(v, list)}


def _digest(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _write_ledger(folder: Path, name: str, entries: list[dict[str, Any]]) -> None:
    """Set the accepted versions of `name`; entries of vanished files are dropped."""
    ledger = {k: v for k, v in _read_ledger(folder).items() if k != name and (folder / k).exists()}
    if entries:
        ledger[name] = entries
    with atomic_path(folder / LEDGER) as tmp:
        tmp.write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")


def _replace_recorded(tmp: Path, path: Path) -> None:
    """Rename `tmp` onto `path` so that the ledger vouches for whatever `path` holds at any instant
    (a kill between two steps included): first accept both the old and the new bytes, then, once
    renamed, only the new ones."""
    new = _digest(tmp)
    old = [e for e in _read_ledger(path.parent).get(path.name, []) if path.exists() and _matches(path, e)]
    _write_ledger(path.parent, path.name, [*old[:1], new])
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    _write_ledger(path.parent, path.name, [new])


def record_output(path: Path) -> None:
    """Note `path`, as it is now, as written by cfgdiff."""
    path = Path(path)
    _write_ledger(path.parent, path.name, [_digest(path)])


def forget_output(path: Path) -> None:
    path = Path(path)
    _write_ledger(path.parent, path.name, [])


def _matches(path: Path, entry: dict[str, Any]) -> bool:
    try:
        return path.stat().st_size == entry.get("size") and sha256_file(path) == entry.get("sha256")
    except OSError:
        return False


def is_ours(path: Path) -> bool:
    """True when `path` is a regular file whose bytes are those cfgdiff recorded when writing it."""
    path = Path(path)
    if not path.is_file() or path.is_symlink():
        return False
    return any(_matches(path, e) for e in _read_ledger(path.parent).get(path.name, []))


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
    force: bool = False,
    replaceable: Iterable[Path] = (),
    make_folders: bool = False,
    hint: str = "pass --force to overwrite it",
) -> None:
    """The output rules, checked before any work: one line on the first broken rule (OutputError, exit 1; or
    DataError for a missing or unwritable folder, as before).

    `outputs`: option name (for the message) -> path (None: not asked for). `inputs`: files and
    folders the command reads. `replaceable`: outputs the caller itself judged its own (e.g. the
    finished result of the same job). An existing output is refused unless it is ours (`is_ours`),
    replaceable, or `force` is given. `make_folders`: a missing output folder is fine if the command
    may create it (its nearest existing parent is a writable folder)."""
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
        folder = out.parent if out.parent != Path("") else Path(".")
        if not folder.is_dir() and make_folders:
            folder = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists() or p == p.parent)
            if not folder.is_dir():
                raise DataError(f"cannot create the output folder {out.parent} of {flag} {out}: {folder} is not a folder")
        elif not folder.is_dir():
            raise DataError(f"{flag} {out}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DataError(f"{flag} {out}: folder {folder} is not writable")
        if out.is_dir():
            raise OutputError(f"{flag} {out} is a folder")
        if (out.exists() or out.is_symlink()) and not force and not is_ours(out):
            if not any(same_file(out, r) for r in replaceable if Path(r).exists()):
                raise OutputError(f"{flag} {out} exists and was not written by cfgdiff (or changed since); {hint}")


# ---- locks ------------------------------------------------------------------------------------------------------
def lock_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def output_lock(path: Path, command: str) -> Iterator[Path]:
    """Hold `.<name>.lock` beside `path` while writing it: one line if another live run holds it."""
    lock = lock_path(path)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if holder is not None and holder.get("host") == me["host"] and not pid_alive(int(holder.get("pid", -1))):
                with contextlib.suppress(OSError):  # a run killed while holding it: take it over
                    lock.unlink()
                continue
            if holder is None and _age(lock) < 5:  # being written this instant
                time.sleep(0.2)
                continue
            who = "an unknown process" if holder is None else (
                f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command')})")
            raise DataError(f"{path} is being written by another cfgdiff run: {who}; wait for it to finish, "
                            f"or delete {lock} if that run is gone")
        except OSError as e:
            raise _cannot_write(lock, e) from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
        break
    else:
        raise DataError(f"cannot take the lock {lock}")
    try:
        yield lock
    finally:
        if (_read_lock(lock) or {}).get("pid") == me["pid"]:
            with contextlib.suppress(OSError):
                lock.unlink()


def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


# ---- resumable parts --------------------------------------------------------------------------------------------
class PartStore:
    """Finished parts of one plan, in `.<output name>.partial/` beside the output.

    Part k is `part-<k:09d>.npz`, written atomically; `plan.json` says what the parts belong to. A
    store whose plan differs is discarded (one line says so); the caller chooses what the plan holds.
    """

    def __init__(self, out: Path, plan: dict[str, Any], command: str = "cfgdiff"):
        out = Path(out)
        self.dir = out.parent / f".{out.name}.partial"
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
    "npz_rows", "output_lock", "publish", "record_output", "remove_stale_temps", "run_inputs", "same_file",
    "sha256_file",
    "temp_path",
    "write_bytes", "write_json", "write_npz", "write_text",
]
