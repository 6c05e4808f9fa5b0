"""A run folder's layout: the names `train` writes, in one torch-free place (sweep's fast path, the
ownership rule and the loaders all read it).

    <run>/checkpoint-<step>.pt   the training state (cfgdiff.runs.TRAIN_KEYS), step zero-padded to 8
    <run>/ema-<step>.pt          the sampling file: EMA weights, config, dataset record
    <run>/grid-<step>.png        the preview grid;  config.json, log.txt, stats.jsonl, tb/
"""

from __future__ import annotations

import re
from pathlib import Path

KINDS = ("checkpoint", "ema")
STEP_FILE = re.compile(r"^(checkpoint|ema)-(\d+)\.pt$")
RUN_FILE = re.compile(r"^((checkpoint|ema)-\d+\.pt|grid-\d+\.png|config\.json|log\.txt|stats\.jsonl|tb)$")


def step_file(kind: str, step: int) -> str:
    """checkpoint-00000042.pt, ema-00000042.pt."""
    assert kind in KINDS
    return f"{kind}-{step:08d}.pt"


def grid_file(step: int) -> str:
    return f"grid-{step:08d}.png"


def step_of(name: str) -> tuple[str, int] | None:
    """(kind, step) of a checkpoint or EMA file name, else None."""
    m = STEP_FILE.match(name)
    return (m.group(1), int(m.group(2))) if m else None


def step_files(run_dir: Path, kind: str) -> list[Path]:
    """The run's files of `kind`, oldest step first."""
    found = [(parsed[1], p) for p in Path(run_dir).glob(f"{kind}-*.pt") if (parsed := step_of(p.name)) and parsed[0] == kind]
    return [p for _, p in sorted(found)]


def has_checkpoints(run_dir: Path) -> bool:
    return bool(step_files(run_dir, "checkpoint"))
