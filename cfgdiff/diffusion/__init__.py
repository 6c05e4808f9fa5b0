"""The paper's math (Ho & Salimans 2022, Sec. 2 and 3.2) as pure functions: no I/O, no networks.

An ε-predictor is any callable `eps(z, lam, labels) -> eps_hat` with z of shape (B, ...), lam of
shape (B,) (log-SNR λ), and labels of shape (B,) int64 where the value `num_classes` is ∅.

The names are imported on first use (PEP 562), so `cfgdiff.diffusion.methods`, the guidance methods'
declarations that the CLI and the configs check values against, comes without torch.
"""

import importlib

_HOMES = {
    "GRIDS": "grids", "make_grid": "grids",
    "Guidance": "guidance", "autoguided_eps": "guidance", "guided_eps": "guidance",
    "diffusion_loss": "loss", "drop_labels": "loss",
    "BatchNoise": "noise", "PerSampleNoise": "noise",
    "Sampler": "sampler", "ancestral_sample": "sampler", "nfe_per_sample": "sampler", "sample": "sampler",
    "samplers": "sampler",
    "alpha": "schedule", "lambda_of_u": "schedule", "sample_lambda": "schedule", "sampling_lambdas": "schedule",
    "sigma": "schedule", "u_of_lambda": "schedule",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"cfgdiff.diffusion.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'cfgdiff.diffusion' has no attribute {name!r}")
