"""Rerunning the same command resumes: the run directory, its newest checkpoint, and what a rerun
may change (`RESUMABLE_CHANGES`: duration, intervals, workers, compile)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cfgdiff.config import RESUMABLE_CHANGES, TrainConfig, to_dict
from cfgdiff.errors import CheckpointError
from cfgdiff.files import write_text
from cfgdiff.runs import (
    TRAIN_FORMAT,
    check_same_dataset,
    checkpoint_config,
    checkpoint_files,
    read_checkpoint,
    restore_training,
)
from cfgdiff.train.step import StepModel


def config_differences(old: TrainConfig, new: TrainConfig) -> list[str]:
    """'field: old -> new' for every field (nested as model.x) a rerun may not change."""
    a, b = _flat(to_dict(old)), _flat(to_dict(new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def load_state(run_dir: Path, cfg: TrainConfig, m: StepModel, dataset: dict[str, Any]) -> int:
    """Load the newest training checkpoint of `run_dir` into `m`; the step to continue from (0 if none).

    The checkpoint must be of the same run: a different architecture, class count or recipe is an
    error naming the fields, and a different dataset (`dataset`, from `runs.dataset_record`, against
    the fingerprint the checkpoint recorded) is refused; never a silent restart or a silent swap.
    """
    files = checkpoint_files(run_dir)
    if not files:
        return 0
    path = files[-1]
    state = read_checkpoint(path, (TRAIN_FORMAT,))
    diffs = config_differences(checkpoint_config(state, path), cfg)
    if diffs:
        raise CheckpointError(f"{path} is from a different run ({'; '.join(diffs[:4])}); "
                              f"use another --run-dir or the same options")
    check_same_dataset(state["dataset_info"], dataset, path)
    return restore_training(state, path, m.net, m.ema, m.opt)


def stats_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a stats.jsonl; a row that is not a JSON object (torn by a kill or a full disk
    mid-append) is dropped, with one note. The one reader of the file."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step", 0), int):
            rows.append(row)
    if len(rows) != len(lines):
        print(f"cfgdiff: note: {path}: dropped {len(lines) - len(rows)} damaged row(s)", file=sys.stderr)
    return rows


def trim_stats(path: Path, step: int) -> None:
    """Drop stats rows past the resumed step (written after the checkpoint by a run that then died), and
    damaged rows."""
    if not path.exists():
        return
    text = path.read_text(errors="replace")
    rows = stats_rows(path)
    keep = [row for row in rows if row.get("step", 0) <= step]
    new = "".join(json.dumps(row) + "\n" for row in keep)
    if new != text:
        write_text(path, new)
