"""Q1 of the geometry study (docs/studies/geometry.md, 'Q1'): is the
quantization error at each point linearly recoverable, and does the hand-made correctability score
predict where?

Everything here is numpy on trace arrays of shape (rows, d); no torch, so it is easy to test.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

Q1_THRESHOLD = 0.35       # supported: median R_lin_q4 >= 0.35 and Spearman >= 0.35
Q1_REFUTE_FACTOR = 0.7    # refuted: median < 0.7 x 0.35 = 0.245 (the seed's text prints 0.24) and Spearman < 0
RIDGE_LAMBDA = 1e-4
MAP_BITS = 4              # precision of the recovery map in R_lin_q4


# --------------------------------------------------------------------------------------------
# Ridge map z_float ~ z_quant W + b
def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float = RIDGE_LAMBDA) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge regression ``y ~ x W + b`` with the penalty ``lam |W|^2`` on W only.

    Solves the normal equations of the bias-augmented design [x, 1] in float64; the bias column
    gets no penalty, so b is the unregularised intercept. Returns W (d_in, d_out) and b (d_out,).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"ridge_fit needs (n, d_in) and (n, d_out) arrays, got {x.shape} and {y.shape}")
    n, d = x.shape
    xa = np.concatenate([x, np.ones((n, 1))], axis=1)
    gram = xa.T @ xa
    gram[np.arange(d), np.arange(d)] += lam
    try:
        coef = np.linalg.solve(gram, xa.T @ y)
    except np.linalg.LinAlgError:  # singular even with the penalty (lam = 0, constant columns)
        coef = np.linalg.lstsq(gram, xa.T @ y, rcond=None)[0]
    return coef[:d], coef[d]


def fake_quant_np(a: np.ndarray, bits: int = MAP_BITS) -> np.ndarray:
    """Symmetric per-tensor fake quantization of a whole array with its own absmax scale:
    ``s = max|a| / qmax`` (1 if a is all zeros), ``s * clip(round(a / s), qmin, qmax)``; np.round
    rounds half to even like torch.round."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    a = np.asarray(a, dtype=np.float64)
    m = float(np.max(np.abs(a))) if a.size else 0.0
    s = m / qmax if m > 0 else 1.0
    return s * np.clip(np.round(a / s), qmin, qmax)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def recovery_ratio(mse: float, base: float) -> float:
    """R = 1 - mse / base. With no error to recover (base == 0) R is 0: the map can neither help
    nor be credited."""
    if not base > 0:
        return 0.0
    return 1.0 - mse / base


def linear_recoverability(zq_train: np.ndarray, zf_train: np.ndarray, zq_test: np.ndarray,
                          zf_test: np.ndarray, lam: float = RIDGE_LAMBDA, bits: int = MAP_BITS) -> dict:
    """Fit the ridge map on the train rows and score it on the test rows ('Ridge map').

    - base: mse of the uncorrected quantized value, ``mean((z_quant - z_float)^2)``;
    - lin_float_mse: with the float (W, b);
    - lin_q4_mse: W and b each fake-quantized to ``bits`` with their own per-tensor scale. The full
      map W (close to the identity) is quantized, as in the original;
    - lin_q4_residual_mse (control): the residual map W - I and b are quantized instead, the map
      applied is I + Q(W - I), so the 4-bit grid only has to hold the correction.
    """
    w, b = ridge_fit(zq_train, zf_train, lam)
    zq = np.asarray(zq_test, np.float64)
    base = _mse(zq, zf_test)
    lin_float = _mse(zq @ w + b, zf_test)
    wq, bq = fake_quant_np(w, bits), fake_quant_np(b, bits)
    lin_q4 = _mse(zq @ wq + bq, zf_test)
    eye = np.eye(w.shape[0], w.shape[1])
    w_res_q = eye + fake_quant_np(w - eye, bits)
    lin_q4_res = _mse(zq @ w_res_q + bq, zf_test)
    return {
        "base_mse": base,
        "lin_float_mse": lin_float,
        "lin_q4_mse": lin_q4,
        "lin_q4_residual_mse": lin_q4_res,
        "R_lin_float": recovery_ratio(lin_float, base),
        "R_lin_q4": recovery_ratio(lin_q4, base),
        "R_lin_q4_residual": recovery_ratio(lin_q4_res, base),
        "map_identity_dev": float(np.linalg.norm(w - eye) / max(np.linalg.norm(eye), 1e-12)),
    }


