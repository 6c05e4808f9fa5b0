"""How a training run starts: the run directory checked but not yet made, the micro-batch resolved
from the device (or kept from the run's config.json), and the header that says what will run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from cfgdiff import dist
from cfgdiff.config import TrainConfig, override
from cfgdiff.errors import CfgdiffError
from cfgdiff import layout
from cfgdiff.files import Owner, claim_folder

RUN_OWNER = Owner("run", "train")  # a run folder is train's (cfgdiff.files.claim_folder)


def run_writes(name: str) -> bool:
    """Whether `train` writes a file of this name in its run folder."""
    return bool(layout.RUN_FILE.match(name))


def _legacy_run(folder: Path) -> bool:
    """A run folder an earlier cfgdiff made (before folders were claimed): it has checkpoints."""
    return layout.has_checkpoints(folder)


def claim_run_dir(run_dir: Path, create: bool) -> None:
    claim_folder(run_dir, RUN_OWNER, writes=run_writes, legacy=_legacy_run, flag="--run-dir", create=create)


def check_creatable(run_dir: Path) -> None:
    """One line now if the run directory cannot be made or written later, or holds files train would
    replace that cfgdiff did not write (a user's config.json); creates nothing (the run directory
    appears once the first optimiser step has succeeded)."""
    if run_dir.exists() or run_dir.is_symlink():
        if not run_dir.is_dir() or not os.access(run_dir, os.W_OK | os.X_OK):
            raise CfgdiffError(f"the run directory {run_dir} is not a writable directory")
        claim_run_dir(run_dir, create=False)
        return
    parent = run_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CfgdiffError(f"cannot create the run directory {run_dir}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CfgdiffError(f"cannot create the run directory {run_dir}: {parent} is not writable")


def make_run_dir(run_dir: Path) -> None:
    """Make (or keep) the run folder and claim it as train's."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CfgdiffError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
    claim_run_dir(run_dir, create=True)


def with_micro_batch(cfg: TrainConfig, run_dir: Path, device: torch.device, world: int) -> tuple[TrainConfig, str]:
    """cfg with batch_per_device resolved, and why: as set; as a run that has checkpoints recorded it
    in config.json (a rerun takes the same steps on any device); else the memory model of
    cfgdiff.train.memory (also for a folder whose start failed: it has no checkpoint to continue)."""
    from cfgdiff.train.memory import resolve_micro_batch

    if cfg.batch_per_device:
        return cfg, "as set"
    recorded = _recorded_micro_batch(run_dir) if layout.has_checkpoints(run_dir) else None
    if recorded is not None and (recorded == 0 or cfg.batch % (recorded * world) == 0):
        return override(cfg, batch_per_device=recorded), "as the run started"
    # (a recorded micro-batch that cannot cut this batch: the rerun changed the run, which resuming
    # reports in one line with the differences, rather than a divisibility error here)
    micro, why = resolve_micro_batch(cfg, device, world)
    if world > 1:  # every rank takes rank 0's choice, or the ranks would cut different chunks
        micro, why = dist.broadcast_object((micro, why))
    return override(cfg, batch_per_device=micro), why


def _recorded_micro_batch(run_dir: Path) -> int | None:
    """The batch_per_device an existing run trained with: its config.json's, else its newest training
    checkpoint's (0 kept: batch / processes, as before the micro-batch was resolved from the device);
    None if neither says (a damaged checkpoint is then reported by resuming, in one line)."""
    try:
        value = json.loads((run_dir / "config.json").read_text()).get("batch_per_device")
    except (OSError, ValueError, AttributeError):
        from cfgdiff.errors import CfgdiffError
        from cfgdiff.runs import checkpoint_files, read_checkpoint

        try:
            value = read_checkpoint(checkpoint_files(run_dir)[-1])["config"].get("batch_per_device")
        except (CfgdiffError, IndexError, AttributeError):
            return None
    return value if isinstance(value, int) and value >= 0 else None


def header(cfg: TrainConfig, params: int, device: torch.device, autocast: torch.dtype | None, world: int,
           why: str, info: dict[str, Any], start: int) -> str:
    """The line printed before the first step: what trains, where, how, on what, into which folder."""
    micro = cfg.batch_per_device or cfg.batch // world
    rounds = cfg.batch // (micro * world)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    procs = f" × {world} processes" if world > 1 else ""
    run = f"resuming at step {start}" if start else "new"
    return (f"train: preset {cfg.preset}, {params / 1e6:.2f}M parameters, device {name}, "
            f"{'bf16 autocast' if autocast is not None else 'float32'}, micro-batch {micro} × {rounds} accumulation"
            f"{procs} = batch {cfg.batch} ({why}), data {cfg.dataset} ({info['size']}², {info['count']} images, "
            f"{info['num_classes']} classes), run {cfg.run_dir} ({run})")
