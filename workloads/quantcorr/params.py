"""Parameters and metrics of the three quantcorr workloads (one per task).

Kept free of torch so the orchestrator can validate every trial config before any trial starts.
The task modules read their per-protocol defaults from here, so a parameter whose default depends
on ``protocol`` is declared as ``None`` ("the protocol's value") and resolved in one place
(``with_protocol_defaults``).
"""
from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import Field, model_validator

from orchestrator import Metrics, Params, knob, metric, param

# Per-protocol defaults: a config value overrides them, None (or an absent key) keeps them.
AUTOENCODER_PROTOCOL_DEFAULTS = {
    "hydra": dict(float_epochs=15, float_lr=1e-3, correction_epochs=15, correction_lr=1e-3),
    "lambda": dict(float_epochs=30, float_lr=1e-3, correction_steps=300, correction_lr=1e-4,
                   correction_images=1024),
}
TRANSFORMER_PROTOCOL_DEFAULTS = {
    "hydra": dict(float_epochs=10, float_lr=3e-4, float_optimizer="adamw", correction_epochs=5,
                  correction_lr=1e-3, max_seq_len=256),
    "grid": dict(float_epochs=10, float_lr=3e-4, float_optimizer="adamw", correction_epochs=5,
                 correction_lr=3e-4, max_seq_len=128),
    "lambda": dict(float_epochs=10, float_lr=3e-4, float_optimizer="adam", correction_steps=300,
                   correction_lr=1e-4, max_seq_len=128, correction_sequences=256),
}


def with_protocol_defaults(defaults: dict, cfg: dict) -> dict:
    """The config with every parameter left None ("the protocol's value") taken from ``defaults``."""
    return {**cfg, **{k: v for k, v in defaults.items() if cfg.get(k) is None}}


# Vectorised trials (transformer_group.py): what may differ between the members of a group.
TRANSFORMER_FOLDED = {"hydra": ("seed",), "grid": ("seed",), "lambda": ("seed", "lam")}


def transformer_group_key(cfg: dict) -> str:
    """Equal for transformer trials that can run as one batched computation (same shapes, same
    everything but the protocol's folded values): the resolved config without those values."""
    p = with_protocol_defaults(TRANSFORMER_PROTOCOL_DEFAULTS[cfg["protocol"]], cfg)
    folded = TRANSFORMER_FOLDED[p["protocol"]]
    return "quantcorr.transformer/" + json.dumps({k: v for k, v in sorted(p.items()) if k not in folded},
                                                 sort_keys=True, default=str)


def by_protocol(defaults: dict[str, dict], key: str, otherwise: str = "not used") -> str:
    """'hydra 15, lambda 30': the per-protocol defaults of ``key``, for a parameter's doc."""
    return ", ".join(f"{p} {d[key]!r}" if key in d else f"{p} {otherwise}" for p, d in defaults.items())


# -------------------------------------------------------------------------------- parameters
class QuantCorrParams(Params):
    """What every task shares: quantization, correctors, the training protocol, the recovery metric."""

    seed: int | None = param(None, "run seed (data, backbone, correctors, batch order); None: derived from the trial id")
    bits: int = param(4, "activation bit width (signed, symmetric, per-tensor fake quantization)", ge=2, le=16)
    correct_every: int = param(1, "a corrector at every N-th quantization point ((j+1) % N == 0); more than the points: none (baseline)", ge=1)
    correction_hidden: int = param(0, "corrector hidden width: 0 = one affine map d->d, h > 0 = d->h, ReLU, h->d", ge=0)
    correction_init: Literal["default", "zero"] = param("default", "corrector init: PyTorch default, or zero last layer (starts as a no-op)")
    protocol: Literal["hydra", "lambda"] = param(
        "hydra", "hydra: correctors distilled on the float output; lambda: hybrid output/per-point loss, then corrector QAT")
    lam: float = param(0.0, "lambda protocol: weight of the per-point term of the hybrid loss (0: output term only)", ge=0)
    legacy_h0_unquantized: bool = param(False, "lambda protocol: seed 000's bug, linear (h=0) correctors never quantized")
    guard: Literal["hydra", "lambda"] = param("hydra", "recovery guard: hydra = 0 when the gap <= 0; lambda = 0 only when the gap is exactly 0")
    reliable_gap_rel: float = param(0.005, "recovery_reliable iff the gap is at least this share of |f|", ge=0)
    stage_cache: bool = knob(True, "share float backbones between trials through the stage cache (same results either way)")


class LoadedDataParams(QuantCorrParams):
    """The tasks whose data is a real dataset with an offline stand-in (MNIST, tinyshakespeare)."""

    data: Literal["auto", "real", "standin"] = param("auto", "auto: the real dataset if found or downloadable, else the stand-in")
    # Execution only, like a data directory: `data: auto` already resolves to whatever is reachable,
    # and the row's data_source says which dataset a trial used.
    download: bool = knob(True, "try to download the real dataset when it is not on disk (auto and real)")


