"""`cfgdiff score` as one library call: samples (+ reference) -> metrics, a results file with provenance.

    record = score(ScoreConfig(samples="samples.npz", ref="VIRTUAL_imagenet64_labeled.npz"))
    record["metrics"]["fid"]
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from cfgdiff import __version__, dist
from cfgdiff.config import to_dict
from cfgdiff.errors import ConfigError, WeightsError
from cfgdiff.files import check_outputs, write_json
from cfgdiff.metrics.cache import cache_root, memo_content_sha256
from cfgdiff.metrics.detector import load_detector
from cfgdiff.metrics.evaluate import ALL_METRICS, compute_metrics, parse_metrics
from cfgdiff.metrics.extract import statistics_from_arrays, statistics_of
from cfgdiff.metrics.frechet import METHODS
from cfgdiff.metrics.reference import load_reference, save_statistics
from cfgdiff.metrics.sources import open_input
from cfgdiff.metrics.weights import HOW_TO_GET_HEAD

NEEDS_REF = ("fid", "pr", "sfid", "kid")


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """What `cfgdiff score` does.

    metrics: None = every metric the inputs allow (unavailable ones are reported, not fatal); an
        explicit tuple makes each requested metric mandatory.
    results: the results JSON (default: `<samples>.score.json` beside the samples).
    cache_dir: cache root for weights lookups and reference statistics (default: XDG cache).
    """

    samples: str
    ref: str | None = None
    inception: str | None = None
    batch: int = 64
    save_stats: str | None = None
    metrics: tuple[str, ...] | None = None
    fid_method: str = "eigh"
    results: str | None = None
    cache_dir: str | None = None
    force: bool = False  # replace an existing --results/--save-stats file that cfgdiff did not write

    def __post_init__(self) -> None:
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ConfigError(f"batch must be a positive integer, got {self.batch!r}")
        if self.fid_method not in METHODS:
            raise ConfigError(f"fid_method must be one of {', '.join(METHODS)}, got {self.fid_method!r}")
        if self.metrics is not None:
            object.__setattr__(self, "metrics", parse_metrics(self.metrics))
            needs = [m for m in self.metrics if m in NEEDS_REF]
            if needs and self.ref is None:
                raise ConfigError(f"{','.join(needs)} need a reference: pass --ref")

    def resolved_metrics(self) -> tuple[str, ...]:
        if self.metrics is not None:
            return self.metrics
        return ALL_METRICS if self.ref is not None else ("is",)

    def results_path(self) -> Path:
        if self.results is not None:
            return Path(self.results)
        samples = Path(self.samples)
        return samples.with_name((samples.stem if samples.is_file() else samples.name) + ".score.json")


def score(cfg: ScoreConfig) -> dict[str, object]:
    """Compute the metrics of `cfg.samples` against `cfg.ref` and write the results file (rank 0).

    Returns the record written: config, samples/reference/weights provenance, metrics, version, time.
    """
    dist.init()
    metrics = cfg.resolved_metrics()
    root = Path(cfg.cache_dir) if cfg.cache_dir else cache_root()
    samples = open_input(cfg.samples)  # fail on a bad path before any expensive work
    check_outputs({"--results": cfg.results_path(), "--save-stats": cfg.save_stats},
                  [cfg.samples, cfg.ref, cfg.inception], force=cfg.force)
    detector = load_detector(cfg.inception, batch_size=cfg.batch)
    if "is" in metrics and not detector.has_logits:  # say so before hours of work
        if cfg.metrics is not None:
            raise WeightsError(f"IS needs the Inception 1008-way head, which {detector.path.name} lacks; "
                               + HOW_TO_GET_HEAD)
        if cfg.ref is None and not cfg.save_stats:  # IS was the only metric possible: nothing to do
            raise WeightsError(f"nothing to compute: without --ref only IS is possible, and it needs the Inception "
                               f"1008-way head, which {detector.path.name} lacks; pass --ref, or --save-stats to "
                               "keep the statistics, or " + HOW_TO_GET_HEAD)
    need_pool = "pr" in metrics or "kid" in metrics
    ref = (load_reference(cfg.ref, detector, root, need_pool=need_pool, batch_size=cfg.batch)
           if cfg.ref is not None else None)
    if samples.images is not None:
        gen = statistics_of(samples.images, detector, keep_pool=need_pool, keep_logits="is" in metrics,
                            batch_size=cfg.batch, desc="samples")
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
    }
    if dist.is_main():
        if cfg.save_stats:
            save_statistics(gen, cfg.save_stats, record=True)
        write_json(cfg.results_path(), record, record=True)
    return record
