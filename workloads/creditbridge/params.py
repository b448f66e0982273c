"""What a credit-bridge trial takes in and returns: its config keys (``Settings``: types,
defaults, ranges and checks), the metric columns of its row (``Results``) and the columns of its
per-layer table (``LayerRow``, artifact "layers"). Means "over hidden layers" are over h_1 .. h_L.

A trial config is flat. Keys not declared here are rejected (a typo must not silently fall back to
a default). Defaults are the seed's main-run settings (docs/studies/credit-bridge.md); the task-dependent
ones (width, sizes, schedule) default to None and are filled in for the task before the config is
used, so a row records the values the trial actually ran with.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from orchestrator import Metrics, Params, knob, metric, param, validate

# values of the task-dependent keys when a config leaves them out (or sets them to null)
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "synthetic": {"width": 128, "n_train": 20000, "n_test": 5000, "lr_schedule": "constant"},
    "cifar10": {"width": 512, "n_train": 0, "n_test": 0, "lr_schedule": "cosine"},
}
CIFAR_CLASSES = 10
# nudging steps with declared metric and per-layer columns (nudge_eta0p003, nudge_eta0p01): the
# store refuses artifact columns that are not declared, so other steps are refused up front
NUDGE_ETAS = (0.003, 0.01)


class Settings(Params):
    """One trial of the credit-bridge workload (seed 004)."""

    # --- what runs
    task: Literal["synthetic", "cifar10"] = param("synthetic", "synthetic teacher-student ladder or CIFAR-10")
    method: Literal["bp", "dfa", "fa", "sb", "cb"] = param(
        "cb", "credit assignment: backprop, direct/plain feedback alignment, state bridge, credit bridge")
    seed: int | None = param(None, "student seed (parameters, batch order, directions); None: the trial's seed")
    # --- network
    depth: int = param(4, "L, the number of hidden blocks", ge=1)
    width: int | None = param(None, "block width d; None: 128 (synthetic), 512 (cifar10)", ge=1)
    alpha: float = param(1.0, "synthetic nonlinearity phi_alpha(z) = (1-alpha) z + alpha tanh(z)", ge=0.0, le=1.0)
    # --- synthetic teacher-student data
    n_classes: int = param(10, "number of classes C (cifar10: must be 10)", ge=2)
    n_train: int | None = param(None, "training samples; None: 20000 (synthetic), 0 = every image (cifar10)", ge=0)
    n_test: int | None = param(None, "test samples; None: 5000 (synthetic), 0 = every image (cifar10)", ge=0)
    teacher_seed: int = param(0, "base seed of the synthetic teacher, mixed with (alpha, depth, width)", ge=0)
    # --- cifar10 data
    data: Literal["auto", "real", "standin"] = param(
        "auto", "cifar10 source: real files if found or downloadable else the stand-in (auto), or force one")
    standin_train: int = param(10000, "training images of the offline stand-in", ge=1)
    standin_test: int = param(2000, "test images of the offline stand-in", ge=1)
    # --- optimisation of the forward net
    epochs: int = param(80, "training epochs", ge=1)
    batch_size: int = param(128, "minibatch size", ge=1)
    lr: float = param(1e-3, "AdamW learning rate of the forward net", gt=0.0)
    weight_decay: float = param(0.01, "AdamW weight decay", ge=0.0)
    lr_schedule: Literal["constant", "cosine"] | None = param(
        None, "learning-rate schedule; None: constant (synthetic), cosine (cifar10)")
    credit_eps: float = param(1e-6, "a <- a / (RMS(a) + credit_eps), per sample", ge=0.0)
    # --- credit models (SB predictor, CB value net); our reconstruction: docs/studies/credit-bridge.md,
    #     'Design choices'
    cond: Literal["eT", "deltaL", "eT+proj", "deltaL+proj"] = param("eT", "conditioning code s of the credit model")
    tgw: float = param(1.0, "CB terminal gradient-matching weight", ge=0.0)
    gm_norm: Literal["batch", "unit"] = param(
        "batch", "gradient matching: error relative to the target's RMS (batch) or against a unit-RMS target")
    wr: float = param(0.2, "CB DFA warm-up: fraction of training steps on DFA credit", ge=0.0, le=1.0)
    sb_wr: float = param(0.0, "the same warm-up for SB (the seed names none)", ge=0.0, le=1.0)
    bridge_k: int = param(4, "K noisy next states in the bridge target", ge=1)
    bridge_sigma: float = param(0.05, "noise scale of the K next states", ge=0.0)
    softmin_tau: float = param(0.1, "temperature of the softmin over the K values", gt=0.0)
    ema_decay: float = param(0.99, "decay of the slow target copy of the value net", ge=0.0, le=1.0)
    vnet_hidden: int = param(256, "hidden units of the value net / predictor MLP", ge=1)
    vnet_layers: int = param(2, "hidden layers of the value net / predictor MLP", ge=0)
    vnet_lr: float = param(1e-3, "Adam learning rate of the value net / predictor", gt=0.0)
    time_dim: int = param(32, "size of the sinusoidal embedding of t_l = l / L", ge=0)
    proj_dim: int = param(32, "size of the fixed random projection of h_L in the '+proj' codes", ge=0)
    dfa_std: float | None = param(None, "std of DFA/FA feedback entries; None: 1/sqrt(C) (DFA), 1/sqrt(d) (FA)",
                                  gt=0.0)
    # --- metrics
    n_eval: int = param(1024, "held-out samples for Gamma, rho and nudging", ge=1)
    rho_directions: int = param(32, "M random directions per sample for rho", ge=1)
    rho_eps: float = param(1e-3, "perturbation size epsilon for rho", gt=0.0)
    nudge_etas: list[float] = param(
        list(NUDGE_ETAS), "nudging steps eta, one metric nudge_eta<eta> each, from 0.003 and 0.01 "
        "(a single number is a list of one)")
    rho_reference: bool = param(True, "also measure rho of the true gradient on the same net (rho_bp_ref)")
    grad_floor: float = param(
        1e-7, "true-gradient norm below which a sample's cosine and perturbation response say nothing: "
        "such samples are counted (grad_floor_share*) and left out of rho; 0 keeps every sample", ge=0.0)
    track_every: int = param(1, "epochs between test-accuracy/Gamma checks (256 samples) in the history; 0 = off",
                             ge=0)
    # execution only: a resumed trial continues exactly, so how often it saves changes no result
    checkpoint_every: int = knob(1, "epochs between checkpoints (and after the last epoch); 0 = never", ge=0)

    @model_validator(mode="before")
    @classmethod
    def _fill_task_defaults(cls, data: Any) -> Any:
        """Replace a missing or null task-dependent key by the task's value (an unknown task is left
        for the field check to report)."""
        if not isinstance(data, dict):
            return data
        task = data.get("task", "synthetic")
        defaults = TASK_DEFAULTS.get(task) if isinstance(task, str) else None
        if not defaults:
            return data
        return {**data, **{k: v for k, v in defaults.items() if data.get(k) is None}}

    @field_validator("nudge_etas", mode="before")
    @classmethod
    def _one_eta_is_a_list(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [value]
        return value

    @field_validator("nudge_etas")
    @classmethod
    def _declared_etas_only(cls, etas: list[float]) -> list[float]:
        if any(eta not in NUDGE_ETAS for eta in etas):
            raise ValueError(f"steps with declared columns are {', '.join(map(str, NUDGE_ETAS))}")
        return etas

    @model_validator(mode="after")
    def _task_rules(self) -> "Settings":
        if self.task == "cifar10" and self.n_classes != CIFAR_CLASSES:
            raise ValueError(f"n_classes: cifar10 has {CIFAR_CLASSES} classes (got {self.n_classes})")
        if self.task == "synthetic":
            for key in ("n_train", "n_test"):
                if getattr(self, key) < 1:
                    raise ValueError(f"{key}: the synthetic task needs at least one sample (got {getattr(self, key)})")
        return self


def resolve(config: dict[str, Any]) -> Settings:
    """Validated settings, task defaults filled in, from a flat trial config (for direct callers:
    a trial's ``run`` receives them validated). Raises ``orchestrator.ParamError`` (a ValueError)
    naming the first bad key."""
    return Settings.model_validate(validate(Settings, config))


def eta_name(eta: float) -> str:
    """Metric-name fragment for a nudging step: 0.003 -> 'eta0p003' (no dots in column names)."""
    return "eta" + f"{eta:g}".replace(".", "p").replace("-", "m")


# ------------------------------------------------------------------------- what a trial returns
class Results(Metrics):
    # credit quality on the held-out batch
    gamma: float | None = metric("Gamma: mean over hidden layers of cos(a_l, g_l)")
    rho: float | None = metric(
        "rho: mean over hidden layers of the perturbation correlation over the samples with ||g_l|| >= grad_floor")
    gamma_first: float | None = metric("Gamma at h_1")
    gamma_top: float | None = metric("Gamma at h_L")
    rho_first: float | None = metric("rho at h_1")
    rho_top: float | None = metric("rho at h_L")
    rho_all: float | None = metric(
        "rho over every evaluation sample, below the floor too (what rho meant before version 3)")
    rho_samples_min: int | None = metric("fewest samples any hidden layer's rho ran over (those above the floor)")
    rho_bp_ref: float | None = metric(
        "rho of the true gradient on the same net, directions and samples (rho_reference)")
    nudge_eta0p003: float | None = metric("loss change after a step of 0.003 against the normalised credit")
    nudge_eta0p01: float | None = metric("loss change after a step of 0.01 against the normalised credit")
    # gradient-norm diagnostic
    gnorm: float | None = metric("mean over hidden layers of the mean ||g_l||")
    gnorm_top: float | None = metric("mean ||g_L||")
    grad_floor_share: float | None = metric(
        "largest share over hidden layers of evaluation samples with ||g_l|| < grad_floor (1e-7)")
    grad_floor_share_mean: float | None = metric(
        "mean share over hidden layers of evaluation samples with ||g_l|| < grad_floor")
    grad_floor_share_top: float | None = metric("share of evaluation samples with ||g_L|| < grad_floor")
    n_eval_samples: int | None = metric("held-out samples the credit metrics ran on (the shares' denominator)")
    cos_undefined: int | None = metric("samples left out of Gamma (a zero vector), summed over hidden layers")
    # the trained network
    test_acc: float | None = metric("test accuracy at the end")
    test_loss: float | None = metric("test cross-entropy at the end")
    train_loss: float | None = metric("mean training loss of the last epoch (NaN if none ran here)")
    # the credit models' own losses, last epoch (NaN for methods without them)
    state_nmse: float | None = metric("SB predictor's normalised MSE")
    bridge_loss: float | None = metric("CB bridge-consistency loss")
    terminal_loss: float | None = metric("CB terminal-value loss")
    gradmatch_loss: float | None = metric("CB terminal gradient-matching loss")
    # data
    data_source: str | None = metric("where the data came from: synthetic:teacher, real:cifar10, standin:blobs")
    max_class_share: float | None = metric("largest class frequency in the training labels")
    # progress and cost
    epochs_done: int | None = metric("epochs trained")
    steps_done: int | None = metric("optimiser steps taken")
    resumed_from_epoch: int | None = metric("epoch the last execution resumed from (0: a fresh start)")
    diverged_epoch: int | None = metric("epoch whose training loss was not finite (diverged trials only)")
    step_ms: float | None = metric("milliseconds per training step in the last execution")
    train_s: float | None = metric("seconds of training in the last execution")
    eval_s: float | None = metric("seconds of the final evaluation")


class LayerRow(Metrics):
    """One row per credited layer l (0 .. L; 0 only where the input layer takes credit)."""

    layer: int | None = metric("l, the state h_l")
    t: float | None = metric("depth fraction l / L")
    in_mean: bool | None = metric("whether the layer is a hidden block output (in the row's means)")
    gamma: float | None = metric("mean cos(a_l, g_l) over samples with a defined cosine")
    cos_undefined: int | None = metric("samples with an undefined cosine")
    rho: float | None = metric("perturbation correlation over the samples with ||g_l|| >= grad_floor")
    rho_all: float | None = metric("perturbation correlation over every sample")
    rho_samples: int | None = metric("samples rho ran over (||g_l|| >= grad_floor)")
    rho_bp_ref: float | None = metric("rho of the true gradient on the same samples (rho_reference)")
    gnorm_mean: float | None = metric("mean ||g_l||")
    gnorm_min: float | None = metric("smallest ||g_l||")
    grad_floor_share: float | None = metric("share of samples with ||g_l|| < grad_floor (1e-7)")
    credit_norm_mean: float | None = metric("mean ||a_l|| of the raw credit")
    nudge_eta0p003: float | None = metric("loss change after a step of 0.003 against the normalised credit")
    nudge_eta0p01: float | None = metric("loss change after a step of 0.01 against the normalised credit")
    method: str | None = metric("the trial's method")
    task: str | None = metric("the trial's task")
    depth: int | None = metric("the trial's L")
    alpha: float | None = metric("the trial's alpha (NaN on cifar10)")
    seed: int | None = metric("the student seed the trial ran with")
