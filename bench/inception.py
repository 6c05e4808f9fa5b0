"""Benchmark: Inception images/s, and FID from 2048-d statistics with the fast path versus scipy's sqrtm.

Both FID methods run in the same process on the same statistics, so the ratio holds even when the
machine is shared and absolute times drift.

    .venv/bin/python bench/inception.py [--images 32] [--batch 16] [--size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cfgdiff import dist
from cfgdiff.errors import WeightsError
from cfgdiff.metrics.detector import InceptionDetector, load_detector
from cfgdiff.metrics.frechet import frechet_distance
from cfgdiff.metrics.inception import FIDInception


def detector(batch: int) -> InceptionDetector:
    """The real detector if weights resolve offline; else the same network with zero weights (same speed)."""
    try:
        return load_detector(batch_size=batch)
    except WeightsError as e:
        print(f"no weights ({e}); timing a zero-weight network")
        return InceptionDetector(FIDInception(), "none", "", "none", dist.device(), batch)


def inception_rate(det: InceptionDetector, images: int, size: int) -> float:
    x = np.random.default_rng(0).integers(0, 256, (images, size, size, 3), dtype=np.uint8)
    det.features(x[: det.batch_size])  # warm-up: allocator, oneDNN/cuDNN kernel choice
    if det.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    det.features(x)
    if det.device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - t0)


def fid_timings(n: int, repeats: int) -> dict[str, float]:
    """Seconds for FID between two full-rank 2048-d Gaussians' statistics (n samples each)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, 2048)).astype(np.float32)
    b = (a[:, ::-1] * 0.9 + rng.standard_normal((n, 2048)).astype(np.float32) * 0.5).astype(np.float64)
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    times, value = [], 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = frechet_distance(mu1, s1, mu2, s2, "eigh")
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    reference = frechet_distance(mu1, s1, mu2, s2, "sqrtm")
    t_sqrtm = time.perf_counter() - t0
    return {"eigh_s": statistics.median(times), "sqrtm_s": t_sqrtm, "fid": value,
            "rel_diff": abs(value - reference) / abs(reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images timed (after one warm-up batch)")
    parser.add_argument("--batch", type=int, default=16, help="images per forward")
    parser.add_argument("--size", type=int, default=64, help="input side in pixels (resized to 299)")
    parser.add_argument("--stats-samples", type=int, default=4096, help="samples behind each covariance")
    parser.add_argument("--repeats", type=int, default=3, help="fast-path repeats (median reported)")
    args = parser.parse_args()
    det = detector(args.batch)
    rate = inception_rate(det, args.images, args.size)
    print(f"inception: {rate:.2f} img/s on {det.device} ({args.images} images {args.size}² -> 299², batch "
          f"{args.batch}, {torch.get_num_threads()} threads); 50k images: {50000 / rate / 3600:.2f} h")
    f = fid_timings(args.stats_samples, args.repeats)
    print(f"FID from 2048-d stats: eigh {f['eigh_s']:.2f} s, sqrtm {f['sqrtm_s']:.2f} s, "
          f"ratio sqrtm/eigh {f['sqrtm_s'] / f['eigh_s']:.1f}x, FID {f['fid']:.6f}, rel diff {f['rel_diff']:.1e}")


if __name__ == "__main__":
    main()