# --------------------------------------------------------------------------------------------
# Geometry of the error at one point and the correctability score
def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a


def error_covariance(err: np.ndarray, shrinkage: float = 1e-5) -> np.ndarray:
    """Covariance over rows (centred, ddof 1) plus ``shrinkage`` on the diagonal."""
    x = _rows(err)
    d = x.shape[1]
    if len(x) < 2:
        return np.eye(d) * shrinkage
    c = np.cov(x, rowvar=False).reshape(d, d)
    c = (c + c.T) / 2.0
    c[np.arange(d), np.arange(d)] += shrinkage
    return c


def spectrum_metrics(err: np.ndarray, shrinkage: float = 1e-5, eps: float = 1e-12) -> dict:
    """Anisotropy (max/min eigenvalue), Gaussian differential entropy in bits, effective rank
    (exp of the spectral entropy) and the volume proxy sqrt(det) of the error covariance."""
    ev = np.clip(np.linalg.eigvalsh(error_covariance(err, shrinkage)), eps, None)
    d = len(ev)
    logdet = float(np.sum(np.log(ev)))
    p = ev / ev.sum()
    return {
        "anisotropy_ratio": float(ev.max() / max(ev.min(), eps)),
        "entropy_proxy": float(0.5 * (d * math.log(2 * math.pi * math.e) + logdet) / math.log(2.0)),
        "effective_rank": float(math.exp(-np.sum(p * np.log(np.clip(p, eps, None))))),
        "log_det_cov": logdet,
        "volume_proxy": float(math.exp(min(max(0.5 * logdet, -80.0), 80.0))),
    }


def mean_row_norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(_rows(a), axis=1).mean())


def correctability_score(linear_fraction: float, flip_rate: float, sat_rate: float,
                         anisotropy: float, amplification: float) -> float:
    """``clip(0.55 lf + 0.15 (1 - flip) + 0.15 (1 - sat) + 0.10 / (1 + log1p(max(anis - 1, 0)))
    + 0.05 / (1 + max(amp - 1, 0)), 0, 1)`` (docs/studies/geometry.md, 'Correctability
    score')."""
    s = (0.55 * linear_fraction + 0.15 * (1.0 - flip_rate) + 0.15 * (1.0 - sat_rate)
         + 0.10 / (1.0 + math.log1p(max(anisotropy - 1.0, 0.0)))
         + 0.05 / (1.0 + max(amplification - 1.0, 0.0)))
    return float(min(max(s, 0.0), 1.0))


def point_geometry(round_err: np.ndarray, sat_err: np.ndarray, sat_mask: np.ndarray, z_float: np.ndarray,
                   z_pre: np.ndarray, prev_accumulated: np.ndarray | None, eps: float = 1e-12) -> dict:
    """Correctability components of one point on the report batch (all rows, all elements).

    ``prev_accumulated``: ``quant_x - float_x`` after the previous point (None at the first point,
    where the amplification is 1)."""
    rnd, sat = _rows(round_err), _rows(sat_err)
    total = rnd + sat
    lin, non = mean_row_norm(rnd), mean_row_norm(sat)
    linear_fraction = lin / max(lin + non, eps)
    fpos, qpos = np.asarray(z_float) > 0, np.asarray(z_pre) > 0
    flip = float(np.mean(fpos ^ qpos))
    dead = float(np.mean(~fpos & ~qpos))
    sat_rate = float(np.mean(np.asarray(sat_mask, dtype=bool)))
    total_norm = mean_row_norm(total)
    amplification = 1.0 if prev_accumulated is None else total_norm / max(mean_row_norm(prev_accumulated), eps)
    spec = spectrum_metrics(total)
    out = {
        "linear_error_norm": lin, "nonlinear_error_norm": non, "total_error_norm": total_norm,
        "linear_fraction": linear_fraction, "relu_flip_rate": flip, "dead_rate": dead,
        "sat_rate": sat_rate, "amplification": amplification, **spec,
    }
    out["correctability_score"] = correctability_score(linear_fraction, flip, sat_rate,
                                                       spec["anisotropy_ratio"], amplification)
    return out


