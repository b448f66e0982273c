"""What a credit-bridge trial returns: the metric columns of its row and the columns of its
per-layer table (artifact "layers"). Means "over hidden layers" are over h_1 .. h_L."""
from __future__ import annotations

from orchestrator.study import params as overnight_params
from orchestrator.study.params import metric


class Results(overnight_params.Metrics):
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


class LayerRow(overnight_params.Metrics):
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
