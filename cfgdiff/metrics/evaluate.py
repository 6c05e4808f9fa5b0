"""Statistics of samples + reference -> the metrics dict that `cfgdiff score` prints and the sweep records.

A metric that cannot be computed from what is there (IS without the Inception head, FID without a
reference, precision/recall against a statistics-only reference) is None in the result, with a one-line
reason under "unavailable"; with `strict=True` the first such reason is raised instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from cfgdiff.errors import ConfigError, MetricsError
from cfgdiff.metrics.frechet import frechet_distance
from cfgdiff.metrics.inception_score import inception_score
from cfgdiff.metrics.kid import kernel_inception_distance
from cfgdiff.metrics.manifold import precision_recall
from cfgdiff.metrics.reference import Reference
from cfgdiff.metrics.stats import Statistics
from cfgdiff.metrics.weights import HOW_TO_GET_HEAD

ALL_METRICS = ("fid", "is", "pr", "sfid", "kid")
RESULT_KEYS = {"fid": ("fid",), "is": ("is_mean", "is_std"), "pr": ("precision", "recall"), "sfid": ("sfid",),
               "kid": ("kid", "kid_std")}


def parse_metrics(text: str | Iterable[str]) -> tuple[str, ...]:
    """'fid,is' -> ('fid', 'is'); ConfigError naming an unknown metric."""
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown or not names:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from {','.join(ALL_METRICS)}")
    return tuple(dict.fromkeys(names))


def _why_not(metric: str, gen: Statistics, ref: Reference | None) -> str | None:
    """Why `metric` cannot be computed, or None if it can."""
    if metric == "is":
        if gen.logits is not None:
            return None
        if gen.weights_sha256 is None:  # statistics read from a file
            return "IS needs the samples' images, not their statistics"
        return "IS needs the Inception 1008-way head, which these weights lack; " + HOW_TO_GET_HEAD
    if ref is None:
        return f"{metric} needs a reference (--ref)"
    if metric == "sfid" and (gen.spatial is None or ref.stats.spatial is None):
        return "sFID needs spatial statistics (mu_s/sigma_s), which the reference or samples lack"
    if metric in ("pr", "kid") and (gen.pool_features is None or ref.stats.pool_features is None):
        return f"{metric} needs per-image features of both sets, not only stored statistics"
    return None


def compute_metrics(gen: Statistics, ref: Reference | None, metrics: Iterable[str] = ALL_METRICS, *,
                    fid_method: str = "eigh", is_splits: int = 10, pr_k: int = 3, kid_subsets: int = 100,
                    kid_subset_size: int = 1000, strict: bool = False, device: str = "cpu") -> dict[str, object]:
    """FID, IS, precision/recall, sFID and KID of `gen` against `ref`, with counts and hashes.

    Keys: fid, is_mean, is_std, precision, recall, sfid, kid, kid_std (those requested; None where
    unavailable), unavailable {metric: reason}, counts {samples, reference}, weights_sha256,
    reference_sha256, fid_method.
    """
    out: dict[str, object] = {}
    unavailable: dict[str, str] = {}
    for metric in parse_metrics(metrics):
        reason = _why_not(metric, gen, ref)
        if reason is not None:
            if strict:
                raise MetricsError(reason)
            unavailable[metric] = reason
            out.update(dict.fromkeys(RESULT_KEYS[metric]))
            continue
        if metric == "fid":
            out["fid"] = frechet_distance(gen.pool.mu, gen.pool.sigma, ref.stats.pool.mu, ref.stats.pool.sigma,
                                          fid_method)
        elif metric == "sfid":
            out["sfid"] = frechet_distance(gen.spatial.mu, gen.spatial.sigma, ref.stats.spatial.mu,
                                           ref.stats.spatial.sigma, fid_method)
        elif metric == "is":
            out["is_mean"], out["is_std"] = inception_score(gen.logits, is_splits)
        elif metric == "pr":
            out["precision"], out["recall"] = precision_recall(ref.stats.pool_features, gen.pool_features, pr_k,
                                                               device=device)
        elif metric == "kid":
            out["kid"], out["kid_std"] = kernel_inception_distance(gen.pool_features, ref.stats.pool_features,
                                                                   kid_subsets, kid_subset_size)
    out["unavailable"] = unavailable
    out["counts"] = {"samples": gen.count, "reference": ref.stats.count if ref else None}
    out["weights_sha256"] = gen.weights_sha256
    out["reference_sha256"] = ref.sha256 if ref else None
    out["fid_method"] = fid_method
    return out