# --------------------------------------------------------------------------------------------
# Per-setting statistics and the verdict
def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get the mean of their ranks."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    sorted_a = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson on average ranks). NaN inputs count as 0 and an
    undefined correlation (fewer than 2 points, a constant series) is 0, as in the study."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    y = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0)
    if len(x) != len(y):
        raise ValueError("spearman needs two series of the same length")
    if len(x) < 2:
        return 0.0
    rx, ry = rankdata(x) - (len(x) + 1) / 2.0, rankdata(y) - (len(y) + 1) / 2.0
    den = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / den) if den > 0 else 0.0


def q1_verdict(median_r_lin_q4: float, rho: float, threshold: float = Q1_THRESHOLD,
               refute_factor: float = Q1_REFUTE_FACTOR) -> str:
    """supported: median >= threshold and rho >= threshold; refuted: median < factor x threshold
    and rho < 0; unclear otherwise."""
    if median_r_lin_q4 >= threshold and rho >= threshold:
        return "supported"
    if median_r_lin_q4 < refute_factor * threshold and rho < 0:
        return "refuted"
    return "unclear"


def depth_bucket(k: int, n_points: int) -> str:
    """Tertiles of the relative depth k / (P - 1): early < 1/3 <= mid < 2/3 <= late (strict lower
    bounds: with P in {4, 8, 12} this gives the seed's 54 early points over 156)."""
    r = k / (n_points - 1) if n_points > 1 else 0.0
    return "early" if r < 1 / 3 else ("mid" if r < 2 / 3 else "late")


def _agg(values: np.ndarray, prefix: str) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {f"{prefix}_mean": float("nan"), f"{prefix}_median": float("nan"),
                f"{prefix}_pos_frac": float("nan"), f"{prefix}_n": 0}
    return {f"{prefix}_mean": float(v.mean()), f"{prefix}_median": float(np.median(v)),
            f"{prefix}_pos_frac": float(np.mean(v > 0)), f"{prefix}_n": int(v.size)}


def q1_summary(points: list[Mapping]) -> dict:
    """The setting's Q1 row metrics from its per-point records (keys of ``linear_recoverability``
    and ``point_geometry`` plus ``point_index``, ``sub_layer``)."""
    P = len(points)
    k = np.array([p["point_index"] for p in points])
    score = np.array([p["correctability_score"] for p in points], dtype=np.float64)
    out: dict = {"n_points": P}
    for name in ("R_lin_float", "R_lin_q4", "R_lin_q4_residual"):
        v = np.array([p[name] for p in points], dtype=np.float64)
        out.update(_agg(v, name.lower()))
        out.pop(f"{name.lower()}_n")
        out[f"{name.lower()}_share_gt_0_2"] = float(np.mean(v > 0.2)) if P else float("nan")
    q4 = np.array([p["R_lin_q4"] for p in points], dtype=np.float64)
    res = np.array([p["R_lin_q4_residual"] for p in points], dtype=np.float64)
    fl = np.array([p["R_lin_float"] for p in points], dtype=np.float64)
    out["spearman_score_q4"] = spearman(score, q4)
    out["spearman_score_float"] = spearman(score, fl)
    out["spearman_score_q4_residual"] = spearman(score, res)
    out["correctability_score_mean"] = float(score.mean()) if P else float("nan")
    out["q1_verdict"] = q1_verdict(out["r_lin_q4_median"], out["spearman_score_q4"])
    out["q1_verdict_residual_map"] = q1_verdict(out["r_lin_q4_residual_median"], out["spearman_score_q4_residual"])
    # Depth (tertiles of k / (P-1)) and sub-layer profiles of R_lin_q4; the counts let a reader
    # pool settings exactly (mean over points = sum(mean x n) / sum(n)).
    buckets = np.array([depth_bucket(int(i), P) for i in k])
    for b in ("early", "mid", "late"):
        out.update(_agg(q4[buckets == b], f"r_lin_q4_{b}"))
    subs = np.array([p["sub_layer"] for p in points])
    for s in ("attn", "ffn"):
        out.update(_agg(q4[subs == s], f"r_lin_q4_{s}"))
    return out
