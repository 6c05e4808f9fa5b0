"""Option aliases shared by several commands, so each is spelled and documented once.

Every value rule lives in the library (`cfgdiff.parse`, `cfgdiff.config`, standard library only);
`rule` turns one into an option callback, so a bad value fails while the command line is parsed,
before any model, checkpoint or dataset is read, and before torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from cfgdiff import limits

from cfgdiff.config import TrainConfig, check_grid_name, check_sampler_name, check_sets
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
                        help="Guidance weight w of Eq. 6 (0 = the conditional model); other tools' scale s = 1 + w.")
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
    typer.Argument(help="Run directory, checkpoint file or exported .safetensors (default: the newest run "
                        "under runs/).", show_default=False),
]
Steps = Annotated[int, typer.Option("--steps", "-T", min=limits.STEPS[0], max=limits.STEPS[1],
                                    help="T: sampling steps (λ grid points). NFE per sample = T, 2T when guided "
                                         "(heun 2T−1, doubled); --dry-run prints the exact count.")]
NoClip = Annotated[bool, typer.Option("--no-clip", help="Do not clip x̂ to [-1, 1].")]
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

# ---- the sampler (sample, sweep, demo; train's grids use --sampler/--grid too) ----------------------------------
SamplerName = Annotated[
    Optional[str], typer.Option("--sampler", metavar="NAME", callback=rule(check_sampler_name), show_default=False,
                                help="Sampler: ancestral (the paper's Eq. 4, default; a distilled student: ddim), "
                                     "ddim, dpmpp-2m, heun, dpmpp-2m-sde, or a plugin's.")
]
GridName = Annotated[
    Optional[str], typer.Option("--grid", metavar="NAME", callback=rule(check_grid_name), show_default=False,
                                help="λ grid: paper (uniform in u of p(λ), default; a distilled student: its own), "
                                     "linear (uniform in λ), edm (Karras ρ=7).")
]
GuideWith = Annotated[
    Optional[Path], typer.Option("--guide-with", metavar="RUN_OR_CKPT", show_default=False,
                                 help="Autoguidance: guide with this weaker network instead of the ∅ pass; "
                                      "its classes, resolution and λ range must match.")
]
def _check_guidance_names(text: str) -> None:
    from cfgdiff.config import parse_axis
    from cfgdiff.diffusion.methods import get_method  # torch-free

    for name in parse_axis(text, "guidance"):
        get_method(name)


GuidanceName = Annotated[
    str, typer.Option("--guidance", metavar="NAME", callback=rule(_check_guidance_names),
                      help="Guidance method: cfg (Eq. 6, default), apg, cfgpp (ddim only), or a plugin's; its "
                           "settings are the --<method>-* flags below (docs/sample.md).")
]
GuidanceNames = Annotated[
    str, typer.Option("--guidance", metavar="NAMES", callback=rule(_check_guidance_names),
                      help="Guidance methods, a comma list: one sweep line each (and per value of each of "
                           "their settings' axes), on the same seeds; default cfg.")
]
Rescale = Annotated[float, typer.Option("--rescale", metavar="PHI", min=0.0, max=1.0,
                                        help="CFG-rescale φ (Lin et al. 2024); 0 = off.")]
Threshold = Annotated[float, typer.Option("--threshold", metavar="P", min=0.0, max=1.0,
                                          help="Dynamic thresholding of x̂ at percentile P (e.g. 0.995); 0 = off.")]
BatchPerDevice = Annotated[
    int, typer.Option("--batch-per-device", min=1, max=limits.BATCH_PER_DEVICE[1], metavar="IMAGES",
                      help="Images per network batch per process (a guided batch is a 2·IMAGES forward).")
]
