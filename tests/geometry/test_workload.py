"""Traces on the substrate's char transformer and a whole (tiny) geometry trial."""
import math

import numpy as np
import pytest
import torch

from orchestrator.study.contract import LocalContext
from workloads.geometry import Geometry
from workloads.geometry import q2 as Q2
from workloads.geometry.traces import ElementCorrectedTap, TraceTap, collect_traces, report_geometry
from workloads.substrate.char_transformer import CharTransformer, mean_ce
from workloads.substrate.correction import FloatTap, QuantTap
from workloads.substrate.quant import Calibrator, fake_quant

torch.set_num_threads(1)

TINY = dict(seed=7, d_model=32, n_layers=2, data="standin", download=False, max_chars=6000, seq_len=32,
            batch_size=16, float_epochs=1, trace_train_sequences=16, trace_test_sequences=8, trace_max_rows=300,
            report_sequences=4, q2_elements=3000, q2_epochs=2, q2_batch=512)


@pytest.fixture(scope="module")
def model_and_scales():
    torch.manual_seed(0)
    m = CharTransformer(20, d_model=16, n_heads=4, n_layers=2, d_ff=64, max_seq_len=64).eval()
    X = torch.randint(0, 20, (6, 24))
    cal = Calibrator()
    with torch.no_grad():
        m(X, FloatTap(cal))
    return m, X, cal.scales(4)


def test_trace_tap_decomposes_the_quantizer(model_and_scales):
    m, X, scales = model_and_scales
    tap = TraceTap(4, scales)
    with torch.no_grad():
        m(X, tap)
    keys = [p.key for p in m.points]
    assert list(tap.record) == keys
    for k in keys:
        r = tap.record[k]
        assert torch.allclose(r["post"], fake_quant(r["pre"], scales[k], 4))
        assert torch.allclose(r["round_err"] + r["sat_err"], r["post"] - r["pre"], atol=1e-6)
        assert (r["round_err"].abs() <= scales[k] / 2 + 1e-6).all()
        assert torch.equal(r["sat_mask"], r["sat_err"] != 0)


def test_trace_trajectory_is_the_quantized_only_path(model_and_scales):
    m, X, scales = model_and_scales
    Y = torch.randint(0, 20, X.shape)
    ok = mean_ce(m, X, Y, lambda: QuantTap(4, scales))
    assert mean_ce(m, X, Y, lambda: TraceTap(4, scales)) == pytest.approx(ok, abs=1e-6)
    # a corrector that outputs 0 leaves the quantized path unchanged
    zero = lambda feats, layer: torch.zeros(feats.shape[:-1])  # noqa: E731
    keys = [p.key for p in m.points]
    assert mean_ce(m, X, Y, lambda: ElementCorrectedTap(4, scales, keys, zero, Q2.features)) == pytest.approx(ok, abs=1e-6)
    # the legacy residual is a different path
    assert mean_ce(m, X, Y, lambda: QuantTap(4, scales, legacy_residual=True)) != pytest.approx(ok, abs=1e-4)


def test_collect_traces_shapes_subsampling_and_identities(model_and_scales):
    m, X, scales = model_and_scales
    keys = [p.key for p in m.points]
    tr = collect_traces(m, X, keys, 4, scales, max_rows=50, rng=np.random.default_rng(0), batch=4)
    assert len(tr) == len(keys) == 4
    for t in tr:
        for name in ("z_float", "z_quant", "z_pre", "round_err", "sat_err", "true_error", "quant_residual"):
            assert t[name].shape == (50, 16), name
        assert np.allclose(t["true_error"], t["z_float"] - t["z_quant"])
        assert np.allclose(t["quant_residual"], t["round_err"] + t["sat_err"], atol=1e-6)
    # before the first quantization both paths agree: at point 0, z_pre == z_float (same rows)
    assert np.allclose(tr[0]["z_pre"], tr[0]["z_float"], atol=1e-6)
    # fewer rows than the cap: every row, in order
    full = collect_traces(m, X[:1], keys, 4, scales, max_rows=10_000, rng=np.random.default_rng(0))
    assert full[0]["z_float"].shape == (24, 16)
    geo = report_geometry(m, X, keys, 4, scales)
    assert geo[0]["amplification"] == 1.0 and geo[0]["relu_flip_rate"] == 0.0
    assert all(0.0 <= g["correctability_score"] <= 1.0 for g in geo)


def test_tiny_trial_end_to_end():
    ctx = LocalContext(seed=7)
    row = Geometry().run(Geometry.Params.model_validate(TINY), ctx)
    P = 4
    q1 = ctx.artifacts["q1_points"]
    assert len(q1) == P and [p["point"] for p in q1] == ["0_attn", "0_ffn", "1_attn", "1_ffn"]
    for p in q1:
        for k in ("base_mse", "R_lin_float", "R_lin_q4", "R_lin_q4_residual", "correctability_score",
                  "linear_fraction", "relu_flip_rate", "sat_rate", "anisotropy_ratio", "amplification",
                  "dead_rate", "entropy_proxy", "effective_rank", "volume_proxy"):
            assert math.isfinite(p[k]), k
    q2 = ctx.artifacts["q2_variants"]
    assert [v["variant"] for v in q2] == list(Q2.VARIANTS)
    assert row["n_points"] == P
    assert row["q1_verdict"] in ("supported", "refuted", "unclear")
    assert row["q2_verdict"] in ("supported", "refuted", "unclear")
    assert row["loss_quant"] == row["loss_quant_correct"] and row["q2_baseline"] == "correct"
    assert row["loss_gain_features_only"] == pytest.approx(row["loss_quant_correct"] - row["loss_corrected_features_only"])
    assert row["loss_gain_legacy_features_only"] == pytest.approx(row["loss_quant_legacy"] - row["loss_corrected_features_only"])
    assert row["data_source"].startswith("standin")
    assert row["q2_best_mse_variant"] in Q2.VARIANTS
    assert row["r_lin_q4_early_n"] + row["r_lin_q4_mid_n"] + row["r_lin_q4_late_n"] == P

    # the legacy switch only changes which baseline feeds loss_quant / loss_gain / q2_verdict; the
    # backbone comes from the stage cache and everything else is identical
    legacy = Geometry().run(Geometry.Params.model_validate({**TINY, "legacy_prenorm_residual_bug": True}), ctx)
    assert legacy["loss_quant"] == legacy["loss_quant_legacy"] == row["loss_quant_legacy"]
    assert legacy["q2_baseline"] == "legacy" and legacy["q2_verdict"] == row["q2_verdict_legacy"]
    assert legacy["loss_float"] == row["loss_float"] and legacy["r_lin_q4_median"] == row["r_lin_q4_median"]
    assert legacy["loss_corrected_features_only"] == pytest.approx(row["loss_corrected_features_only"])


def test_trial_resumes_from_its_checkpoint():
    ctx = LocalContext(seed=7)
    cfg = {**TINY, "stage_cache": False}
    first = Geometry().run(Geometry.Params.model_validate(cfg), ctx)
    ck = ctx.load_checkpoint()
    assert set(ck) >= {"float", "q1", "q2"}
    again = Geometry().run(Geometry.Params.model_validate(cfg), ctx)  # everything from the checkpoint
    for k in ("loss_float", "r_lin_q4_median", "q2_features_only_test_mse", "loss_gain_features_only"):
        assert again[k] == first[k], k
