"""Q1 math: ridge closed form, 4-bit map quantization, R_lin, correctability components,
Spearman, depth tertiles and the Q1 verdict rules."""
import math

import numpy as np
import pytest
from scipy import stats

from workloads.geometry import q1 as Q1


def _toy(n=400, d=6, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=(d, d))
    b = rng.normal(size=d)
    y = x @ w + b + noise * rng.normal(size=(n, d))
    return x, y, w, b


def test_ridge_without_penalty_equals_lstsq():
    x, y, _, _ = _toy()
    w, b = Q1.ridge_fit(x, y, lam=0.0)
    coef = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
    assert np.allclose(w, coef[:-1], atol=1e-10) and np.allclose(b, coef[-1], atol=1e-10)


@pytest.mark.parametrize("lam", [1e-4, 0.5, 30.0])
def test_ridge_penalises_w_only_as_an_augmented_lstsq(lam):
    # Ridge on W only == least squares on [x, 1] with sqrt(lam) I rows appended for the W block
    # and a zero row entry for the bias column.
    x, y, _, _ = _toy(n=120, d=5, seed=1, noise=0.3)
    d = x.shape[1]
    A = np.r_[np.c_[x, np.ones(len(x))], np.c_[math.sqrt(lam) * np.eye(d), np.zeros((d, 1))]]
    B = np.r_[y, np.zeros((d, y.shape[1]))]
    coef = np.linalg.lstsq(A, B, rcond=None)[0]
    w, b = Q1.ridge_fit(x, y, lam=lam)
    assert np.allclose(w, coef[:-1], atol=1e-9) and np.allclose(b, coef[-1], atol=1e-9)


def test_bias_is_not_shrunk():
    # A huge penalty kills W; the unpenalised bias must then be the mean of y.
    x, y, _, _ = _toy(n=200, d=4, seed=2)
    w, b = Q1.ridge_fit(x, y, lam=1e9)
    assert np.abs(w).max() < 1e-5
    assert np.allclose(b, y.mean(axis=0), atol=1e-3)


def test_fake_quant_4bit_of_a_matrix():
    w = np.array([[0.7, -0.35, 0.05], [0.1, -0.8, 0.0]])
    q = Q1.fake_quant_np(w, 4)
    s = 0.8 / 7  # per-tensor absmax scale, qmax 7
    levels = q / s
    assert np.allclose(levels, np.round(levels))
    assert levels.min() >= -8 and levels.max() <= 7
    assert q[1, 1] == pytest.approx(-0.8)  # the absmax element is exact
    assert np.allclose(q, s * np.clip(np.round(w / s), -8, 7))
    assert np.abs(q - w).max() <= s / 2 + 1e-12
    # half to even: 2.5 -> 2, 3.5 -> 4 (absmax 7 -> s = 1)
    assert list(Q1.fake_quant_np(np.array([2.5, 3.5, -7.0]), 4)) == [2.0, 4.0, -7.0]
    assert np.array_equal(Q1.fake_quant_np(np.zeros(3)), np.zeros(3))  # s = 1 on all zeros


def test_quantizing_a_near_identity_map_wipes_out_the_correction():
    # W = I + small correction: at 4 bits (step 1/7 of the absmax ~1) the small entries round to 0.
    d = 8
    corr = 0.03 * np.random.default_rng(0).normal(size=(d, d))
    q = Q1.fake_quant_np(np.eye(d) + corr, 4)
    assert np.count_nonzero(q - np.diag(np.diag(q))) == 0
    # quantizing the residual map keeps it (its own scale is small)
    qr = Q1.fake_quant_np(corr, 4)
    assert np.abs(qr - corr).max() < np.abs(corr).max() / 7


def test_r_lin_is_zero_when_the_quantized_path_equals_the_float_one():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 5))
    out = Q1.linear_recoverability(z, z, z[:100], z[:100])
    assert out["base_mse"] == 0.0
    assert out["R_lin_float"] == 0.0 and out["R_lin_q4"] == 0.0 and out["R_lin_q4_residual"] == 0.0


