"""The order in which training sees the data: one global stream, sharded without communication.

The stream is the concatenation of per-epoch permutations of the N images, each seeded by
(seed, epoch). Step s consumes stream positions [s·B, (s+1)·B) for global batch B, cut into
micro-batches ("chunks") of b images; chunk j of a step goes to rank j mod W in accumulation round
j // W. So the data a step sees, and (through `chunk_seed`) its noise, depend only on (seed, step),
never on the number of processes: a resumed or re-sharded run takes exactly the same steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well mixed (NumPy's SeedSequence) and stable across versions."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# Distinct first parts keep the streams of different purposes independent.
_PERMUTATION, _CHUNK = 0, 1


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """The seed of everything random in one micro-batch: flips, λ, ε, label dropout, dropout."""
    return derive_seed(seed, _CHUNK, step, chunk)


class PermutationStream:
    """Positions of the global stream → dataset indices; caches the current epoch's permutation."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("the dataset is empty")
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, _PERMUTATION, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def indices(self, start: int, count: int) -> list[int]:
        """Dataset indices at stream positions start, start + 1, …, start + count − 1."""
        out: list[int] = []
        pos = start
        while len(out) < count:
            epoch, offset = divmod(pos, self.n)
            take = min(count - len(out), self.n - offset)
            out.extend(self._permutation(epoch)[offset : offset + take].tolist())
            pos += take
        return out


class StepSampler(Sampler[list[int]]):
    """This rank's micro-batches (lists of dataset indices) for steps start_step … stop_step − 1,
    in order; a batch sampler for torch's DataLoader."""

    def __init__(self, n: int, seed: int, batch: int, micro: int, rank: int, world: int, start_step: int,
                 stop_step: int):
        self.stream = PermutationStream(n, seed)
        self.batch, self.micro, self.rank, self.world = batch, micro, rank, world
        self.start_step, self.stop_step = start_step, stop_step
        self.rounds = batch // (micro * world)

    def chunks(self, step: int) -> list[int]:
        """The chunk numbers this rank takes at `step`, one per accumulation round."""
        return [r * self.world + self.rank for r in range(self.rounds)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.stop_step):
            for j in self.chunks(step):
                yield self.stream.indices(step * self.batch + j * self.micro, self.micro)

    def __len__(self) -> int:
        return (self.stop_step - self.start_step) * self.rounds
