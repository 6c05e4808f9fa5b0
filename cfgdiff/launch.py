"""What the launcher (torchrun, SLURM via torchrun) told this process, read without importing torch.

`cfgdiff.dist` answers the same questions once a process group exists; commands that never need one
(`prepare`) ask here and so start without torch's seconds of import.
"""

from __future__ import annotations

import os
import sys


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
