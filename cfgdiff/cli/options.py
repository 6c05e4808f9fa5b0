"""Option aliases shared by several commands, so each is spelled and documented once.

Every value rule lives in the library (`cfgdiff.parse`, `cfgdiff.config`, standard library only);
`rule` turns one into an option callback, so a bad value fails while the command line is parsed,
before any model, checkpoint or dataset is read, and before torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from cfgdiff.config import TrainConfig, check_sets
from cfgdiff.errors import ConfigError
from cfgdiff.parse import MAX_SEEDS, check_w, parse_classes, parse_grid, parse_interval, parse_seeds


def rule(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An option callback that applies the library rule `check` to the value (None = unset passes):
    a ConfigError becomes a usage error (one line, exit 2); the value itself passes unchanged."""

    def callback(value: Any) -> Any:
        if value is not None:
            try:
                check(value)
            except ConfigError as e:
                raise typer.BadParameter(str(e)) from None
        return value

    return callback


W = Annotated[
    float, typer.Option("--w", metavar="W", callback=rule(check_w),
                        help="Guidance weight w of Eq. 6: eps = (1+w) eps(z,c) - w eps(z); 0 is the conditional "
                        "model; other tools' guidance scale s = 1 + w.")
]
Grid = Annotated[
    str, typer.Option("--w", metavar="GRID", callback=rule(parse_grid),
                      help="Guidance weights: start:stop:step (inclusive) or a comma list.")
]
# For a sampler option that limits guidance to a log-SNR range; parse with cfgdiff.parse.parse_interval.
LambdaInterval = Annotated[
    Optional[str], typer.Option("--guidance-interval", metavar="LO:HI", callback=rule(parse_interval),
                                help="Guide only where the log-SNR λ lies in [LO, HI] (default: everywhere).")
]
Sets = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", callback=rule(lambda items: check_sets(items, TrainConfig)),
                 help="Override any config field, e.g. model.channel_mult=[1,2,2]."),
]
Checkpoint = Annotated[
    Optional[Path],
    typer.Argument(metavar="[RUN]", help="Run directory or checkpoint file (default: the newest run under runs/).",
                   show_default=False),
]
Steps = Annotated[int, typer.Option("--steps", "-T", min=2, metavar="T",
                                    help="T: sampling steps (log-SNR values, Sec. 2); a guided step evaluates the "
                                    "network twice, so NFE = 2T with guidance (w > 0), T without (heun: 2T-1, doubled by guidance).")]
V = Annotated[float, typer.Option("--v", min=0.0, max=1.0, metavar="V", help="Variance interpolation v of Eq. 4.")]
NoClip = Annotated[bool, typer.Option("--no-clip", help="Do not clip x̂ to [-1, 1].")]
Batch = Annotated[int, typer.Option("--batch", min=1, metavar="IMAGES", help="Images per network batch (per process).")]
# Per-process batches are `--batch-per-device` everywhere (`--batch` is only train's global batch).
BatchPerDevice = Annotated[
    int, typer.Option("--batch-per-device", min=1, metavar="IMAGES", help="Images per network batch, per process.")
]
# The sampler and λ grid names live in registries that import torch, so they are checked when the command runs.
Sampler = Annotated[
    Optional[str], typer.Option("--sampler", metavar="NAME",
                                help="Sampler: ancestral, ddim, dpmpp-2m, heun or a plugin's (default: ancestral, "
                                "the paper's Eq. 4).")
]
LambdaGrid = Annotated[
    Optional[str], typer.Option("--grid", metavar="NAME",
                                help="λ grid: paper, linear (uniform in λ) or edm (Karras) (default: paper, uniform "
                                "in u as the paper).")
]
# `--n` as the paper's tools spell it; `-n` / `--num-samples` also work after `torchrun ... cfgdiff`,
# whose argument parser rejects `--n` as an ambiguous abbreviation of its own --nnodes/--nproc-per-node.
N = Annotated[
    int, typer.Option("--n", "-n", "--num-samples", min=1, max=MAX_SEEDS, metavar="IMAGES", help="Number of samples.")
]
Seeds = Annotated[
    Optional[str],
    typer.Option("--seeds", metavar="RANGES", callback=rule(parse_seeds),
                 help="Seeds, e.g. 0-49999 or 0-9,20 (default: 0..n-1).")
]
Balanced = Annotated[bool, typer.Option("--balanced", help="Class-balanced labels: n / classes of each.")]
Classes = Annotated[
    Optional[str], typer.Option("--classes", metavar="IDS", callback=rule(parse_classes),
                                help="Comma list of class indices to cycle through.")
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan (NFE, time estimate) and exit.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
