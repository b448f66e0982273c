"""What a geometry trial takes in (``GeometryParams``), the columns of its row (``GeometryMetrics``)
and of its two per-trial tables (``Q1PointRow`` for ``q1_points``, ``Q2VariantRow`` for
``q2_variants``). Defaults are the seed-002 settings of docs/studies/geometry.md; the architecture
defaults to the study's first setting (d_model 64, 2 layers)."""
from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from orchestrator import Metrics, Params, knob, metric, param

from .q1 import RIDGE_LAMBDA


class GeometryParams(Params):
    seed: int | None = param(None, "torch/numpy seed of the setting; unset: the trial's derived seed", ge=0,
                             lt=2 ** 32)
    # backbone: pre-LN char transformer (docs/studies/geometry.md, 'Backbone')
    d_model: int = param(64, "residual stream width", ge=1)
    n_layers: int = param(2, "transformer blocks; 2 quantization points each", ge=1)
    n_heads: int = param(4, "attention heads; must divide d_model", ge=1)
    d_ff_mult: int = param(4, "FFN width as a multiple of d_model (when d_ff is unset)", ge=1)
    d_ff: int | None = param(None, "FFN width; unset: d_ff_mult x d_model", ge=1)
    dropout: float = param(0.1, "dropout on embeddings, attention weights and FFN output", ge=0, lt=1)
    seq_len: int = param(128, "tokens per sequence (chunks of seq_len + 1 characters)", ge=1)
    max_seq_len: int = param(256, "positional embedding length; at least seq_len", ge=1)
    bits: Literal[2, 4, 8] = param(4, "activation bit width at every quantization point")
    # data ('Backbone')
    data: Literal["auto", "real", "standin"] = param(
        "auto", "auto: tinyshakespeare if found or downloadable, else the stand-in; real: tinyshakespeare or fail")
    download: bool = knob(True, "try to download tinyshakespeare when it is not under the data root")
    max_chars: int = param(0, "use only the first max_chars characters of the text; 0: all", ge=0)
    train_limit: int = param(20000, "first N train sequences; 0: the whole split", ge=0)
    test_limit: int = param(4000, "first N test sequences; 0: the whole split", ge=0)
    # float training (AdamW, clipped)
    float_epochs: int = param(4, "backbone training epochs (0: untrained backbone)", ge=0)
    float_lr: float = param(3e-4, "AdamW learning rate of the backbone", gt=0)
    weight_decay: float = param(0.01, "AdamW weight decay of the backbone", ge=0)
    batch_size: int = param(64, "backbone training batch (sequences)", ge=1)
    grad_clip: float = param(1.0, "gradient-norm clip of the backbone", gt=0)
    # quantization and traces ('Quantization', 'Traces')
    calib_sequences: int = param(64, "first N train sequences for the per-tensor absmax scales", ge=1)
    trace_train_sequences: int = param(512, "first N train sequences traced (ridge fit, Q2 elements)", ge=1)
    trace_test_sequences: int = param(256, "first N test sequences traced (ridge evaluation)", ge=1)
    trace_max_rows: int = param(20000, "token rows kept per point and trace set (random subsample)", ge=1)
    report_sequences: int = param(64, "first N test sequences for the correctability components", ge=1)
    # Q1 ('Q1: linear recoverability')
    ridge_lambda: float = param(RIDGE_LAMBDA, "ridge penalty on W (the bias is not penalised)", ge=0)
    # Q2 ('Q2: element-wise corrector')
    q2_elements: int = param(600000, "element dataset size; q2_elements // P elements per point", ge=1)
    q2_hidden: int = param(64, "hidden width of the element corrector MLP", ge=1)
    q2_embed_dim: int = param(8, "width of the point-index embedding", ge=1)
    q2_epochs: int = param(20, "corrector training epochs (best validation state kept)", ge=1)
    q2_batch: int = param(4096, "corrector training batch (elements)", ge=1)
    q2_lr: float = param(1e-3, "corrector Adam learning rate", gt=0)
    q2_test_frac: float = param(0.2, "share of the elements held out for test", gt=0, lt=1)
    q2_val_frac: float = param(0.2, "share of the non-test elements used for validation", gt=0, lt=1)
    legacy_prenorm_residual_bug: bool = param(
        False, "loss_quant, loss_gain and q2_verdict against the seed's buggy quantized baseline")
    stage_cache: bool = knob(True, "share trained backbones between trials through the stage cache")

    @model_validator(mode="after")
    def _consistent(self) -> "GeometryParams":
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: must divide d_model={self.d_model} (got {self.n_heads})")
        if self.seq_len > self.max_seq_len:
            raise ValueError(f"seq_len: must be at most max_seq_len={self.max_seq_len} (got {self.seq_len})")
        return self


