"""`cfgdiff score` as one library call: samples (+ reference) -> metrics, a results file with provenance.

    record = score(ScoreConfig(samples="samples.npz", ref="VIRTUAL_imagenet64_labeled.npz"))
    record["metrics"]["fid"]
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cfgdiff import __version__, dist
from cfgdiff.config import ScoreConfig, to_dict
from cfgdiff.errors import ConfigError, MetricsError, WeightsError
from cfgdiff.files import Owner, check_outputs, job_id, write_json
from cfgdiff.metrics import registry
from cfgdiff.metrics.cache import cache_root, memo_content_sha256
from cfgdiff.metrics.detector import load_detector
from cfgdiff.metrics.evaluate import compute_metrics
from cfgdiff.metrics.extract import statistics_from_arrays, statistics_of
from cfgdiff.metrics.reference import load_reference, save_statistics
from cfgdiff.metrics.sources import first_size, open_input
from cfgdiff.metrics.weights import HOW_TO_GET_HEAD

REF_RESIZE_HINT = ("Pass --ref-resize area to area-resize them to the samples' size (as prepare does), "
                   "or --ref-resize none to compare them as they are")
RELIABLE_COUNT = 10_000  # below this FID and IS are strongly biased (the papers use 50,000 samples)


def score(cfg: ScoreConfig) -> dict[str, object]:
    """Compute the metrics of `cfg.samples` against `cfg.ref` and write the results file (rank 0).

    Returns the record written: config, samples/reference/weights provenance, metrics, version, time.
    """
    dist.init()
    ref_path, missing_ref = resolved_ref(cfg)
    metrics = resolved_metrics(cfg, ref_path)
    root = Path(cfg.cache_dir) if cfg.cache_dir else cache_root()
    samples = open_input(cfg.samples)  # fail on a bad path before any expensive work
    job = job_id("score", {k: v for k, v in to_dict(cfg).items() if k not in ("force", "batch", "cache_dir")})
    owners = {"--results": Owner("score-results", "score", job), "--save-stats": Owner("reference-stats", "score", job)}
    check_outputs({"--results": cfg.results_path(), "--save-stats": cfg.save_stats},
                  [cfg.samples, ref_path, cfg.inception], owners=owners, force=cfg.force)
    count = samples.images.count if samples.images is not None else _stored_count(samples.stats)
    if count is not None and count < 2 and not cfg.force:
        raise MetricsError(f"{cfg.samples}: {count} image(s); need at least 2 images to score "
                           "(--force records every metric as n/a with its reason)")
    detector = load_detector(cfg.inception, batch_size=cfg.batch)
    if registry.needs(metrics, "logits") and not detector.has_logits:  # say so before hours of work
        if cfg.metrics is not None:
            raise WeightsError(f"IS needs the Inception 1008-way head, which {detector.path.name} lacks; "
                               + HOW_TO_GET_HEAD)
        if ref_path is None and not cfg.save_stats:  # IS was the only metric possible: nothing to do
            raise WeightsError(f"nothing to compute: without --ref only IS is possible, and it needs the Inception "
                               f"1008-way head, which {detector.path.name} lacks; pass --ref, or --save-stats to "
                               "keep the statistics, or " + HOW_TO_GET_HEAD)
    need_pool = registry.needs(metrics, "pool_features")
    size = first_size(samples.images) if samples.images is not None else None
    ref = (load_reference(ref_path, detector, root, need_pool=need_pool, batch_size=cfg.batch, size=size,
                          resize=cfg.ref_resize, hint=REF_RESIZE_HINT)
           if ref_path is not None else None)
    warnings = small_n_warnings(count, metrics) + ([missing_ref] if missing_ref else [])
    for line in warnings:  # after the inputs and weights are known good: an error stays one line
        dist.print0(f"cfgdiff: warning: {line}")
    if samples.images is not None:
        gen = statistics_of(samples.images, detector, keep_pool=need_pool,
                            keep_logits=registry.needs(metrics, "logits"), batch_size=cfg.batch, desc="samples")
    else:
        gen = statistics_from_arrays(samples.stats)
    results = compute_metrics(gen, ref, metrics, fid_method=cfg.fid_method, strict=cfg.metrics is not None,
                              device=str(detector.device))
    record = {
        "cfgdiff_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": to_dict(cfg),
        "samples": {"path": cfg.samples, "kind": samples.kind, "count": gen.count,
                    "sha256": memo_content_sha256(samples.path, root)},
        "reference": ref.provenance() if ref else None,
        "weights": detector.provenance(),
        "metrics": results,
        "warnings": warnings,
    }
    if ref is not None and cfg.ref is None:
        record["reference"]["default"] = f"the samples' training dataset, recorded in {cfg.samples}.json"
    if dist.is_main():
        if cfg.save_stats:
            save_statistics(gen, cfg.save_stats, owner=owners["--save-stats"])
        write_json(cfg.results_path(), record, owner=owners["--results"])
    failed = results["unavailable"]
    if cfg.metrics is not None and failed:  # each metric asked for must succeed; the others are kept
        metric, reason = next(iter(failed.items()))
        raise MetricsError(f"{metric} not computed: {reason} (the other metrics are in {cfg.results_path()})")
    return record


def resolved_ref(cfg: ScoreConfig) -> tuple[str | None, str | None]:
    """(--ref, else the samples' recorded training dataset where it exists; a warning if it does not)."""
    from cfgdiff.metrics.reference import default_reference
    from cfgdiff.metrics.sources import recorded_dataset
    from cfgdiff.runs import locate_dataset

    recorded, fingerprint = recorded_dataset(cfg.samples) if cfg.ref is None else (None, None)
    if recorded:  # relative to the sidecar's folder too, and only the very dataset it records
        found, why = locate_dataset(recorded, fingerprint, Path(cfg.samples).parent)
        if found is None:
            return None, f"{why} (recorded in {cfg.samples}.json); scoring without a reference (pass --ref)"
        recorded = found
    return default_reference(cfg.ref, recorded), None


def resolved_metrics(cfg: ScoreConfig, ref: str | None) -> tuple[str, ...]:
    """The metrics to compute: those asked for (each needing its inputs), else every one `ref` allows."""
    if cfg.metrics is not None:
        needs = registry.needs_ref(cfg.metrics)
        if needs and ref is None:
            raise ConfigError(f"{','.join(needs)} need a reference: pass --ref")
        return cfg.metrics
    return tuple(m for m in registry.names() if ref is not None or not registry.METRICS[m].needs_ref)


def _stored_count(stats: dict | None) -> int | None:
    return int(stats["count"]) if stats is not None and "count" in stats else None


def small_n_warnings(count: int | None, metrics: tuple[str, ...]) -> list[str]:
    """One line per caveat the results carry (also printed on stderr)."""
    biased = [registry.METRICS[m].labels[0] for m in metrics if registry.METRICS[m].biased_small_n]
    if count is not None and count < RELIABLE_COUNT and biased:
        return [f"{count} samples: {', '.join(biased)} below {RELIABLE_COUNT:,} samples are biased and not comparable "
                "with published numbers (50,000)"]
    return []