def test_r_lin_is_zero_for_an_identity_map_and_one_for_an_exact_linear_error():
    assert Q1.recovery_ratio(0.3, 0.3) == 0.0
    assert Q1.recovery_ratio(0.0, 0.3) == 1.0
    assert Q1.recovery_ratio(0.6, 0.3) == pytest.approx(-1.0)
    # z_float is an exact affine function of z_quant: the float map recovers everything
    rng = np.random.default_rng(4)
    zq = rng.normal(size=(2000, 6))
    A = np.eye(6) + 0.1 * rng.normal(size=(6, 6))
    zf = zq @ A + 0.05
    out = Q1.linear_recoverability(zq[:1500], zf[:1500], zq[1500:], zf[1500:])
    assert out["R_lin_float"] > 0.999
    # the 4-bit full map loses most of it, the residual-map control keeps more
    assert out["R_lin_q4"] < out["R_lin_q4_residual"] < out["R_lin_float"]


def test_pure_noise_error_is_not_recoverable():
    rng = np.random.default_rng(5)
    zf = rng.normal(size=(6000, 4))
    zq = zf + 0.1 * rng.normal(size=zf.shape)  # error independent of ... nearly nothing to learn
    out = Q1.linear_recoverability(zq[:4000], zf[:4000], zq[4000:], zf[4000:])
    # shrinking toward the mean recovers only the tiny signal-to-noise share 0.01/1.01
    assert abs(out["R_lin_float"] - 0.01) < 0.02


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(6)
    for n in (4, 8, 12, 50):
        x = rng.integers(0, 5, size=n).astype(float)  # many ties
        y = x + rng.normal(size=n)
        assert Q1.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        z = rng.normal(size=n)
        assert Q1.spearman(z, y) == pytest.approx(stats.spearmanr(z, y).statistic, abs=1e-12)


def test_spearman_nan_counts_as_zero():
    assert Q1.spearman([1, 1, 1, 1], [1, 2, 3, 4]) == 0.0  # constant: undefined -> 0
    assert Q1.spearman([1.0], [2.0]) == 0.0
    x = np.array([0.3, np.nan, 0.9, -0.2])
    assert Q1.spearman(x, [1, 2, 3, 4]) == pytest.approx(stats.spearmanr([0.3, 0.0, 0.9, -0.2], [1, 2, 3, 4]).statistic)


@pytest.mark.parametrize("median,rho,expected", [
    (0.35, 0.35, "supported"),
    (0.80, 0.90, "supported"),
    (0.35, 0.34, "unclear"),       # median high enough, rank correlation not
    (0.34, 0.50, "unclear"),
    (0.244, -0.01, "refuted"),     # below 0.7 x 0.35 = 0.245 with a negative rho
    (0.24, -0.5, "refuted"),
    (0.245, -0.5, "unclear"),      # exactly 0.245 is not below the refutation threshold
    (0.246, -0.9, "unclear"),      # the seed's printed 0.24 would call this unclear too, 0.245 decides
    (0.10, 0.0, "unclear"),        # rho must be strictly negative to refute
    (-0.3, -0.4, "refuted"),
])
def test_q1_verdict_rules(median, rho, expected):
    assert Q1.q1_verdict(median, rho) == expected


def test_correctability_score_formula():
    # every component perfect: 0.55 + 0.15 + 0.15 + 0.10 + 0.05 = 1
    assert Q1.correctability_score(1.0, 0.0, 0.0, 1.0, 1.0) == pytest.approx(1.0)
    s = Q1.correctability_score(0.5, 0.2, 0.1, 11.0, 3.0)
    expected = 0.55 * 0.5 + 0.15 * 0.8 + 0.15 * 0.9 + 0.10 / (1 + math.log1p(10.0)) + 0.05 / (1 + 2.0)
    assert s == pytest.approx(expected)
    assert Q1.correctability_score(0.0, 1.0, 1.0, 1e9, 1e9) >= 0.0
    # anisotropy / amplification below 1 are not rewarded beyond the perfect value
    assert Q1.correctability_score(1.0, 0.0, 0.0, 0.5, 0.5) == pytest.approx(1.0)


