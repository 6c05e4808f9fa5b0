"""The trained-run contract: what `train` writes into a run directory and what `train` (resume),
`sample`, `sweep` and `demo` read back. One home, so that a key changes in one place.

A run directory `runs/<name>/` holds

    config.json               the resolved TrainConfig (written at start)
    checkpoint-<step>.pt      training state: TRAIN_KEYS (model, EMA, optimiser, step, images seen,
                              data position, RNG state, resolved config, dataset record)
    ema-<step>.pt             the sampling file: EMA_KEYS (EMA weights, config, dataset record, step)
    stats.jsonl, grid-*.png   statistics and sample grids (train/ writes these)

Every .pt file is written under a temporary name and renamed, so a crash never leaves a half-written
checkpoint; the last `keep` of each kind are kept. Everything is loaded with
`torch.load(weights_only=True)` (no pickled code runs) and then checked against the key table: a
missing, unknown or wrongly typed key is one CheckpointError naming the file and the key.

The dataset record carries a cheap fingerprint of the training set (count, size, classes, a hash of
all labels and of a fixed strided subset of image rows), so a dataset swapped under a run (same path,
other images) is refused on resume instead of training on silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfgdiff import layout
from cfgdiff.config import DiffusionConfig, ModelConfig, TrainConfig, from_dict, to_dict
from cfgdiff.errors import CheckpointError, ConfigError, DataError
from cfgdiff.files import atomic_write, require_regular, serializer_errors, sha256_file

TRAIN_FORMAT, EMA_FORMAT = "cfgdiff-train-state", "cfgdiff-ema"
VERSION = 1

# The keys of each file (version 1) and their types. `_weights` = {name: Tensor}.
_weights = "weights"
EMA_KEYS: dict[str, Any] = {"format": str, "version": int, "config": dict, "dataset_info": dict, "step": int,
                            "images_seen": int, "ema": _weights}
TRAIN_KEYS: dict[str, Any] = {**EMA_KEYS, "data_pos": int, "model": _weights, "optimizer": dict, "rng": dict}
KEYS_BY_FORMAT = {TRAIN_FORMAT: TRAIN_KEYS, EMA_FORMAT: EMA_KEYS}
# The dataset record inside both files; `fingerprint` is absent in runs made before it existed.
DATASET_KEYS: dict[str, Any] = {"path": str, "size": int, "num_classes": int, "class_names": list}
FINGERPRINT_KEYS: dict[str, Any] = {"count": int, "size": int, "num_classes": int, "labels_sha256": str,
                                    "rows": int, "rows_sha256": str}
FINGERPRINT_ROWS = 64  # image rows hashed, evenly spaced over the file: 64 chunk reads, milliseconds


def checkpoint_files(run_dir: Path, kind: str = "checkpoint") -> list[Path]:
    """The run's files of `kind` ("checkpoint" or "ema"), oldest step first."""
    return layout.step_files(Path(run_dir), kind)


