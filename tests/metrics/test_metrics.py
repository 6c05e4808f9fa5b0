"""The metrics' math against closed forms and reference implementations (no Inception network involved)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from cfgdiff.errors import ConfigError, MetricsError
from cfgdiff.metrics.evaluate import compute_metrics, parse_metrics
from cfgdiff.metrics.frechet import frechet_distance, trace_sqrt_product
from cfgdiff.metrics.inception import Features
from cfgdiff.metrics.inception_score import inception_score
from cfgdiff.metrics.kid import kernel_inception_distance, mmd2_unbiased
from cfgdiff.metrics.manifold import precision_recall
from cfgdiff.metrics.reference import Reference
from cfgdiff.metrics.stats import FeatureAccumulator, Moments, Statistics


def _random_psd(rng: np.random.Generator, d: int, eig: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * eig) @ q.T


# ---- FID ---------------------------------------------------------------------------------------------------------
def test_fid_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 32))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    for method in ("eigh", "sqrtm"):
        assert abs(frechet_distance(mu, sigma, mu, sigma, method)) < 1e-10 * np.trace(sigma)


def test_fid_closed_form_for_diagonal_covariances():
    # commuting covariances: d² = |Δμ|² + Σ (√a − √b)²
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([3.0, 1.0, 0.0])
    want = 9 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)


def test_fid_closed_form_against_identity_covariance():
    # Σ₁ = I: tr (Σ₂)^½ = Σ √λᵢ(Σ₂), for a Σ₂ that is not diagonal
    rng = np.random.default_rng(1)
    eig = rng.uniform(0.1, 5.0, 20)
    sigma2 = _random_psd(rng, 20, eig)
    mu2 = rng.standard_normal(20)
    want = mu2 @ mu2 + 20 + eig.sum() - 2 * np.sqrt(eig).sum()
    assert frechet_distance(np.zeros(20), np.eye(20), mu2, sigma2) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("n", [400, 40])  # full-rank covariances, and singular ones (N < D) that need Σ₁^½
def test_fast_fid_agrees_with_scipy_sqrtm(n):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((n, 64)), rng.standard_normal((n, 64)) @ rng.standard_normal((64, 64)) * 0.3 + 0.1
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    fast = frechet_distance(x.mean(0), s1, y.mean(0), s2, "eigh")
    ref = frechet_distance(x.mean(0), s1, y.mean(0), s2, "sqrtm")
    assert abs(fast - ref) <= 1e-6 * abs(ref)
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real, rel=1e-6)


@pytest.mark.parametrize("mu,sigma,msg", [
    (np.zeros(3), np.eye(3) * np.nan, "NaN or inf"),
    (np.zeros(3), np.diag([1.0, -1.0, 1.0]), "not positive semi-definite"),
    (np.zeros(3), np.eye(4), r"mu must be \(D,\)"),
    (np.zeros(3), np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]), "not symmetric"),
])
def test_bad_statistics_are_one_clear_error(mu, sigma, msg):
    with pytest.raises(MetricsError, match=msg):
        frechet_distance(mu, sigma, np.zeros(3), np.eye(3))


def test_fid_dimension_mismatch():
    with pytest.raises(MetricsError, match="different dimensions"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


# ---- IS ----------------------------------------------------------------------------------------------------------
def test_inception_score_is_one_for_uniform_predictions():
    assert inception_score(np.zeros((50, 1008))) == (1.0, 0.0)


def test_inception_score_is_k_for_confident_predictions_spread_over_k_classes():
    # each split of 12 images holds every one of K = 4 classes three times, each predicted with certainty
    logits = np.full((120, 1008), -1e4)
    logits[np.arange(120), np.arange(120) % 4] = 0.0
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(4.0, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_splits_are_contiguous_with_population_std():
    # splits 0-4 spread over 2 classes (IS 2), splits 5-9 over 6 classes (IS 6): mean 4, std 2
    labels = np.concatenate([np.arange(60) % 2, np.arange(60) % 6])
    logits = np.full((120, 1008), -1e4)
    logits[np.arange(120), labels] = 0.0
    assert inception_score(logits, splits=10) == pytest.approx((4.0, 2.0), rel=1e-12)


def test_inception_score_matches_the_improved_gan_formula():
    # the formula of ADM's evaluator / improved-gan, in float64, one split per 30 images, remainder dropped
    logits = np.random.default_rng(3).standard_normal((95, 1008)) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(3):
        part = p[i * 31 : (i + 1) * 31]
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0, keepdims=True))), 1))))
    assert inception_score(logits, splits=3) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-12)


def test_inception_score_needs_an_image_per_split():
    with pytest.raises(MetricsError, match="at least one image per split"):
        inception_score(np.zeros((9, 1008)), splits=10)


# ---- precision / recall ------------------------------------------------------------------------------------------
def test_precision_recall_on_a_known_point_cloud():
    ref = np.stack([np.arange(10.0), np.zeros(10)], 1)  # 10 points on a line, unit spacing
    far = np.stack([1000 + 0.1 * np.arange(10.0), np.zeros(10)], 1)  # a tight cluster far away
    gen = np.concatenate([ref, far])
    precision, recall = precision_recall(ref, gen, k=3)
    assert precision == 0.5  # exactly the 10 copies of the reference lie inside its spheres
    assert recall == 1.0  # every reference point has a generated copy at distance 0
    assert precision_recall(ref, far, k=3) == (0.0, 0.0)
    assert precision_recall(ref, ref.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_match_brute_force_in_small_batches():
    rng = np.random.default_rng(4)
    ref, gen = rng.standard_normal((60, 8)), rng.standard_normal((50, 8)) * 1.3 + 0.4
    d_rr, d_gg, d_gr = cdist(ref, ref, "sqeuclidean"), cdist(gen, gen, "sqeuclidean"), cdist(gen, ref, "sqeuclidean")
    r_ref, r_gen = np.sort(d_rr, 1)[:, 3], np.sort(d_gg, 1)[:, 3]  # 3rd neighbour, self at index 0
    want_p = np.mean((d_gr <= r_ref[None]).any(1))
    want_r = np.mean((d_gr.T <= r_gen[None]).any(1))
    got = precision_recall(ref, gen, k=3, batch=7)
    assert got == pytest.approx((want_p, want_r), abs=1e-12)
    assert 0 < got[0] < 1 and 0 < got[1] < 1  # a case that can actually fail


def test_precision_recall_bad_input():
    with pytest.raises(MetricsError, match="more than 3 features"):
        precision_recall(np.zeros((3, 4)), np.zeros((10, 4)))
    with pytest.raises(MetricsError, match="dimensions differ"):
        precision_recall(np.zeros((10, 4)), np.zeros((10, 5)))


# ---- KID ---------------------------------------------------------------------------------------------------------
def test_mmd_matches_the_unbiased_estimator_written_out():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((7, 3)) + 0.5

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    m = 7
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    # one subset holding all the features: KID is that same number, whatever the permutation
    assert kernel_inception_distance(x, y, subsets=3, subset_size=100) == pytest.approx((xx + yy - 2 * xy, 0.0))


def test_kid_separates_distributions():
    rng = np.random.default_rng(6)
    a, b, c = rng.standard_normal((400, 16)), rng.standard_normal((400, 16)), rng.standard_normal((400, 16)) + 1
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, c, subsets=20, subset_size=200)
    assert abs(same) < 0.05 < shifted


# ---- streaming statistics ----------------------------------------------------------------------------------------
def _features(rng: np.random.Generator, n: int, with_logits: bool = True, dims=(16, 10, 12)) -> Features:
    """Features with small stand-in dimensions (pool, logits, spatial): the statistics do not depend on them."""
    def normal(d):
        return torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32))
    return Features(normal(dims[0]), normal(dims[1]) if with_logits else None, normal(dims[2]) + 3)


def test_accumulator_equals_np_mean_and_cov_over_batches():
    rng = np.random.default_rng(7)
    batches = [_features(rng, n) for n in (5, 1, 17)]
    acc = FeatureAccumulator(keep_pool=True, keep_logits=True)
    for f in batches:
        acc.add(f)
    stats = acc.finalize("abc")
    pool = np.concatenate([f.pool.numpy() for f in batches]).astype(np.float64)
    spatial = np.concatenate([f.spatial.numpy() for f in batches]).astype(np.float64)
    assert stats.count == 23 and stats.weights_sha256 == "abc"
    np.testing.assert_allclose(stats.pool.mu, pool.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.pool.sigma, np.cov(pool, rowvar=False), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.spatial.sigma, np.cov(spatial, rowvar=False), rtol=0, atol=1e-11)
    np.testing.assert_array_equal(stats.pool_features, pool.astype(np.float32))  # kept in input order
    assert stats.logits.shape == (23, 10)


def test_accumulator_rejects_no_images_and_non_finite_features():
    rng = np.random.default_rng(8)
    with pytest.raises(MetricsError, match="no images"):
        FeatureAccumulator().finalize()
    acc = FeatureAccumulator(keep_pool=True)
    acc.add(_features(rng, 1))
    one = acc.finalize()  # one image: statistics exist, the covariance metrics say why they are n/a
    out = compute_metrics(one, Reference(_stats(rng, 10), "r", "npz", "r" * 64), ("fid", "pr"))
    assert out["fid"] is None and "at least 2 images" in out["unavailable"]["fid"]
    assert out["precision"] is None and "more than 3 features" in out["unavailable"]["pr"]
    bad = _features(rng, 2)
    bad.pool[0, 0] = float("nan")
    with pytest.raises(MetricsError, match="not finite"):
        FeatureAccumulator().add(bad)


def test_accumulator_without_head_keeps_no_logits():
    acc = FeatureAccumulator(keep_logits=True)
    acc.add(_features(np.random.default_rng(9), 4, with_logits=False))
    assert acc.finalize().logits is None


# ---- compute_metrics ---------------------------------------------------------------------------------------------
def _stats(rng: np.random.Generator, n: int, shift: float = 0.0) -> Statistics:
    acc = FeatureAccumulator(keep_pool=True, keep_logits=True)
    f = _features(rng, n)
    acc.add(Features(f.pool + shift, f.logits, f.spatial + shift))
    return acc.finalize("w" * 64)


def test_compute_metrics_of_a_set_against_itself():
    stats = _stats(np.random.default_rng(10), 40)
    ref = Reference(stats, "ref.npz", "npz", "r" * 64)
    out = compute_metrics(stats, ref, kid_subsets=2)
    assert abs(out["fid"]) < 1e-6 and abs(out["sfid"]) < 1e-6
    assert out["precision"] == 1.0 and out["recall"] == 1.0
    assert out["counts"] == {"samples": 40, "reference": 40}
    assert out["weights_sha256"] == "w" * 64 and out["reference_sha256"] == "r" * 64
    assert out["unavailable"] == {} and out["is_mean"] > 1 and out["kid"] < 0.01


def test_unavailable_metrics_are_none_with_a_reason_or_raise_when_strict():
    rng = np.random.default_rng(11)
    gen = _stats(rng, 30)
    stats_only = Reference(Statistics(None, gen.pool), "stats.npz", "npz-stats", "s" * 64)
    out = compute_metrics(gen, stats_only, ("fid", "pr", "sfid"))
    assert out["fid"] == pytest.approx(0.0, abs=1e-9)
    assert out["precision"] is None and out["recall"] is None and out["sfid"] is None
    assert set(out["unavailable"]) == {"pr", "sfid"}
    with pytest.raises(MetricsError, match="per-image features"):
        compute_metrics(gen, stats_only, ("pr",), strict=True)
    no_head = Statistics(30, gen.pool, gen.spatial, gen.pool_features, None, "w" * 64)
    assert "1008-way head" in compute_metrics(no_head, None, ("is",))["unavailable"]["is"]


def test_parse_metrics():
    assert parse_metrics("fid, IS,fid") == ("fid", "is")
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_metrics("fid,lpips")
    assert Moments(np.zeros(1), np.eye(1)).mu.shape == (1,)
