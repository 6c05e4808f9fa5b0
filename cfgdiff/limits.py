"""The bounds of every numeric option, in one place: the CLI's options take their `min`/`max` from
here (checked while the command line is parsed, exit 2), and docs/faults.md lists them. Standard
library only. The maxima are far past any real job (the paper trains 540K steps of 2048 images =
1.1M kimg) and small enough that no plan built from them overflows or allocates before it is checked.
"""

from __future__ import annotations

KIMG = (0.001, 1e7)  # training durations and intervals: up to 10 billion images
BATCH = (1, 1 << 20)  # a global batch
BATCH_PER_DEVICE = (1, 1 << 16)  # images in one network batch of one process
LR = (0.0, 1e30)  # AdamW's learning rate: any finite rate (a diverging one is caught as a non-finite loss)
GRAD_CLIP = (0.0, 1e6)
SEED = (0, (1 << 63) - 1)  # seeds are int64
KEEP = (1, 1_000_000)  # checkpoints kept
WORKERS = (0, 1024)  # processes
HOURS = (0.001, 1e6)
STEPS = (2, 100_000)  # T, sampling steps
SHARD = (1, 10_000_000)  # images per part file
LIMIT = (1, 1_000_000_000)  # images taken from a source
CLASSES = (1, 1_000_000)
DEMO_N = (10, 1_000_000)
