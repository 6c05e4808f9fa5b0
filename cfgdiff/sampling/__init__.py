"""Sampling at scale: seed and grid parsing, per-seed labels, sharded resumable sampling, the w sweep."""
