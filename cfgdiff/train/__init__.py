"""Training: the loop (Eq. 5 with label dropout), EMA, checkpoints, resume, distribution."""
