"""Option aliases shared by several commands, so each is spelled and documented once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

def finite_w(value: float) -> float:
    """Parse-time check of a guidance weight: finite and >= 0 (NaN fails every comparison)."""
    if not math.isfinite(value) or value < 0:
        raise typer.BadParameter(f"w must be a finite number >= 0 (0 = the conditional model), got {value}")
    return value


W = Annotated[
    float, typer.Option("--w", callback=finite_w, help="Guidance weight w of Eq. 6 (0 = conditional model).")
]
Checkpoint = Annotated[
    Optional[Path],
    typer.Argument(help="Run directory or checkpoint file (default: the newest run under runs/).", show_default=False),
]
Steps = Annotated[int, typer.Option("--steps", "-T", min=2, help="T: network evaluations per sample (Sec. 2).")]
V = Annotated[float, typer.Option("--v", min=0.0, max=1.0, help="Variance interpolation v of Eq. 4.")]
NoClip = Annotated[bool, typer.Option("--no-clip", help="Do not clip x̂ to [-1, 1].")]
Batch = Annotated[int, typer.Option("--batch", min=1, metavar="IMAGES", help="Images per network batch (per process).")]
# `--n` as the paper's tools spell it; `-n` / `--num-samples` also work after `torchrun ... cfgdiff`,
# whose argument parser rejects `--n` as an ambiguous abbreviation of its own --nnodes/--nproc-per-node.
N = Annotated[int, typer.Option("--n", "-n", "--num-samples", min=1, metavar="IMAGES", help="Number of samples.")]
Seeds = Annotated[
    Optional[str], typer.Option("--seeds", metavar="RANGES", help="Seeds, e.g. 0-49999 or 0-9,20 (default: 0..n-1).")
]
Balanced = Annotated[bool, typer.Option("--balanced", help="Class-balanced labels: n / classes of each.")]
Classes = Annotated[
    Optional[str], typer.Option("--classes", metavar="IDS", help="Comma list of class indices to cycle through.")
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan (NFE, time estimate) and exit.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