def content_digest(obj: Any) -> str:
    """SHA-256 of everything in a checkpoint's dict (keys, values, and every tensor's dtype, shape and
    bytes), in key order, without its own `content_sha256`. torch's zip reader checks no CRC, so a
    flipped bit in a weight would load silently: this is what catches it."""
    h = hashlib.sha256()

    def feed(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k in sorted(value, key=str):
                if prefix or k != "content_sha256":
                    feed(f"{prefix}/{k}", value[k])
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                feed(f"{prefix}[{i}]", v)
        elif isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{prefix}:{t.dtype}:{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{prefix}={value!r}\0".encode())

    feed("", obj)
    return h.hexdigest()


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through `cfgdiff.files.atomic_write`: a temporary name, fsynced, then renamed. A
    checkpoint dict carries its `content_digest`, checked by `read_checkpoint`."""
    from cfgdiff import stops

    if isinstance(obj, dict) and "format" in obj:
        obj = {**obj, "content_sha256": content_digest(obj)}
    with stops.critical(), serializer_errors(path, RuntimeError):  # torch.save must not be interrupted
        atomic_write(path, lambda f: torch.save(obj, f))


# ---- writing (train) ---------------------------------------------------------------------------

def save_checkpoint(run_dir: Path, cfg: TrainConfig, dataset: dict[str, Any], step: int, images_seen: int,
                    net: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, keep: int) -> Path:
    """Write `ema-<step>.pt` then `checkpoint-<step>.pt` after `step` optimiser steps; prune to `keep`
    each. `dataset` is `dataset_record(...)`. Returns the training checkpoint's path."""
    common = {"config": to_dict(cfg), "dataset_info": dataset, "step": step, "images_seen": images_seen,
              "ema": ema.state_dict()}
    atomic_save({"format": EMA_FORMAT, "version": VERSION, **common}, run_dir / layout.step_file("ema", step))
    path = run_dir / layout.step_file("checkpoint", step)
    atomic_save({"format": TRAIN_FORMAT, "version": VERSION, **common, "data_pos": images_seen,
                 "model": net.state_dict(), "optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}},
                path)
    for kind in ("checkpoint", "ema"):
        for old in checkpoint_files(run_dir, kind)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def dataset_fingerprint(path: str | Path) -> dict[str, Any]:
    """Count, size and classes of a dataset file, the SHA-256 of all its labels (int64 little-endian)
    and of FINGERPRINT_ROWS image rows at evenly spaced indices round(linspace(0, N−1, k))."""
    import h5py

    with h5py.File(path, "r") as f:
        images = f["images"]
        labels = np.ascontiguousarray(f["labels"][:], dtype="<i8")
        n = len(labels)
        rows = np.unique(np.round(np.linspace(0, n - 1, min(n, FINGERPRINT_ROWS))).astype(np.int64)) if n else []
        h = hashlib.sha256()
        for i in rows:
            h.update(np.ascontiguousarray(images[int(i)]).tobytes())
        return {"count": n, "size": int(images.shape[1]), "num_classes": int(f.attrs["num_classes"]),
                "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(), "rows": len(rows),
                "rows_sha256": h.hexdigest()}


def locate_dataset(recorded: str, fingerprint: dict[str, Any] | None, near: Path) -> tuple[str | None, str]:
    """The training dataset a checkpoint or a samples sidecar recorded, found and verified: the recorded
    path as it is (absolute, or relative to the current folder), else relative to `near` (the folder of
    the file that recorded it) and its parents; the first candidate whose fingerprint equals the
    recorded one. Returns (path or None, why not)."""
    path = Path(recorded)
    bases = [Path("."), *([] if path.is_absolute() else [near, *Path(near).absolute().parents][:5])]
    seen, mismatched = set(), []
    for base in bases:
        candidate = path if path.is_absolute() else base / path
        key = os.path.realpath(candidate)
        if key in seen or not candidate.exists():
            continue
        seen.add(key)
        try:
            same = fingerprint is None or dataset_fingerprint(candidate) == fingerprint
        except (OSError, KeyError, ValueError):
            same = False
        if same:
            return str(candidate), ""
        mismatched.append(str(candidate))
    if mismatched:
        return None, f"{mismatched[0]} is not the recorded training dataset (its fingerprint differs)"
    return None, f"the recorded training dataset {recorded} is not there"


def dataset_record(path: str | Path, size: int, num_classes: int, class_names: list[str]) -> dict[str, Any]:
    """The `dataset_info` written into every checkpoint: where the data was, what it holds, its fingerprint."""
    return {"path": str(path), "size": int(size), "num_classes": int(num_classes), "class_names": list(class_names),
            "fingerprint": dataset_fingerprint(path)}


# ---- reading -----------------------------------------------------------------------------------

def read_checkpoint(path: str | Path, formats: tuple[str, ...] = (TRAIN_FORMAT, EMA_FORMAT)) -> dict[str, Any]:
    """A checkpoint's dict, checked against its key table, or CheckpointError naming the file and
    what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a global: code or foreign objects, never run
        raise CheckpointError(f"{path}: not a cfgdiff checkpoint: it pickles objects other than tensors "
                              "(refused unread; nothing in it was run)") from None
    except Exception as exc:  # truncated zip, foreign format: all "not readable"
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or not a cfgdiff checkpoint ({reason[:120]})") from None
    if not isinstance(state, dict) or state.get("format") not in formats:
        raise CheckpointError(f"{path}: not a cfgdiff checkpoint (expected format {' or '.join(formats)})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')!r} is not one this cfgdiff "
                              f"reads ({VERSION})")
    _check_keys(state, KEYS_BY_FORMAT[state["format"]], path, "", optional={"content_sha256": str})
    _check_keys(state["dataset_info"], DATASET_KEYS, path, "dataset_info.", optional={"fingerprint": dict})
    if "fingerprint" in state["dataset_info"]:
        _check_keys(state["dataset_info"]["fingerprint"], FINGERPRINT_KEYS, path, "dataset_info.fingerprint.")
    if "rng" in state and not isinstance(state["rng"].get("torch"), torch.Tensor):
        raise CheckpointError(f"{path}: damaged checkpoint: key 'rng.torch' is missing or not a tensor")
    if "optimizer" in state and not {"state", "param_groups"} <= set(state["optimizer"]):
        raise CheckpointError(f"{path}: damaged checkpoint: key 'optimizer' lacks 'state' or 'param_groups'")
    recorded = state.get("content_sha256")  # absent in checkpoints made before it existed
    if recorded is not None and recorded != content_digest(state):
        raise CheckpointError(f"{path}: damaged checkpoint: its contents do not match their recorded SHA-256 "
                              "(a changed bit); use another checkpoint")
    return state


def _check_keys(d: dict[str, Any], table: dict[str, Any], path: Path, prefix: str,
                optional: dict[str, Any] | None = None) -> None:
    """One CheckpointError for the first missing, unknown or wrongly typed key of `d`."""
    optional = optional or {}
    missing = [k for k in table if k not in d]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint: key '{prefix}{missing[0]}' is missing")
    unknown = sorted(str(k) for k in d if k not in table and k not in optional)
    if unknown:
        raise CheckpointError(f"{path}: damaged checkpoint: unknown key '{prefix}{unknown[0]}'")
    for k, v in d.items():
        want = table.get(k, optional.get(k))
        if want == _weights:
            if not isinstance(v, dict):
                raise CheckpointError(f"{path}: damaged checkpoint: key '{prefix}{k}' is {_type(v)}, expected "
                                      "a dict of tensors")
            bad = next((n for n, t in v.items() if not (isinstance(n, str) and isinstance(t, torch.Tensor))), None)
            if bad is not None:
                raise CheckpointError(f"{path}: damaged checkpoint: key '{prefix}{k}.{bad}' is {_type(v[bad])}, "
                                      "expected a tensor")
        elif not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise CheckpointError(f"{path}: damaged checkpoint: key '{prefix}{k}' is {_type(v)}, "
                                  f"expected {want.__name__}")


def _type(value: Any) -> str:
    return "dict" if isinstance(value, dict) else type(value).__name__


def checkpoint_config(state: dict[str, Any], path: str | Path) -> TrainConfig:
    """The run's TrainConfig recorded in a checkpoint, or CheckpointError."""
    try:
        return from_dict(TrainConfig, state["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: its recorded config is unusable ({exc})") from None


def load_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """load_state_dict(strict) with one clear line when the shapes or names disagree."""
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{path}: weights of another architecture ({first[:160]})") from None


def restore_training(state: dict[str, Any], path: Path, net: torch.nn.Module, ema: torch.nn.Module,
                     opt: torch.optim.Optimizer) -> int:
    """Load a training checkpoint's model, EMA, optimiser and torch RNG state; the step it holds."""
    load_weights(net, state["model"], path)
    load_weights(ema, state["ema"], path)
    try:
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: its optimiser or RNG state does not fit this run "
                              f"({str(exc).splitlines()[0][:120]})") from None
    return state["step"]


def check_same_dataset(recorded: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """DataError unless the dataset now at the run's path is the one checkpoint `path` was trained on
    (runs from before fingerprints have none to compare: accepted)."""
    old, new = recorded.get("fingerprint"), current["fingerprint"]
    if old is None:
        return
    diffs = [f"{k} {old[k]} -> {new[k]}" for k in ("count", "size", "num_classes") if old[k] != new[k]]
    if not diffs:  # same shape: then the contents
        diffs = [what for k, what in (("labels_sha256", "other labels"), ("rows_sha256", "other images"))
                 if old[k] != new[k]]
    if diffs:
        raise DataError(f"{current['path']} is not the dataset this run was trained on ({', '.join(diffs)}; "
                        f"recorded in {path}); to train on it, start a new run with another --run-dir")



# ---- sampling ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplingModel:
    """A trained network ready for sampling (EMA weights, eval mode, on its device) and where it came from."""

    net: torch.nn.Module
    config: TrainConfig  # the run's resolved config, as recorded in the checkpoint
    step: int  # optimiser steps taken
    images_seen: int
    path: Path  # the file the weights were read from
    sha256: str  # of that file
    dataset: str  # the training dataset's path, as recorded
    class_names: tuple[str, ...] = ()
    dataset_fingerprint: dict[str, Any] | None = None  # as recorded (absent in runs made before it existed)

    @property
    def model_cfg(self) -> ModelConfig:
        return self.config.model

    @property
    def diffusion_cfg(self) -> DiffusionConfig:
        return self.config.diffusion

    @property
    def num_classes(self) -> int:
        return self.config.model.num_classes

    @property
    def resolution(self) -> int:
        return self.config.model.resolution

    @property
    def kimg(self) -> float:
        """Training images seen, in thousands."""
        return self.images_seen / 1000

    @property
    def w_input(self) -> bool:
        """A guided-distillation student: w is its input, and a guided step is one evaluation."""
        return self.config.model.w_embedding


def sampling_files(run_dir: Path) -> list[Path]:
    """A run's files that `sample` can load: its EMA files, else its training checkpoints; oldest first."""
    return checkpoint_files(run_dir, "ema") or checkpoint_files(run_dir, "checkpoint")


def newest_run(runs: Path = Path("runs")) -> Path:
    """The run directory under `runs/` whose newest sampling file is the most recent. Folders
    without one (a run that failed before its first checkpoint) are skipped."""
    candidates = [(files[-1].stat().st_mtime, p) for p in sorted(runs.glob("*/")) if (files := sampling_files(p))] \
        if runs.is_dir() else []
    if not candidates:
        empty = sorted(p.name for p in runs.glob("*/")) if runs.is_dir() else []
        why = f" ({', '.join(empty[:3])}: no checkpoint yet)" if empty else ""
        raise CheckpointError(f"no trained run under {runs}/{why}: train one with `cfgdiff train`, "
                              f"or pass a checkpoint path")
    return max(candidates, key=lambda c: c[0])[1]


def resolve_weights_file(path: str | Path) -> Path:
    """A run directory → its newest EMA file (else its newest training checkpoint); a file → itself."""
    path = Path(path)
    if path.is_dir():
        files = sampling_files(path)
        if not files:
            raise CheckpointError(f"{path}: no checkpoint in this run directory (expected ema-*.pt)")
        return files[-1]
    if not path.exists() and not path.is_symlink():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        require_regular(path)
    except DataError as e:
        raise CheckpointError(str(e)) from None
    return path


SAFETENSORS_FORMAT = "cfgdiff-ema-safetensors"  # cfgdiff.train.export writes it (`cfgdiff export RUN`)


def read_safetensors(path: Path) -> dict[str, Any]:
    """An exported EMA file (`cfgdiff.train.export`) as the EMA_KEYS dict `read_checkpoint` gives, or
    CheckpointError. safetensors holds tensors and string metadata only: nothing in it runs on load."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != SAFETENSORS_FORMAT:
                raise CheckpointError(f"{path}: a safetensors file, but not one `cfgdiff export` wrote "
                                      f"(metadata format {meta.get('format')!r}, expected {SAFETENSORS_FORMAT!r})")
            if meta.get("version") != "1":
                raise CheckpointError(f"{path}: export version {meta.get('version')!r} is not one this cfgdiff "
                                      "reads (1)")
            ema = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or not a safetensors file ({reason})") from None
    try:
        state = {"format": EMA_FORMAT, "version": VERSION, "config": json.loads(meta["config"]),
                 "dataset_info": json.loads(meta["dataset_info"]), "step": int(meta["step"]),
                 "images_seen": int(meta["images_seen"]), "ema": ema}
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged export metadata ({type(exc).__name__}: {exc})") from None
    _check_keys(state, EMA_KEYS, path, "")
    _check_keys(state["dataset_info"], DATASET_KEYS, path, "dataset_info.", optional={"fingerprint": dict})
    return state


def is_safetensors(path: Path) -> bool:
    return Path(path).suffix == ".safetensors"


def run_config(path: str | Path) -> TrainConfig:
    """The resolved TrainConfig recorded in a run directory's newest weights file, or in one file."""
    file = resolve_weights_file(path)
    return checkpoint_config(read_safetensors(file) if is_safetensors(file) else read_checkpoint(file), file)


def load_for_sampling(path: str | Path, device: torch.device | str = "cpu") -> SamplingModel:
    """The EMA network of a run directory (its newest EMA file), of one checkpoint/EMA file, or of a
    `cfgdiff export` safetensors file (its SHA-256 is then the provenance)."""
    from cfgdiff.nn.unet import build_unet, for_sampling

    file = resolve_weights_file(path)
    if is_safetensors(file) and not file.is_file():
        raise CheckpointError(f"{file}: no such safetensors file")
    state = read_safetensors(file) if is_safetensors(file) else read_checkpoint(file)
    cfg = checkpoint_config(state, file)
    net = build_unet(cfg.model)
    load_weights(net, state["ema"], file)
    info = state["dataset_info"]
    return SamplingModel(
        net=for_sampling(net, device),
        config=cfg,
        step=state["step"],
        images_seen=state["images_seen"],
        path=file,
        sha256=sha256_file(file),
        dataset=info["path"],
        class_names=tuple(str(c) for c in info["class_names"]),
        dataset_fingerprint=info.get("fingerprint"),
    )
