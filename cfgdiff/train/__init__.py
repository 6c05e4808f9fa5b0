"""Training: the loop (Eq. 5 with label dropout), EMA, resume, distribution; checkpoints through cfgdiff.runs."""
