"""Sources of standard normal noise for the sampler.

`PerSampleNoise` gives every sample its own generator seeded by its own seed, so a sample's noise,
and hence the sample, does not depend on the batch it is drawn in or on how many processes share
the work (EDM's StackedRandomGenerator does the same). `BatchNoise` draws a whole batch from one
generator: faster for large statistical tests, but batch-dependent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class PerSampleNoise:
    """Calling it returns the next (B, *shape) float64 draw, row i from generator `seeds[i]`.

    The streams are those of the generators on `device`: a seed gives the same sample on every
    run on the same kind of device (CPU and CUDA generators differ).
    """

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu"):
        self.shape = tuple(shape)
        self.device = torch.device(device)
        self.generators = []
        for seed in seeds:
            g = torch.Generator(device=self.device)
            g.manual_seed(int(seed))
            self.generators.append(g)

    def __call__(self) -> Tensor:
        draws = [
            torch.randn(self.shape, generator=g, device=self.device, dtype=torch.float32)
            for g in self.generators
        ]
        return torch.stack(draws).double()


class BatchNoise:
    """Calling it returns the next (batch, *shape) float64 draw from one generator."""

    def __init__(self, batch: int, shape: Sequence[int], generator: torch.Generator):
        self.size = (batch, *shape)
        self.generator = generator

    def __call__(self) -> Tensor:
        return torch.randn(self.size, generator=self.generator, dtype=torch.float64, device=self.generator.device)
