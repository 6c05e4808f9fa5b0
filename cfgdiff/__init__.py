"""cfgdiff: classifier-free diffusion guidance (Ho & Salimans, 2022) as a command-line toolkit.

Layout (the folder tree is the architecture):
    diffusion/  the paper's math: schedule, loss, ancestral sampler, guidance (pure functions)
    nn/         the ADM U-Net; knows nothing of diffusion
    data/       prepare (sources -> HDF5) and the HDF5 dataset
    metrics/    Inception network, streaming statistics, FID / IS / precision-recall
    train/      training loop, EMA, resume
    runs.py     the trained-run contract: checkpoint keys, EMA file, newest_run, SamplingModel
    sampling/   sharded, resumable sampling and the guidance sweep
    cli/        one thin module per subcommand, registered as plugins
"""

__version__ = "0.1.0"