_VERDICT = "supported | refuted | unclear"


class GeometryMetrics(Metrics):
    # ---- Q1: per-setting statistics over the P points -------------------------------------
    n_points: int | None = metric("quantization points P = 2 n_layers")
    r_lin_float_mean: float | None = metric("mean R_lin_float (float ridge map)")
    r_lin_float_median: float | None = metric("median R_lin_float")
    r_lin_float_pos_frac: float | None = metric("share of points with R_lin_float > 0")
    r_lin_float_share_gt_0_2: float | None = metric("share of points with R_lin_float > 0.2")
    r_lin_q4_mean: float | None = metric("mean R_lin_q4 (W and b fake-quantized to 4 bits)")
    r_lin_q4_median: float | None = metric("median R_lin_q4: the study metric")
    r_lin_q4_pos_frac: float | None = metric("share of points with R_lin_q4 > 0")
    r_lin_q4_share_gt_0_2: float | None = metric("share of points with R_lin_q4 > 0.2")
    r_lin_q4_residual_mean: float | None = metric("mean R_lin_q4 of the control (W - I and b quantized)")
    r_lin_q4_residual_median: float | None = metric("median R_lin_q4 of the residual-map control")
    r_lin_q4_residual_pos_frac: float | None = metric("share of points with residual-map R_lin_q4 > 0")
    r_lin_q4_residual_share_gt_0_2: float | None = metric("share of points with residual-map R_lin_q4 > 0.2")
    spearman_score_q4: float | None = metric("Spearman(correctability_score, R_lin_q4) over the points")
    spearman_score_float: float | None = metric("Spearman(correctability_score, R_lin_float)")
    spearman_score_q4_residual: float | None = metric("Spearman(correctability_score, residual-map R_lin_q4)")
    correctability_score_mean: float | None = metric("mean correctability score over the points")
    q1_verdict: str | None = metric(f"Q1 verdict ({_VERDICT})")
    q1_verdict_residual_map: str | None = metric(f"Q1 verdict with the residual-map control ({_VERDICT})")
    # depth tertiles of k / (P - 1) and sub-layers: R_lin_q4 mean / median / share > 0 / points
    r_lin_q4_early_mean: float | None = metric("mean R_lin_q4 over the early-depth points")
    r_lin_q4_early_median: float | None = metric("median R_lin_q4 over the early-depth points")
    r_lin_q4_early_pos_frac: float | None = metric("share of early-depth points with R_lin_q4 > 0")
    r_lin_q4_early_n: int | None = metric("early-depth points")
    r_lin_q4_mid_mean: float | None = metric("mean R_lin_q4 over the mid-depth points")
    r_lin_q4_mid_median: float | None = metric("median R_lin_q4 over the mid-depth points")
    r_lin_q4_mid_pos_frac: float | None = metric("share of mid-depth points with R_lin_q4 > 0")
    r_lin_q4_mid_n: int | None = metric("mid-depth points")
    r_lin_q4_late_mean: float | None = metric("mean R_lin_q4 over the late-depth points")
    r_lin_q4_late_median: float | None = metric("median R_lin_q4 over the late-depth points")
    r_lin_q4_late_pos_frac: float | None = metric("share of late-depth points with R_lin_q4 > 0")
    r_lin_q4_late_n: int | None = metric("late-depth points")
    r_lin_q4_attn_mean: float | None = metric("mean R_lin_q4 over the attention points")
    r_lin_q4_attn_median: float | None = metric("median R_lin_q4 over the attention points")
    r_lin_q4_attn_pos_frac: float | None = metric("share of attention points with R_lin_q4 > 0")
    r_lin_q4_attn_n: int | None = metric("attention points")
    r_lin_q4_ffn_mean: float | None = metric("mean R_lin_q4 over the FFN points")
    r_lin_q4_ffn_median: float | None = metric("median R_lin_q4 over the FFN points")
    r_lin_q4_ffn_pos_frac: float | None = metric("share of FFN points with R_lin_q4 > 0")
    r_lin_q4_ffn_n: int | None = metric("FFN points")
    # ---- Q2: per variant --------------------------------------------------------------------
    q2_embedding_only_test_mse: float | None = metric("held-out MSE of the embedding_only corrector")
    q2_embedding_only_val_mse: float | None = metric("validation MSE of the embedding_only corrector")
    loss_corrected_embedding_only: float | None = metric("test loss (nats) with embedding_only at every point")
    loss_gain_embedding_only: float | None = metric("loss_quant - loss_corrected_embedding_only (selected baseline)")
    loss_gain_correct_embedding_only: float | None = metric("embedding_only loss gain against the correct baseline")
    loss_gain_legacy_embedding_only: float | None = metric("embedding_only loss gain against the legacy baseline")
    q2_features_only_test_mse: float | None = metric("held-out MSE of the features_only corrector")
    q2_features_only_val_mse: float | None = metric("validation MSE of the features_only corrector")
    loss_corrected_features_only: float | None = metric("test loss (nats) with features_only at every point")
    loss_gain_features_only: float | None = metric("loss_quant - loss_corrected_features_only (selected baseline)")
    loss_gain_correct_features_only: float | None = metric("features_only loss gain against the correct baseline")
    loss_gain_legacy_features_only: float | None = metric("features_only loss gain against the legacy baseline")
    q2_features_plus_embedding_test_mse: float | None = metric("held-out MSE of the features_plus_embedding corrector")
    q2_features_plus_embedding_val_mse: float | None = metric("validation MSE of the features_plus_embedding corrector")
    loss_corrected_features_plus_embedding: float | None = metric(
        "test loss (nats) with features_plus_embedding at every point")
    loss_gain_features_plus_embedding: float | None = metric(
        "loss_quant - loss_corrected_features_plus_embedding (selected baseline)")
    loss_gain_correct_features_plus_embedding: float | None = metric(
        "features_plus_embedding loss gain against the correct baseline")
    loss_gain_legacy_features_plus_embedding: float | None = metric(
        "features_plus_embedding loss gain against the legacy baseline")
    # ---- Q2: across variants ----------------------------------------------------------------
    q2_zero_test_mse: float | None = metric("held-out MSE of predicting no correction (mean squared true error)")
    q2_mse_gain: float | None = metric("(mse embedding_only - mse features_only) / mse embedding_only")
    q2_mse_gain_plus: float | None = metric("the same gain for features_plus_embedding")
    q2_best_mse_variant: str | None = metric("variant with the lowest held-out MSE")
    q2_best_loss_gain_correct: float | None = metric("best feature-variant loss gain, correct baseline")
    q2_best_loss_gain_legacy: float | None = metric("best feature-variant loss gain, legacy baseline")
    q2_verdict_correct: str | None = metric(f"Q2 verdict against the correct baseline ({_VERDICT})")
    q2_verdict_legacy: str | None = metric(f"Q2 verdict against the legacy baseline ({_VERDICT})")
    q2_baseline: str | None = metric("baseline behind loss_quant / loss_gain / q2_verdict: correct | legacy")
    q2_verdict: str | None = metric(f"Q2 verdict against the selected baseline ({_VERDICT})")
    q2_best_loss_gain: float | None = metric("best feature-variant loss gain, selected baseline")
    # ---- losses -----------------------------------------------------------------------------
    loss_float: float | None = metric("test loss (nats) of the float model")
    loss_quant: float | None = metric("test loss of the quantized-only model, selected baseline")
    loss_quant_correct: float | None = metric("test loss of the quantized-only model, correct residual")
    loss_quant_legacy: float | None = metric("test loss of the quantized-only model, legacy residual bug")
    ppl_float: float | None = metric("exp(loss_float)")
    ppl_quant: float | None = metric("exp(loss_quant)")
    ppl_quant_correct: float | None = metric("exp(loss_quant_correct)")
    ppl_quant_legacy: float | None = metric("exp(loss_quant_legacy)")
    quant_gap: float | None = metric("loss_quant_correct - loss_float")
    quant_gap_legacy: float | None = metric("loss_quant_legacy - loss_float")
    # ---- bookkeeping ------------------------------------------------------------------------
    arch: str | None = metric("(d_model,n_layers)")
    data_source: str | None = metric("tinyshakespeare or standin:corpus")
    vocab_size: int | None = metric("characters in the vocabulary")
    n_train_sequences: int | None = metric("train sequences used")
    n_test_sequences: int | None = metric("test sequences used")
    float_phase_s: float | None = metric("seconds to train or load the backbone")
    q1_phase_s: float | None = metric("seconds of calibration, evaluation and Q1")
    q2_phase_s: float | None = metric("seconds of Q2")
    total_s: float | None = metric("seconds of the whole trial")
    diverged_step: int | None = metric("backbone epoch with a non-finite loss (diverged trials only)")


