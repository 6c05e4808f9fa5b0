"""Statistics of samples + reference -> the metrics dict that `cfgdiff score` prints and the sweep records.

Which metrics exist, their result keys and what each needs are rows of `cfgdiff.metrics.registry`.
A metric that cannot be computed from what is there (IS without the Inception head, FID without a
reference, precision/recall against a statistics-only reference or with too few images) is None in
the result, with a one-line reason under "unavailable"; the other metrics are kept. With `strict=True`
a reason known before computing anything (a missing input) is raised instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from cfgdiff.errors import ConfigError, MetricsError
from cfgdiff.metrics import registry
from cfgdiff.metrics.registry import parse_metrics  # noqa: F401  (re-exported: evaluate.parse_metrics)
from cfgdiff.metrics.reference import Reference
from cfgdiff.metrics.stats import Statistics
from cfgdiff.metrics.weights import HOW_TO_GET_HEAD


def compute_metrics(gen: Statistics, ref: Reference | None, metrics: Iterable[str] | None = None, *,
                    fid_method: str = "eigh", is_splits: int = 10, pr_k: int = 3, kid_subsets: int = 100,
                    kid_subset_size: int = 1000, strict: bool = False, device: str = "cpu") -> dict[str, object]:
    """Every requested metric of the registry (default: all rows) of `gen` against `ref`, with counts and hashes.

    Keys: the rows' result keys (None where unavailable), unavailable {metric: reason},
    counts {samples, reference}, weights_sha256, reference_sha256, fid_method.
    """
    opts = registry.Options(fid_method, is_splits, pr_k, kid_subsets, kid_subset_size, device)
    out: dict[str, object] = {}
    unavailable: dict[str, str] = {}
    for metric in parse_metrics(registry.names() if metrics is None else metrics):
        reason = registry.why_not(metric, gen, ref, HOW_TO_GET_HEAD)
        if reason is not None and strict:
            raise MetricsError(reason)
        if reason is None:
            try:
                out.update(registry.run(metric, gen, ref, opts))
                continue
            except MetricsError as e:  # too few images for this metric: the others still count
                reason = f"{metric}: {e}" if not str(e).startswith(metric) else str(e)
        unavailable[metric] = reason
        out.update(dict.fromkeys(registry.METRICS[metric].keys))
    out["unavailable"] = unavailable
    out["counts"] = {"samples": gen.count, "reference": ref.stats.count if ref else None}
    out["weights_sha256"] = gen.weights_sha256
    out["reference_sha256"] = ref.sha256 if ref else None
    out["fid_method"] = fid_method
    return out
