"""The lambda sweep's corrector training (seed 000, spec §1.4 and §2.4).

Full batch on a fixed training set, Adam. Loss
``MSE(out_c, out_f)/Var(out_f) + lam * mean_k MSE(x_k_hat, x_k_f)/Var(x_k_f)`` where x_k_hat is the
activation right after corrector k and x_k_f the float activation at the same point. Schedule:
S//4 warm-up steps with float correctors, calibrate the corrector scales, S - S//4 QAT steps with
quantized correctors re-calibrating every 50 steps, and a final calibration."""
from __future__ import annotations

import torch
from torch import nn

from orchestrator.interface import check_finite

from .correction import FloatTap, QuantTap, calibrate_correctors, set_corrector_quant

RECALIBRATE_EVERY = 50


def train_correctors_lambda(model: nn.Module, correctors: nn.ModuleDict, X, bits: int,
                            scales: dict[str, float], *, steps: int, lr: float, lam: float,
                            legacy_h0_unquantized: bool, ctx, report_every: int = 50) -> float:
    """Trains ``correctors`` in place; leaves them quantized (as evaluated). Returns the last loss."""
    with torch.no_grad():
        ftap = FloatTap(record=True)
        out_f = model(X, ftap)
        var_out = out_f.var().clamp_min(1e-12)
        keys = list(correctors.keys())
        var_k = {k: ftap.acts[k].var().clamp_min(1e-12) for k in keys}
    mse = nn.functional.mse_loss

    def loss() -> torch.Tensor:
        tap = QuantTap(bits, scales, correctors, record=True)
        out = model(X, tap)
        total = mse(out, out_f) / var_out
        if lam and keys:
            per_point = torch.stack([mse(tap.corrected[k], ftap.acts[k]) / var_k[k] for k in keys])
            total = total + lam * per_point.mean()
        return total

    def calibrate() -> None:
        calibrate_correctors(correctors, bits, lambda: model(X, QuantTap(bits, scales, correctors)))

    opt = torch.optim.Adam(correctors.parameters(), lr=lr)
    warm = steps // 4
    set_corrector_quant(correctors, False)
    last = float("nan")
    for step in range(1, steps + 1):
        if step == warm + 1:  # end of warm-up: scales, then QAT
            calibrate()
            set_corrector_quant(correctors, True, legacy_h0_unquantized)
        elif step > warm + 1 and (step - warm - 1) % RECALIBRATE_EVERY == 0:
            calibrate()
        value = loss()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        last = float(value.detach())
        check_finite(step, correction_loss=last)
        if report_every and step % report_every == 0:
            ctx.report(step, phase="correction", loss=last)
    if steps <= warm:  # degenerate tiny budgets: still evaluate with quantized correctors
        set_corrector_quant(correctors, True, legacy_h0_unquantized)
    calibrate()
    return last
