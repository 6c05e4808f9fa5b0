"""What the launcher (torchrun, SLURM via torchrun) told this process, read without importing torch.

`cfgdiff.dist` answers the same questions once a process group exists; commands that never need one
(`prepare`) ask here and so start without torch's seconds of import.
"""

from __future__ import annotations

import os
import sys


_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def check_environment(environ: dict[str, str] | None = None) -> None:
    """The launcher's variables, checked once when the CLI starts (ConfigError, one line): each an
    integer in range (0 <= RANK < WORLD_SIZE, 0 <= LOCAL_RANK), and several processes only as torchrun
    starts them (MASTER_ADDR and MASTER_PORT set). A plain `cfgdiff` run with none of them is one process."""
    from cfgdiff.errors import ConfigError

    env = os.environ if environ is None else environ
    values = {}
    for name in _VARS:
        text = env.get(name)
        if text is None:
            continue
        try:
            values[name] = int(text.strip())
        except ValueError:
            raise ConfigError(f"the environment variable {name}={text!r} is not an integer "
                              "(set by torchrun; unset it to run one process)") from None
    world, rank = values.get("WORLD_SIZE", 1), values.get("RANK", 0)
    if not 1 <= world <= 1_000_000:
        raise ConfigError(f"WORLD_SIZE={world} is outside 1..1000000")
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    if values.get("LOCAL_RANK", 0) < 0:
        raise ConfigError(f"LOCAL_RANK={values['LOCAL_RANK']} is negative")
    if world > 1 and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise ConfigError(f"WORLD_SIZE={world} without MASTER_ADDR and MASTER_PORT: launch several processes "
                          "with torchrun, or unset WORLD_SIZE and RANK to run one")


def launched_world_size() -> int:
    """WORLD_SIZE as torchrun sets it; 1 for a plain `cfgdiff ...`."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """RANK as torchrun sets it; 0 for a plain `cfgdiff ...`."""
    return int(os.environ.get("RANK", "0"))


def print0(*args: object, file=None) -> None:
    """print() on rank 0 only, to stderr by default (stdout is kept for --json)."""
    if launched_rank() == 0:
        print(*args, file=file or sys.stderr, flush=True)
