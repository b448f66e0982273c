"""The lambda sweep's corrector training (docs/studies/quantization-correction.md, 'Lambda protocol').

Full batch on a fixed training set, Adam. Loss
``MSE(out_c, out_f)/Var(out_f) + lam * mean_k MSE(x_k_hat, x_k_f)/Var(x_k_f)`` where x_k_hat is the
activation right after corrector k and x_k_f the float activation at the same point. Schedule:
S//4 warm-up steps with float correctors, calibrate the corrector scales, S - S//4 QAT steps with
quantized correctors re-calibrating every 50 steps, and a final calibration."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .correction import FloatTap, QuantTap, calibrate_correctors, set_corrector_quant
from .loops import train_steps
from .quant import Calibrator

RECALIBRATE_EVERY = 50


def train_correctors_lambda(model: nn.Module, correctors: nn.ModuleDict, X, bits: int,
                            scales: dict[str, float], *, steps: int, lr: float, lam: float,
                            legacy_h0_unquantized: bool, ctx, report_every: int = 50) -> float:
    """Trains ``correctors`` in place; leaves them quantized (as evaluated). Returns the last loss."""
    hybrid_loss = _hybrid_loss(model, correctors, X, bits, scales, lam)
    qat = CorrectorQat(correctors, bits, steps, legacy_h0_unquantized,
                       lambda: model(X, QuantTap(bits, scales, correctors)))

    def loss_at(step: int) -> torch.Tensor:
        qat.before_step(step)
        return hybrid_loss()

    last = train_steps(torch.optim.Adam(correctors.parameters(), lr=lr), steps, loss_at, ctx=ctx,
                       phase="correction", report_every=report_every)
    qat.finish()
    return last


class CorrectorQat:
    """The corrector QAT of the schedule, for one model's correctors or (with
    ``vectorised.MemberCalibrator``) a stack's: float correctors for the S//4 warm-up steps, then
    calibrated and quantized, re-calibrated every RECALIBRATE_EVERY steps. ``run_pass``: a
    corrected forward pass, for the calibration."""

    def __init__(self, correctors, bits: int, steps: int, legacy_h0_unquantized: bool,
                 run_pass: Callable[[], object], new_calibrator: Callable[[], Calibrator] = Calibrator):
        self.correctors, self.bits, self.steps, self.warm = correctors, bits, steps, steps // 4
        self.legacy_h0_unquantized = legacy_h0_unquantized
        self.run_pass, self.new_calibrator = run_pass, new_calibrator
        set_corrector_quant(correctors, False)

    def calibrate(self) -> None:
        calibrate_correctors(self.correctors, self.bits, self.run_pass, self.new_calibrator)

    def before_step(self, step: int) -> None:
        if step == self.warm + 1:  # end of warm-up: scales, then QAT
            self.calibrate()
            set_corrector_quant(self.correctors, True, self.legacy_h0_unquantized)
        elif step > self.warm + 1 and (step - self.warm - 1) % RECALIBRATE_EVERY == 0:
            self.calibrate()

    def finish(self) -> None:
        """After the last step: quantized correctors at fresh scales, as they are evaluated."""
        if self.steps <= self.warm:  # degenerate tiny budgets: still evaluate with quantized correctors
            set_corrector_quant(self.correctors, True, self.legacy_h0_unquantized)
        self.calibrate()


def _hybrid_loss(model: nn.Module, correctors: nn.ModuleDict, X, bits: int, scales: dict[str, float], lam: float):
    """The loss of the current correctors against fixed float targets (taken once, here)."""
    with torch.no_grad():
        ftap = FloatTap(record=True)
        out_f = model(X, ftap)
        var_out = out_f.var().clamp_min(1e-12)
        keys = list(correctors.keys())
        var_k = {k: ftap.acts[k].var().clamp_min(1e-12) for k in keys}
    mse = nn.functional.mse_loss

    def loss() -> torch.Tensor:
        tap = QuantTap(bits, scales, correctors, record=True)
        total = mse(model(X, tap), out_f) / var_out
        if lam and keys:
            per_point = torch.stack([mse(tap.corrected[k], ftap.acts[k]) / var_k[k] for k in keys])
            total = total + lam * per_point.mean()
        return total

    return loss