class Q1PointRow(Metrics):
    """One quantization point of a setting (artifact ``q1_points``)."""

    point_index: int | None = metric("k = 0..P-1 in forward order")
    layer_index: int | None = metric("the same as point_index (the seed's column name)")
    block: int | None = metric("transformer block of the point")
    sub_layer: str | None = metric("attn | ffn")
    point: str | None = metric("point key <block>_<sub_layer>")
    relative_depth: float | None = metric("k / (P - 1)")
    depth_bucket: str | None = metric("early | mid | late (tertiles of relative_depth)")
    scale: float | None = metric("per-tensor quantization scale")
    n_train_rows: int | None = metric("train token rows the ridge map was fit on")
    n_test_rows: int | None = metric("test token rows it was scored on")
    base_mse: float | None = metric("mean((z_quant - z_float)^2) on the test rows")
    lin_float_mse: float | None = metric("MSE after the float ridge map")
    lin_q4_mse: float | None = metric("MSE after the 4-bit ridge map (W and b quantized)")
    lin_q4_residual_mse: float | None = metric("MSE after the residual-map control (W - I and b quantized)")
    R_lin_float: float | None = metric("1 - lin_float_mse / base_mse")
    R_lin_q4: float | None = metric("1 - lin_q4_mse / base_mse")
    R_lin_q4_residual: float | None = metric("1 - lin_q4_residual_mse / base_mse")
    map_identity_dev: float | None = metric("|W - I| / |I| (Frobenius)")
    linear_error_norm: float | None = metric("mean row norm of the rounding error (report batch)")
    nonlinear_error_norm: float | None = metric("mean row norm of the saturation error")
    total_error_norm: float | None = metric("mean row norm of rounding + saturation error")
    linear_fraction: float | None = metric("linear / (linear + nonlinear) error norm")
    relu_flip_rate: float | None = metric("share of elements whose sign differs between z_float and z_pre")
    dead_rate: float | None = metric("share of elements <= 0 in both z_float and z_pre")
    sat_rate: float | None = metric("share of saturated elements")
    amplification: float | None = metric("total error norm / accumulated error norm after the previous point")
    anisotropy_ratio: float | None = metric("max / min eigenvalue of the error covariance")
    entropy_proxy: float | None = metric("Gaussian differential entropy of the error covariance (bits)")
    effective_rank: float | None = metric("exp of the spectral entropy of the error covariance")
    log_det_cov: float | None = metric("log det of the error covariance")
    volume_proxy: float | None = metric("sqrt(det) of the error covariance (clipped exponent)")
    correctability_score: float | None = metric("the hand-made correctability score in [0, 1]")


class Q2VariantRow(Metrics):
    """One element-corrector variant of a setting (artifact ``q2_variants``)."""

    variant: str | None = metric("embedding_only | features_only | features_plus_embedding")
    train_mse: float | None = metric("MSE on the train elements (best validation state)")
    val_mse: float | None = metric("MSE on the validation elements")
    test_mse: float | None = metric("MSE on the held-out elements")
    best_epoch: int | None = metric("epoch of the best validation MSE (0: the initial state)")
    zero_test_mse: float | None = metric("held-out MSE of predicting no correction")
    n_train: int | None = metric("train elements")
    n_val: int | None = metric("validation elements")
    n_test: int | None = metric("held-out elements")
    n_elements: int | None = metric("elements drawn over all points")
    loss_corrected: float | None = metric("test loss (nats) with the corrector at every point (inf if it blew up)")
    ppl_corrected: float | None = metric("exp(loss_corrected), capped at exp(50)")
    loss_gain_correct: float | None = metric("loss_quant_correct - loss_corrected")
    loss_gain_legacy: float | None = metric("loss_quant_legacy - loss_corrected")
    loss_gain: float | None = metric("loss gain against the selected baseline")
