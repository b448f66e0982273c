"""Activation fake quantization (docs/studies/quantization-correction.md, 'Quantization').

Only activations are quantized, symmetric and per tensor, with signed integer ranges
[-2^(b-1), 2^(b-1)-1]. The scale of a point is ``max|x_cal| / qmax`` over the whole calibration
tensor, computed once on the float model and then frozen.
"""
from __future__ import annotations

import torch


def int_range(bits: int) -> tuple[int, int]:
    """Signed integer range for a bit width: 2 -> (-2, 1), 4 -> (-8, 7), 8 -> (-128, 127)."""
    if bits < 2:
        raise ValueError(f"bits must be >= 2, got {bits}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def absmax_scale(absmax: float, bits: int) -> float:
    """Per-tensor scale: absmax / qmax, or 1 when the tensor is all zeros."""
    _, qmax = int_range(bits)
    return float(absmax) / qmax if absmax > 0 else 1.0


class _RoundSTE(torch.autograd.Function):
    """round() forward (half to even, as torch.round), identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def fake_quant(x: torch.Tensor, scale: float | torch.Tensor, bits: int) -> torch.Tensor:
    """``s * clamp(round(x / s), qmin, qmax)`` with a straight-through round.

    The clamp comes after the STE, so saturated elements get zero gradient (clamp's own gradient).
    """
    qmin, qmax = int_range(bits)
    return scale * torch.clamp(_RoundSTE.apply(x / scale), qmin, qmax)


class Calibrator:
    """Collects the running absmax of every quantization point over one or more float passes."""

    def __init__(self) -> None:
        self.absmax: dict[str, float] = {}

    def observe(self, key: str, x: torch.Tensor) -> None:
        m = float(x.detach().abs().max()) if x.numel() else 0.0
        self.absmax[key] = max(self.absmax.get(key, 0.0), m)

    def scales(self, bits: int) -> dict[str, float]:
        return {k: absmax_scale(v, bits) for k, v in self.absmax.items()}
