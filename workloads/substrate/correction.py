"""Quantization points, learned correctors and the accumulated-error rule
(docs/studies/quantization-correction.md, 'Correctors').

A model calls ``tap(key, group, x)`` at every quantization point, in forward order. The tap decides
what happens there: nothing (float), record the absmax (calibration), or fake-quantize and, where a
corrector sits, add ``C(E)`` where ``E`` is the quantization error accumulated since the previous
corrector. The same model code therefore gives the float, quantized-only, corrected and oracle
passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Mapping

import torch
from torch import nn

from .quant import Calibrator, absmax_scale, fake_quant


@dataclass(frozen=True)
class Point:
    key: str      # e.g. "3" (MLP layer), "enc1", "latent", "2_attn"
    group: str    # placement index runs within a group; the accumulator resets between groups
    dim: int
    correctable: bool = True


def corrector_keys(points: Iterable[Point], every: int) -> list[str]:
    """Keys of the points that get a corrector: index j within its group with (j+1) % every == 0.

    Non-correctable points (the autoencoder latent) are skipped and do not count in the index.
    With every larger than a group's size the group gets none (the Hydra skip rule)."""
    if every < 1:
        raise ValueError(f"correct_every must be >= 1, got {every}")
    keys, index = [], {}
    for p in points:
        if not p.correctable:
            continue
        j = index.get(p.group, 0)
        index[p.group] = j + 1
        if (j + 1) % every == 0:
            keys.append(p.key)
    return keys


class CorrectorBase:
    """What a corrector computes, written once for one model (``Corrector``) and for a stack of
    members (workloads.substrate.vectorised.StackedCorrector): h=0, one affine map d->d; h>0, d->h,
    ReLU, h->d. Subclasses say how a layer ("fc", or "fc1" and "fc2") is applied to its input.

    Corrector QAT (lambda protocol): once ``calibrate_correctors`` has set the scales and
    ``set_corrector_quant`` switched it on, the hidden ReLU output and the output are
    fake-quantized at the corrector's own per-tensor scales."""

    hidden: int

    def _init_qat(self) -> None:
        self.bits: int | None = None
        self.scale_hidden: float | torch.Tensor | None = None
        self.scale_out: float | torch.Tensor | None = None
        self.quantize = False
        self.calibrator: Calibrator | None = None

    def layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def correct(self, err: torch.Tensor) -> torch.Tensor:
        if self.hidden > 0:
            z = self._quantizer("hidden", torch.relu(self.layer("fc1", err)), self.scale_hidden)
            y = self.layer("fc2", z)
        else:
            y = self.layer("fc", err)
        return self._quantizer("out", y, self.scale_out)

    def _quantizer(self, what: str, x: torch.Tensor, scale) -> torch.Tensor:
        # calibration sees the activation before this corrector's own quantizer
        if self.calibrator is not None:
            self.calibrator.observe(what, x)
        if self.quantize and scale is not None:
            x = fake_quant(x, scale, self.bits)
        return x


class Corrector(CorrectorBase, nn.Module):
    """One corrector of one model: predicts an additive correction from the accumulated error E."""

    def __init__(self, dim: int, hidden: int, init: Literal["default", "zero"] = "default"):
        super().__init__()
        self.hidden = hidden
        if hidden > 0:
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)
            last = self.fc2
        else:
            self.fc = nn.Linear(dim, dim)
            last = self.fc
        if init == "zero":  # the corrected model starts equal to the quantized one
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        elif init != "default":
            raise ValueError(f"correction_init must be default|zero, got {init!r}")
        self._init_qat()

    def layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)(x)

    def forward(self, err: torch.Tensor) -> torch.Tensor:
        return self.correct(err)


def build_correctors(points: list[Point], every: int, hidden: int, init: str, seed: int,
                     device: str | torch.device = "cpu") -> nn.ModuleDict:
    """Correctors at the placement points, initialised from their own generator (seeded from the
    run seed) so that building them does not move the global RNG stream: the float backbone is then
    the same whether it was trained in this trial or loaded from the stage cache."""
    keys = corrector_keys(points, every)
    dims = {p.key: p.dim for p in points}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7919)  # fixed offset: corrector stream independent of the backbone's
        mods = nn.ModuleDict({k: Corrector(dims[k], hidden, init) for k in keys})
    return mods.to(device)


