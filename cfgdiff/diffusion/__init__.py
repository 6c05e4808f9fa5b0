"""The paper's math (Ho & Salimans 2022, Sec. 2 and 3.2) as pure functions: no I/O, no networks.

An ε-predictor is any callable `eps(z, lam, labels) -> eps_hat` with z of shape (B, ...), lam of
shape (B,) (log-SNR λ), and labels of shape (B,) int64 where the value `num_classes` is ∅.
"""

from cfgdiff.diffusion.grids import GRIDS, make_grid
from cfgdiff.diffusion.guidance import Guidance, autoguided_eps, guided_eps
from cfgdiff.diffusion.loss import diffusion_loss, drop_labels
from cfgdiff.diffusion.noise import BatchNoise, PerSampleNoise
from cfgdiff.diffusion.sampler import Sampler, ancestral_sample, nfe_per_sample, sample, samplers
from cfgdiff.diffusion.schedule import (
    alpha,
    lambda_of_u,
    sample_lambda,
    sampling_lambdas,
    sigma,
    u_of_lambda,
)

__all__ = [
    "GRIDS",
    "BatchNoise",
    "Guidance",
    "PerSampleNoise",
    "Sampler",
    "autoguided_eps",
    "alpha",
    "ancestral_sample",
    "diffusion_loss",
    "drop_labels",
    "guided_eps",
    "lambda_of_u",
    "make_grid",
    "nfe_per_sample",
    "sample",
    "sample_lambda",
    "samplers",
    "sampling_lambdas",
    "sigma",
    "u_of_lambda",
]