class ClassificationParams(QuantCorrParams):
    width: int = param(64, "hidden width of the MLP classifier", ge=1)
    depth: int = param(6, "hidden layers (one quantization point after each ReLU)", ge=1)
    n_samples: int = param(2000, "spiral points, split 80/20 into train and test", ge=10)
    noise: float = param(0.3, "spiral noise: N(0, (0.1 noise)^2) per 2-D coordinate", ge=0)
    turns: float = param(3.0, "turns of each spiral arm", gt=0)
    input_dim: int = param(100, "dimension D of the random affine embedding of the 2-D points", ge=1)
    float_steps: int = param(1000, "full-batch Adam steps of float training (CE)", ge=0)
    float_lr: float = param(1e-3, "float training learning rate", gt=0)
    correction_steps: int = param(600, "full-batch corrector steps (lambda: S, the first S//4 of them warm-up)", ge=1)
    correction_lr: float = param(1e-4, "corrector Adam learning rate", gt=0)


class AutoencoderParams(LoadedDataParams):
    hidden: list[Annotated[int, Field(ge=1)]] = param([256, 128], "encoder hidden sizes; the decoder mirrors them")
    latent: int = param(32, "latent size (quantized, never corrected)", ge=1)
    batch_size: int = param(256, "batch size of float training, calibration (hydra) and corrector epochs", ge=1)
    max_train_images: int = param(0, "train on the first N training images only (0: all)", ge=0)
    test_images: int = param(256, "evaluate on the first N test images", ge=1)
    float_epochs: int | None = param(
        None, f"float training epochs (Adam, MSE); None: {by_protocol(AUTOENCODER_PROTOCOL_DEFAULTS, 'float_epochs')}", ge=0)
    float_lr: float = param(AUTOENCODER_PROTOCOL_DEFAULTS["hydra"]["float_lr"], "float training learning rate", gt=0)
    correction_lr: float | None = param(
        None, f"corrector Adam learning rate; None: {by_protocol(AUTOENCODER_PROTOCOL_DEFAULTS, 'correction_lr')}", gt=0)
    correction_epochs: int = param(AUTOENCODER_PROTOCOL_DEFAULTS["hydra"]["correction_epochs"],
                                   "hydra protocol: corrector epochs", ge=1)
    correction_steps: int = param(AUTOENCODER_PROTOCOL_DEFAULTS["lambda"]["correction_steps"],
                                  "lambda protocol: full-batch corrector steps S", ge=1)
    correction_images: int = param(AUTOENCODER_PROTOCOL_DEFAULTS["lambda"]["correction_images"],
                                   "lambda protocol: shuffled train images for calibration, teacher and correctors", ge=1)


class TransformerParams(LoadedDataParams):
    protocol: Literal["hydra", "grid", "lambda"] = param(
        "hydra", "hydra: correctors distilled on the float logits; grid: CE on the labels (seed 001); "
                 "lambda: hybrid loss, then corrector QAT")
    d_model: int = param(64, "residual stream width", ge=1)
    n_heads: int = param(4, "attention heads (must divide d_model)", ge=1)
    n_layers: int = param(2, "blocks (two quantization points each: after the attention and the FFN add)", ge=1)
    d_ff: int = param(256, "FFN hidden width", ge=1)
    seq_len: int = param(128, "characters per training sequence", ge=1)
    max_seq_len: int | None = param(
        None, f"positional embedding length; None: {by_protocol(TRANSFORMER_PROTOCOL_DEFAULTS, 'max_seq_len')}", ge=1)
    dropout: float = param(0.1, "dropout on embeddings, attention weights and FFN output", ge=0, lt=1)
    batch_size: int = param(64, "batch size of float training and corrector epochs (full batches only)", ge=1)
    max_chars: int = param(0, "use only the first N characters of the text (0: all)", ge=0)
    eval_sequences: int = param(0, "evaluate on the first N test sequences (0: the whole test split)", ge=0)
    float_epochs: int = param(TRANSFORMER_PROTOCOL_DEFAULTS["hydra"]["float_epochs"], "float training epochs (CE)", ge=0)
    float_lr: float = param(TRANSFORMER_PROTOCOL_DEFAULTS["hydra"]["float_lr"], "float training learning rate", gt=0)
    float_optimizer: Literal["adam", "adamw"] | None = param(
        None, f"float training optimizer; None: {by_protocol(TRANSFORMER_PROTOCOL_DEFAULTS, 'float_optimizer')}")
    weight_decay: float = param(0.01, "AdamW weight decay", ge=0)
    grad_clip: float = param(1.0, "gradient norm clip of float training", gt=0)
    calib_sequences: int = param(64, "calibrate on the first N sequences of the last-permuted train set", ge=1)
    legacy_prenorm_residual_bug: bool = param(False, "quantized-only baseline with the seed's prenorm residual bug (both are in every row)")
    correction_lr: float | None = param(
        None, f"corrector Adam learning rate; None: {by_protocol(TRANSFORMER_PROTOCOL_DEFAULTS, 'correction_lr')}", gt=0)
    correction_epochs: int = param(TRANSFORMER_PROTOCOL_DEFAULTS["hydra"]["correction_epochs"],
                                   "hydra and grid protocols: corrector epochs", ge=1)
    correction_batch_size: int | None = param(None, "hydra and grid protocols: corrector batch size; None: batch_size", ge=1)
    correction_sequences: int | None = param(
        None, "train correctors on the first N sequences of the last float order; None: "
              f"{by_protocol(TRANSFORMER_PROTOCOL_DEFAULTS, 'correction_sequences', otherwise='all')}", ge=0)
    correction_steps: int = param(TRANSFORMER_PROTOCOL_DEFAULTS["lambda"]["correction_steps"],
                                  "lambda protocol: full-batch corrector steps S", ge=1)

    @model_validator(mode="after")
    def _shapes_fit(self) -> "TransformerParams":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model: not divisible by n_heads = {self.n_heads} (got {self.d_model})")
        max_seq_len = self.max_seq_len or TRANSFORMER_PROTOCOL_DEFAULTS[self.protocol]["max_seq_len"]
        if self.seq_len > max_seq_len:
            raise ValueError(f"seq_len: longer than max_seq_len = {max_seq_len} (got {self.seq_len})")
        return self


