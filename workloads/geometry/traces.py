"""Float and quantized-without-correction trajectories of the char transformer
(docs/studies/geometry.md, 'Traces'), read through the substrate's tap interface: the model calls
``tap(key, group, h)`` right after every residual add and continues with what the tap returns.

Both trajectories start from the same embedding output (eval mode, so no dropout); the quantized
one uses the correct residual ``pre = h + f(LN h)``, ``post = Q(pre)``, ``h = post``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from workloads.substrate.correction import FloatTap
from workloads.substrate.quant import int_range

from .q1 import point_geometry


class TraceTap:
    """Quantized pass that decomposes the quantization at every point and keeps the pieces:
    ``pre`` (pre-quant), ``post`` (= Q(pre)), ``round_err = (round(pre/s) - pre/s) s``,
    ``sat_err = (clip(round) - round) s`` and ``sat_mask`` (round != clip(round))."""

    quantized = True
    legacy_residual = False  # read by the transformer block: always the correct residual here

    def __init__(self, bits: int, scales: dict[str, float]):
        self.bits, self.scales = bits, scales
        self.qmin, self.qmax = int_range(bits)
        self.record: dict[str, dict[str, torch.Tensor]] = {}

    def __call__(self, key: str, group: str, x: torch.Tensor) -> torch.Tensor:
        s = self.scales[key]
        scaled = x / s
        rounded = torch.round(scaled)
        clipped = torch.clamp(rounded, self.qmin, self.qmax)
        post = clipped * s
        self.record[key] = {"pre": x, "post": post, "round_err": (rounded - scaled) * s,
                            "sat_err": (clipped - rounded) * s, "sat_mask": rounded != clipped}
        return post


class ElementCorrectedTap:
    """Quantized pass with the Q2 element-wise corrector at every point:
    ``post = Q(pre)``; features from (post, post - pre, mask, s, |post|); ``h = post + C(features, k)``.
    The features are taken on the corrected trajectory (the corrector was trained on uncorrected
    traces: an exposure shift the study keeps)."""

    quantized = True
    legacy_residual = False

    def __init__(self, bits: int, scales: dict[str, float], keys: Sequence[str], corrector: nn.Module,
                 make_features: Callable):
        self.bits, self.scales = bits, scales
        self.qmin, self.qmax = int_range(bits)
        self.index = {k: i for i, k in enumerate(keys)}
        self.corrector, self.make_features = corrector, make_features

    def __call__(self, key: str, group: str, x: torch.Tensor) -> torch.Tensor:
        s = self.scales[key]
        rounded = torch.round(x / s)
        clipped = torch.clamp(rounded, self.qmin, self.qmax)
        post = clipped * s
        feats = self.make_features(post, x, rounded != clipped, s)
        layer = torch.tensor(self.index[key], device=x.device)
        return post + self.corrector(feats, layer)


@torch.no_grad()
def _both(model: nn.Module, x: torch.Tensor, bits: int, scales: dict[str, float]) -> tuple[dict, dict]:
    model.eval()
    ftap = FloatTap(record=True)
    model(x, ftap)
    qtap = TraceTap(bits, scales)
    model(x, qtap)
    return ftap.acts, qtap.record


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


@torch.no_grad()
def collect_traces(model: nn.Module, X: torch.Tensor, keys: Sequence[str], bits: int, scales: dict[str, float],
                   max_rows: int, rng: np.random.Generator, batch: int = 64) -> list[dict[str, np.ndarray]]:
    """Per point, the trace arrays (docs/studies/geometry.md, 'Traces') over the token rows of X
    (B*T rows x d), subsampled to at most ``max_rows`` rows per point (an independent draw per
    point, in point order, from ``rng``).
    Rows are gathered batch by batch, so only the kept rows are ever held in memory."""
    n_rows = X.shape[0] * X.shape[1]
    picks = []
    for _ in keys:
        idx = np.arange(n_rows) if n_rows <= max_rows else np.sort(rng.choice(n_rows, size=max_rows, replace=False))
        picks.append(idx)
    parts: list[dict[str, list[np.ndarray]]] = [dict() for _ in keys]
    T = X.shape[1]
    for i in range(0, X.shape[0], batch):
        lo, hi = i * T, min(i + batch, X.shape[0]) * T
        acts, rec = _both(model, X[i:i + batch], bits, scales)
        for k, key in enumerate(keys):
            sel = picks[k][(picks[k] >= lo) & (picks[k] < hi)] - lo
            if not len(sel):
                continue
            sel_t = torch.from_numpy(sel).to(X.device)
            flat = lambda t, sel_t=sel_t: t.reshape(-1, t.shape[-1]).index_select(0, sel_t)  # noqa: E731
            zf, r = flat(acts[key]), rec[key]
            zq, zpre = flat(r["post"]), flat(r["pre"])
            got = {"z_float": zf, "z_quant": zq, "z_pre": zpre, "round_err": flat(r["round_err"]),
                   "sat_err": flat(r["sat_err"]), "sat_mask": flat(r["sat_mask"]),
                   "true_error": zf - zq, "quant_residual": zq - zpre}
            for name, t in got.items():
                parts[k].setdefault(name, []).append(_np(t))
    out = []
    for k, key in enumerate(keys):
        d = {name: np.concatenate(v) for name, v in parts[k].items()}
        d["scale"] = float(scales[key])
        d["key"] = key
        out.append(d)
    return out


@torch.no_grad()
def report_geometry(model: nn.Module, X: torch.Tensor, keys: Sequence[str], bits: int,
                    scales: dict[str, float]) -> list[dict]:
    """Correctability components per point on the report batch (every row and element of X).
    The amplification's reference is the accumulated error ``quant_x - float_x`` after the
    previous point."""
    acts, rec = _both(model, X, bits, scales)
    out, prev = [], None
    for key in keys:
        r = rec[key]
        zf = acts[key]
        g = point_geometry(_np(r["round_err"]), _np(r["sat_err"]), _np(r["sat_mask"]), _np(zf), _np(r["pre"]),
                           None if prev is None else _np(prev))
        out.append(g)
        prev = r["post"] - zf
    return out