class FloatTap:
    """Float pass; optionally calibrates (absmax per point) and/or records activations. With a
    ``vectorised.MemberCalibrator`` it serves a stack of members as well."""

    quantized = False
    legacy_residual = False

    def __init__(self, calibrator: Calibrator | None = None, record: bool = False):
        self.calibrator = calibrator
        self.acts: dict[str, torch.Tensor] | None = {} if record else None

    def __call__(self, key: str, group: str, x: torch.Tensor) -> torch.Tensor:
        if self.calibrator is not None:
            self.calibrator.observe(key, x)
        if self.acts is not None:
            self.acts[key] = x
        return x


class QuantTap:
    """Quantized pass: fake-quantize every point; correct where a corrector sits.

    - ``correctors``: ModuleDict keyed by point key (None or empty: quantized only), or the
      ``vectorised.BatchedCorrectors`` of a stack of members (``scales`` then per-member tensors).
    - ``oracle``: float activations by key; at the oracle points they replace the quantized value
      (upper bound, Hydra classification only).
    - ``legacy_residual``: the transformer reads this to reproduce the prenorm residual bug of the
      original quantized-only baseline (docs/studies/quantization-correction.md, 'Legacy
      switches'). Only set it for the quantized-only pass.
    - ``record``: keep the activation right after each correction (for the lambda hybrid loss).
    """

    quantized = True

    def __init__(self, bits: int, scales: Mapping[str, float | torch.Tensor], correctors: Mapping | None = None,
                 oracle: dict[str, torch.Tensor] | None = None, oracle_keys: Iterable[str] = (),
                 legacy_residual: bool = False, record: bool = False):
        self.bits = bits
        self.scales = scales
        self.correctors = correctors if correctors is not None else {}
        self.oracle = oracle
        self.oracle_keys = set(oracle_keys)
        self.legacy_residual = legacy_residual
        self.corrected: dict[str, torch.Tensor] | None = {} if record else None
        self._acc: torch.Tensor | None = None
        self._group: str | None = None
        self._seen: set[str] = set()

    def __call__(self, key: str, group: str, x: torch.Tensor) -> torch.Tensor:
        if key in self._seen:  # a point seen again: a new forward pass, start from a clean state
            self._seen.clear()
            self._acc = None
        self._seen.add(key)
        xq = fake_quant(x, self.scales[key], self.bits)
        # Accumulated error since the previous corrector; reset between groups and on a change of
        # dimension (the autoencoder's encoder, latent and decoder).
        err = x - xq
        if self._acc is None or self._group != group or self._acc.shape != err.shape:
            self._acc = err
        else:
            self._acc = self._acc + err
        self._group = group
        if key in self.correctors:
            xq = xq + self.correctors[key](self._acc)
            self._acc = None
            if self.corrected is not None:
                self.corrected[key] = xq
        if self.oracle is not None and key in self.oracle_keys:
            xq = self.oracle[key]
        return xq


def calibrate_correctors(correctors: Mapping[str, CorrectorBase], bits: int, run_pass,
                         new_calibrator: Callable[[], Calibrator] = Calibrator) -> None:
    """Per-tensor scales for each corrector's hidden and output activations, taken on
    the accumulated errors reaching it during ``run_pass()`` (a no-grad corrected forward). The
    absmax is taken before the corrector's own quantizer; the other correctors keep their current
    quantize state, so re-calibration follows the trajectory being trained. ``new_calibrator``:
    ``vectorised.MemberCalibrator`` for the correctors of a stack of members."""
    for c in correctors.values():
        c.calibrator = new_calibrator()
    with torch.no_grad():
        run_pass()
    for c in correctors.values():
        c.bits = bits
        scales = c.calibrator.scales(bits)
        c.scale_hidden = scales.get("hidden")
        c.scale_out = scales.get("out", absmax_scale(0.0, bits))  # a corrector the pass never reached
        c.calibrator = None


def set_corrector_quant(correctors: Mapping[str, CorrectorBase], on: bool, legacy_h0_unquantized: bool = False) -> None:
    """Switch corrector fake quantization on/off. ``legacy_h0_unquantized`` reproduces seed 000's
    lambda sweep, where linear (h=0) correctors were never quantized (a legacy switch)."""
    for c in correctors.values():
        c.quantize = on and not (legacy_h0_unquantized and c.hidden == 0)


@torch.no_grad()
def calibrated_scales(model, X: torch.Tensor, bits: int, calibrator: Calibrator | None = None) -> dict:
    """The per-point scales of one float pass of ``model`` over ``X`` (in the model's current mode).
    ``calibrator``: a ``vectorised.MemberCalibrator`` for a batched model (per-member scales)."""
    cal = calibrator if calibrator is not None else Calibrator()
    model(X, FloatTap(cal))
    return cal.scales(bits)