# -------------------------------------------------------------------------------- metrics
class QuantCorrMetrics(Metrics):
    """Columns every task's row has (docs/studies/quantization-correction.md, 'Metrics'): f, q, c
    are the task's float, quantized and corrected values of its own metric (accuracy,
    reconstruction MSE or mean CE)."""

    f: float | None = metric("float model's metric")
    q: float | None = metric("quantized model's metric (no correction)")
    c: float | None = metric("corrected model's metric (= q when there is no corrector)")
    gap: float | None = metric("how much quantization hurt, positive when q is worse than f")
    gap_abs: float | None = metric("|q - f|")
    recovery_pct: float | None = metric("share of the gap the correctors close, in percent (guard applied; 0 without correctors)")
    recovery_reliable: bool | None = metric("the gap is at least reliable_gap_rel of |f|, so recovery_pct is not noise")
    num_correction_layers: int | None = metric("correctors placed")
    num_quant_points: int | None = metric("quantization points of the model")
    correction_final_loss: float | None = metric("last corrector training loss (NaN without correctors)")
    data_source: str | None = metric("the data the trial used (spirals, MNIST or its stand-in, tinyshakespeare or its stand-in)")
    float_phase_s: float | None = metric("wall seconds until the float backbone was ready (trained or loaded; a vectorised group's divided by its size)")
    float_phase_cpu_s: float | None = metric("CPU seconds of the same phase")
    total_s: float | None = metric("wall seconds of the whole trial (a vectorised group's divided by its size)")
    total_cpu_s: float | None = metric("CPU seconds of the whole trial")
    diverged_step: int | None = metric("step at which a training loss became non-finite (diverged trials)")


class ClassificationMetrics(QuantCorrMetrics):
    acc_float: float | None = metric("test accuracy of the float model")
    acc_quant: float | None = metric("test accuracy, quantized")
    acc_corrected: float | None = metric("test accuracy, quantized and corrected")
    acc_oracle: float | None = metric("test accuracy with the float activation substituted at the corrector points (upper bound)")


class AutoencoderMetrics(QuantCorrMetrics):
    mse_float: float | None = metric("test reconstruction MSE of the float model")
    mse_quant: float | None = metric("test reconstruction MSE, quantized")
    mse_corrected: float | None = metric("test reconstruction MSE, quantized and corrected")
    image_dim: int | None = metric("pixels per image (784 MNIST, 64 stand-in)")
    n_train_images: int | None = metric("training images used")
    n_test_images: int | None = metric("test images evaluated")


class TransformerMetrics(QuantCorrMetrics):
    loss_float: float | None = metric("test mean CE (nats) of the float model")
    loss_quant: float | None = metric("test mean CE, quantized (legacy residual if legacy_prenorm_residual_bug)")
    loss_corrected: float | None = metric("test mean CE, quantized and corrected")
    ppl_float: float | None = metric("exp(loss_float)")
    ppl_quant: float | None = metric("exp(loss_quant)")
    ppl_corrected: float | None = metric("exp(loss_corrected)")
    quant_degradation_pct: float | None = metric("100 (loss_quant - loss_float) / loss_float")
    corrected_degradation_pct: float | None = metric("100 (loss_corrected - loss_float) / loss_float")
    loss_quant_correct_residual: float | None = metric("quantized-only test CE with the correct residual")
    loss_quant_legacy_residual: float | None = metric("quantized-only test CE with the seed's prenorm residual bug")
    vocab_size: int | None = metric("characters in the vocabulary")
    n_train_sequences: int | None = metric("training sequences")
    n_test_sequences: int | None = metric("test sequences evaluated")
