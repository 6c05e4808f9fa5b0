"""Inception metrics that match the papers' tools: FID, IS, precision/recall, sFID, KID (see docs/score.md).

    detector = load_detector()                              # weights resolved, hashed, verified
    acc = FeatureAccumulator(keep_pool=True, keep_logits=True)
    for images in batches:                                  # uint8 (B, H, W, 3), streamed
        acc.add_images(detector, images)
    gen = acc.finalize(detector.sha256)                     # all-reduced across ranks
    ref = load_reference("ref.npz", detector, cache_dir)    # cached by content + weights hash
    compute_metrics(gen, ref)                               # {"fid": ..., "is_mean": ..., ...}
"""

from cfgdiff.metrics.detector import InceptionDetector, load_detector
from cfgdiff.metrics.evaluate import ALL_METRICS, compute_metrics
from cfgdiff.metrics.frechet import frechet_distance
from cfgdiff.metrics.inception import Features, FIDInception
from cfgdiff.metrics.reference import Reference, load_reference, save_statistics
from cfgdiff.metrics.score import ScoreConfig, score
from cfgdiff.metrics.stats import FeatureAccumulator, Moments, Statistics

__all__ = [
    "ALL_METRICS", "FIDInception", "FeatureAccumulator", "Features", "InceptionDetector", "Moments", "Reference",
    "ScoreConfig", "Statistics", "compute_metrics", "frechet_distance", "load_detector", "load_reference",
    "save_statistics", "score",
]
