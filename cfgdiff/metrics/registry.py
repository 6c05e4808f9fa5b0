"""The one table of metrics: what `score`, `--metrics`, the results JSON and the sweep's columns all read.

Adding a metric is one `Metric` row in `METRICS` and one function `(gen, ref, opts) -> tuple of values`,
one value per result key. Each row says what the metric needs, so the reason it cannot be computed
(and whether `score` must keep per-image features) follows from the row, not from code elsewhere:

    needs_ref   a reference (`--ref`)
    needs       per-image data kept while extracting: "pool_features" (of both sets: precision/recall,
                KID), "logits" (of the samples: IS), "spatial" (sFID's moments of both sets)
    biased_small_n  `score` warns below 10,000 samples

This module imports only the standard library (the CLI reads it for `--help`); the functions import
the numerical code when they run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from cfgdiff.errors import ConfigError

FID_METHODS = ("eigh", "sqrtm")  # the matrix square root of FID and sFID (frechet.py)

if TYPE_CHECKING:
    from cfgdiff.metrics.reference import Reference
    from cfgdiff.metrics.stats import Statistics

FEATURES = ("pool_features", "logits", "spatial")


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings the metric functions take (defaults: the papers' tools' conventions, see docs/score.md)."""

    fid_method: str = "eigh"
    is_splits: int = 10
    pr_k: int = 3
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    device: str = "cpu"


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row: `--metrics` name, result keys with their display labels, what it needs, how it is computed."""

    name: str
    keys: tuple[str, ...]
    labels: tuple[str, ...]
    needs_ref: bool
    needs: tuple[str, ...]
    compute: Callable[[Statistics, Reference | None, Options], tuple[float, ...]]
    biased_small_n: bool = False  # strongly biased below 10k samples: `score` warns

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.labels) or not set(self.needs) <= set(FEATURES):
            raise ValueError(f"metric {self.name}: one label per key, needs within {FEATURES}")


def _two_or_more(*stats: Statistics) -> None:
    """A covariance (N - 1) needs N >= 2; `score --force` lets a single image through to the other metrics."""
    from cfgdiff.errors import MetricsError

    for s in stats:
        if s.count is not None and s.count < 2:
            raise MetricsError(f"needs at least 2 images for a covariance, got {s.count}")


def _fid(gen: Statistics, ref: Reference, opts: Options) -> tuple[float]:
    from cfgdiff.metrics.frechet import frechet_distance

    _two_or_more(gen, ref.stats)
    return (frechet_distance(gen.pool.mu, gen.pool.sigma, ref.stats.pool.mu, ref.stats.pool.sigma, opts.fid_method),)


def _sfid(gen: Statistics, ref: Reference, opts: Options) -> tuple[float]:
    from cfgdiff.metrics.frechet import frechet_distance

    _two_or_more(gen, ref.stats)
    return (frechet_distance(gen.spatial.mu, gen.spatial.sigma, ref.stats.spatial.mu, ref.stats.spatial.sigma,
                             opts.fid_method),)


def _is(gen: Statistics, ref: Reference | None, opts: Options) -> tuple[float, float]:
    from cfgdiff.metrics.inception_score import inception_score

    return inception_score(gen.logits, opts.is_splits)


def _pr(gen: Statistics, ref: Reference, opts: Options) -> tuple[float, float]:
    from cfgdiff.metrics.manifold import precision_recall

    return precision_recall(ref.stats.pool_features, gen.pool_features, opts.pr_k, device=opts.device)


def _kid(gen: Statistics, ref: Reference, opts: Options) -> tuple[float, float]:
    from cfgdiff.metrics.kid import kernel_inception_distance

    return kernel_inception_distance(gen.pool_features, ref.stats.pool_features, opts.kid_subsets,
                                     opts.kid_subset_size)


# Row order is the display order of `score`'s table and the sweep's columns.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fid", ("fid",), ("FID",), True, (), _fid, biased_small_n=True),
    Metric("is", ("is_mean", "is_std"), ("IS", "IS std"), False, ("logits",), _is, biased_small_n=True),
    Metric("pr", ("precision", "recall"), ("precision", "recall"), True, ("pool_features",), _pr),
    Metric("sfid", ("sfid",), ("sFID",), True, ("spatial",), _sfid, biased_small_n=True),
    Metric("kid", ("kid", "kid_std"), ("KID", "KID std"), True, ("pool_features",), _kid),
)}


def names() -> tuple[str, ...]:
    """Every `--metrics` name, in table order."""
    return tuple(METRICS)


def result_keys(metrics: Iterable[str] | None = None) -> list[str]:
    """The result keys of `metrics` (default: every row), in table order."""
    chosen = set(METRICS if metrics is None else metrics)
    return [k for m in METRICS.values() if m.name in chosen for k in m.keys]


def labels() -> list[tuple[str, str]]:
    """(result key, display label) of every row, in table order."""
    return [kl for m in METRICS.values() for kl in zip(m.keys, m.labels)]


def needs_ref(metrics: Iterable[str]) -> list[str]:
    return [m for m in metrics if METRICS[m].needs_ref]


def needs(metrics: Iterable[str], feature: str) -> bool:
    """Whether any of `metrics` needs per-image `feature` ("pool_features", "logits", "spatial")."""
    return any(feature in METRICS[m].needs for m in metrics)


def why_not(metric: str, gen: Statistics, ref: Reference | None, head_hint: str = "") -> str | None:
    """Why the row `metric` cannot be computed from `gen` and `ref`, or None if it can."""
    row = METRICS[metric]
    label = row.labels[0]  # IS, sFID: the names the messages use
    if "logits" in row.needs and gen.logits is None:
        if gen.weights_sha256 is None:  # statistics read from a file
            return f"{label} needs the samples' images, not their statistics"
        return f"{label} needs the Inception 1008-way head, which these weights lack; {head_hint}".rstrip("; ")
    if row.needs_ref and ref is None:
        return f"{metric} needs a reference (--ref)"
    if "spatial" in row.needs and (gen.spatial is None or ref.stats.spatial is None):
        return f"{label} needs spatial statistics (mu_s/sigma_s), which the reference or samples lack"
    if "pool_features" in row.needs and (gen.pool_features is None or ref.stats.pool_features is None):
        return f"{metric} needs per-image features of both sets, not only stored statistics"
    return None


def run(metric: str, gen: Statistics, ref: Reference | None, opts: Options) -> dict[str, Any]:
    """{result key: value} of one row (raises the metric's own MetricsError if its inputs are too few)."""
    row = METRICS[metric]
    values = row.compute(gen, ref, opts)
    return dict(zip(row.keys, (float(v) for v in values)))


def parse_metrics(text: str | Iterable[str]) -> tuple[str, ...]:
    """'fid,is' -> ('fid', 'is'); ConfigError naming an unknown metric."""
    asked = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    unknown = [m for m in asked if m not in METRICS]
    if unknown or not asked:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from "
                          f"{','.join(names())}")
    return tuple(dict.fromkeys(asked))
