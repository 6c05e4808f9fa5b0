"""Checkpoints of a run directory, and loading a trained network for sampling.

A run directory `runs/<name>/` holds `config.json`, training checkpoints `checkpoint-<step>.pt`
(model, EMA, optimiser, step, images seen, data position, RNG state, resolved config) and small
`ema-<step>.pt` files (EMA weights + config) for sampling. Every file is written under a temporary
name and renamed, so a crash never leaves a half-written checkpoint; the last `keep` of each kind
are kept. Everything is loaded with `torch.load(weights_only=True)`: no pickled code.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cfgdiff.config import DiffusionConfig, ModelConfig, TrainConfig, from_dict
from cfgdiff.errors import CheckpointError, ConfigError
from cfgdiff.files import atomic_write, sha256_file

TRAIN_FORMAT, EMA_FORMAT = "cfgdiff-train-state", "cfgdiff-ema"
_NAME = re.compile(r"^(checkpoint|ema)-(\d+)\.pt$")


def checkpoint_files(run_dir: Path, kind: str = "checkpoint") -> list[Path]:
    """The run's files of `kind` ("checkpoint" or "ema"), oldest step first."""
    found = []
    for p in Path(run_dir).glob(f"{kind}-*.pt"):
        m = _NAME.match(p.name)
        if m and m.group(1) == kind:
            found.append((int(m.group(2)), p))
    return [p for _, p in sorted(found)]


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name in the same directory, flushed, then renamed over `path`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(run_dir: Path, state: dict[str, Any], keep: int) -> Path:
    """Write `checkpoint-<step>.pt` and `ema-<step>.pt` from a training state; prune to `keep` each."""
    step = state["step"]
    ema_state = {k: state[k] for k in ("config", "dataset_info", "step", "images_seen", "ema")}
    atomic_save({"format": EMA_FORMAT, "version": 1, **ema_state}, run_dir / f"ema-{step:08d}.pt")
    path = run_dir / f"checkpoint-{step:08d}.pt"
    atomic_save({"format": TRAIN_FORMAT, "version": 1, **state}, path)
    for kind in ("checkpoint", "ema"):
        for old in checkpoint_files(run_dir, kind)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path, formats: tuple[str, ...] = (TRAIN_FORMAT, EMA_FORMAT)) -> dict[str, Any]:
    """A checkpoint's dict, or CheckpointError naming the file and what is wrong with it."""
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
    return state


def checkpoint_config(state: dict[str, Any], path: str | Path) -> TrainConfig:
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


@dataclass
class SamplingModel:
    """A trained network ready for sampling: EMA weights, eval mode, on its device."""

    net: torch.nn.Module
    model_cfg: ModelConfig
    diffusion_cfg: DiffusionConfig
    num_classes: int
    resolution: int
    dataset: str  # the training dataset's path, as recorded
    class_names: list[str]
    sha256: str  # of the file the weights were read from
    kimg: float  # training images seen, in thousands
    path: Path


def resolve_weights_file(path: str | Path) -> Path:
    """A run directory → its newest EMA file (else its newest training checkpoint); a file → itself."""
    path = Path(path)
    if path.is_dir():
        files = checkpoint_files(path, "ema") or checkpoint_files(path, "checkpoint")
        if not files:
            raise CheckpointError(f"{path}: no checkpoint in this run directory (expected ema-*.pt)")
        return files[-1]
    return path


def load_for_sampling(path: str | Path, device: torch.device | str = "cpu") -> SamplingModel:
    """The EMA network of a run directory (its newest EMA file) or of one checkpoint/EMA file."""
    from cfgdiff.nn import build_unet

    file = resolve_weights_file(path)
    state = read_checkpoint(file)
    cfg = checkpoint_config(state, file)
    net = build_unet(cfg.model)
    load_weights(net, state["ema"], file)
    info = state.get("dataset_info", {})
    layout = torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format  # as in training
    return SamplingModel(
        net=net.to(device, memory_format=layout).eval().requires_grad_(False),
        model_cfg=cfg.model,
        diffusion_cfg=cfg.diffusion,
        num_classes=cfg.model.num_classes,
        resolution=cfg.model.resolution,
        dataset=str(info.get("path", cfg.dataset)),
        class_names=list(info.get("class_names", [])),
        sha256=sha256_file(file),
        kimg=state["images_seen"] / 1000,
        path=file,
    )