def test_point_geometry_components_on_crafted_errors():
    rows, d = 50, 4
    rnd = np.zeros((rows, d))
    rnd[:, 0] = 0.3  # every row: rounding-error norm 0.3
    sat = np.zeros((rows, d))
    sat[:, 1] = 0.1  # saturation-error norm 0.1
    mask = np.zeros((rows, d), dtype=bool)
    mask[:, 1] = True  # 1 of 4 elements saturated
    zf = np.ones((rows, d))
    zpre = np.ones((rows, d))
    zpre[:, 2] = -1.0  # a sign flip in one column
    zf[:, 3] = zpre[:, 3] = -2.0  # both negative: dead
    prev = np.zeros((rows, d))
    prev[:, 0] = 0.5
    g = Q1.point_geometry(rnd, sat, mask, zf, zpre, prev)
    assert g["linear_fraction"] == pytest.approx(0.3 / 0.4)
    assert g["sat_rate"] == pytest.approx(0.25)
    assert g["relu_flip_rate"] == pytest.approx(0.25)
    assert g["dead_rate"] == pytest.approx(0.25)
    assert g["amplification"] == pytest.approx(math.hypot(0.3, 0.1) / 0.5)
    assert g["anisotropy_ratio"] == pytest.approx(1.0)  # constant error: covariance = shrinkage I
    assert g["effective_rank"] == pytest.approx(d)
    first = Q1.point_geometry(rnd, sat, mask, zf, zpre, None)
    assert first["amplification"] == 1.0
    assert 0.0 <= g["correctability_score"] <= 1.0


def test_spectrum_of_an_anisotropic_error():
    rng = np.random.default_rng(7)
    e = rng.normal(size=(20000, 3)) * np.array([3.0, 1.0, 0.5])
    m = Q1.spectrum_metrics(e)
    assert m["anisotropy_ratio"] == pytest.approx(36.0, rel=0.05)
    # Gaussian differential entropy in bits: 0.5 log2((2 pi e)^d det)
    det = (9.0 * 1.0 * 0.25)
    assert m["entropy_proxy"] == pytest.approx(0.5 * math.log2((2 * math.pi * math.e) ** 3 * det), abs=0.05)
    assert m["volume_proxy"] == pytest.approx(math.sqrt(det), rel=0.05)


def test_depth_tertiles_give_the_seed_counts():
    # the seed's 6 architectures have P = 2L points; 3 seeds give 156 points, 54 of them early
    counts = {"early": 0, "mid": 0, "late": 0}
    for L in (2, 4, 4, 6, 4, 6):
        P = 2 * L
        for k in range(P):
            counts[Q1.depth_bucket(k, P)] += 3
    assert sum(counts.values()) == 156
    assert counts["early"] == 54


def test_q1_summary_of_crafted_points():
    pts = []
    for k, (rf, rq, sc) in enumerate([(0.3, -0.4, 0.9), (0.35, -0.1, 0.8), (0.4, 0.1, 0.7), (0.5, 0.3, 0.6)]):
        pts.append({"point_index": k, "sub_layer": "attn" if k % 2 == 0 else "ffn", "R_lin_float": rf,
                    "R_lin_q4": rq, "R_lin_q4_residual": rf - 0.01, "correctability_score": sc})
    s = Q1.q1_summary(pts)
    assert s["n_points"] == 4
    assert s["r_lin_q4_median"] == pytest.approx(0.0)
    assert s["r_lin_q4_pos_frac"] == 0.5
    assert s["r_lin_q4_share_gt_0_2"] == 0.25
    assert s["spearman_score_q4"] == pytest.approx(-1.0)
    assert s["q1_verdict"] == "refuted"
    assert s["r_lin_q4_early_n"] == 1 and s["r_lin_q4_mid_n"] == 1 and s["r_lin_q4_late_n"] == 2
    assert s["r_lin_q4_late_mean"] == pytest.approx(0.2)
    assert s["r_lin_q4_attn_mean"] == pytest.approx(-0.15)
    assert s["r_lin_q4_ffn_mean"] == pytest.approx(0.1)
