"""Inception metrics that match the papers' tools: FID, IS, precision/recall, sFID, KID (see docs/score.md).

    detector = load_detector()                              # weights resolved, hashed, verified
    acc = FeatureAccumulator(keep_pool=True, keep_logits=True)
    for images in batches:                                  # uint8 (B, H, W, 3), streamed
        acc.add_images(detector, images)
    gen = acc.finalize(detector.sha256)                     # all-reduced across ranks
    ref = load_reference("ref.npz", detector, cache_dir)    # cached by content + weights hash
    compute_metrics(gen, ref)                               # {"fid": ..., "is_mean": ..., ...}

The names are imported on first use (PEP 562), so `cfgdiff.metrics.registry`, the table of metrics the
CLI's `--help` reads, comes without torch.
"""

import importlib

_HOMES = {
    "InceptionDetector": "detector", "load_detector": "detector", "compute_metrics": "evaluate",
    "frechet_distance": "frechet", "Features": "inception", "FIDInception": "inception", "Reference": "reference",
    "load_reference": "reference", "save_statistics": "reference", "score": "score",
    "FeatureAccumulator": "stats", "Moments": "stats", "Statistics": "stats",
}

__all__ = ["ALL_METRICS", *sorted(_HOMES)]


def __getattr__(name: str):
    if name == "ALL_METRICS":  # the registry's rows, read when asked (a registered row shows up)
        return importlib.import_module("cfgdiff.metrics.registry").names()
    if name in _HOMES:
        return getattr(importlib.import_module(f"cfgdiff.metrics.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'cfgdiff.metrics' has no attribute {name!r}")
