"""Credit-quality metrics on a held-out batch (docs/studies/credit-bridge.md, 'Metrics').

Gamma_l  mean over samples of cos(a_l, g_l), g_l the true per-sample gradient dl/dh_l of the
         current network; cosine written out by hand in fp32 (no eps clamp: a zero vector gives NaN,
         which is counted and left out of the mean). ||g_l|| is logged alongside, with the share of
         samples below the floor (||g_l|| < grad_floor, 1e-7), where the cosine says nothing.
rho_l    Pearson correlation, over the (sample, direction) pairs of the samples at or above the
         floor, between the predicted change <a_l, eps v> and the true change
         l(h_l + eps v) - l(h_l), for M random unit directions v per sample, the perturbed state run
         through the remaining blocks and the head. Needs no backprop. Computed in float64 so that
         eps = 1e-3 is far above rounding noise. NaN when no sample is above the floor; rho_all is
         the same over every sample (the definition before the floor was applied).
nudge    l(h_l - eta a_l / RMS(a_l)) - l(h_l), mean over samples (negative = the credit helps).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch.nn import functional as F

from .nets import BlockNet
from .params import eta_name


def cosine_per_sample(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """cos(a_i, g_i) for each row, by hand in fp32 (or in a's dtype if wider)."""
    dt = torch.promote_types(a.dtype, torch.float32)
    # divide by the largest entry first, so squares of tiny vectors (||g|| near the 1e-7 floor and
    # below) do not underflow; an all-zero vector still gives 0/0 = NaN
    a = a.to(dt) / a.to(dt).abs().amax(-1, keepdim=True)
    g = g.to(dt) / g.to(dt).abs().amax(-1, keepdim=True)
    return (a * g).sum(-1) / ((a * a).sum(-1).sqrt() * (g * g).sum(-1).sqrt())


def gamma(a: torch.Tensor, g: torch.Tensor) -> tuple[float, int]:
    """(mean cosine over samples with a defined cosine, number of samples left out)."""
    cos = cosine_per_sample(a, g)
    ok = torch.isfinite(cos)
    n_bad = int((~ok).sum())
    return (float(cos[ok].mean()) if ok.any() else float("nan")), n_bad


def pearson(u: np.ndarray, v: np.ndarray) -> float:
    """Pearson correlation; 0 if either side is constant (std < 1e-12)."""
    u = np.asarray(u, dtype=np.float64).ravel()
    v = np.asarray(v, dtype=np.float64).ravel()
    su, sv = u.std(), v.std()
    if su < 1e-12 or sv < 1e-12:
        return 0.0
    return float(((u - u.mean()) * (v - v.mean())).mean() / (su * sv))


def above_floor(gnorm: torch.Tensor, floor: float) -> np.ndarray:
    """Boolean mask of the samples whose true-gradient norm is at or above the floor."""
    return (gnorm >= floor).cpu().numpy()


def masked_pearson(pred: np.ndarray, true: np.ndarray, keep: np.ndarray) -> float:
    """Pearson over the pairs of the kept samples. ``pred`` and ``true`` hold M directions x n
    samples, direction-major (as ``perturbation_pairs`` returns them); NaN if no sample is kept."""
    n = len(keep)
    if not keep.any():
        return float("nan")
    return pearson(np.asarray(pred).reshape(-1, n)[:, keep], np.asarray(true).reshape(-1, n)[:, keep])


def perturbation_pairs(net64: BlockNet, l: int, h: torch.Tensor, a: torch.Tensor, y: torch.Tensor,
                       directions: int, eps: float, gen: torch.Generator, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) loss changes for ``directions`` random unit directions per sample at h_l.
    ``net64`` is a float64 copy of the net; h and a are promoted to float64."""
    h = h.to(torch.float64)
    a = a.to(torch.float64)
    n, d = h.shape
    pred, true = [], []
    with torch.no_grad():
        base = F.cross_entropy(net64.forward_from(l, h), y, reduction="none")
        done = 0
        while done < directions:
            m = min(chunk, directions - done)
            v = torch.randn(m, n, d, generator=gen, dtype=torch.float64, device=h.device)
            v = v / v.norm(dim=-1, keepdim=True)
            hp = (h[None] + eps * v).reshape(m * n, d)
            lp = F.cross_entropy(net64.forward_from(l, hp), y.repeat(m), reduction="none").reshape(m, n)
            true.append((lp - base[None]).cpu().numpy())
            pred.append((eps * (a[None] * v).sum(-1)).cpu().numpy())
            done += m
    return np.concatenate(pred).ravel(), np.concatenate(true).ravel()


def nudge(net: BlockNet, l: int, h: torch.Tensor, a_hat: torch.Tensor, y: torch.Tensor, eta: float) -> float:
    with torch.no_grad():
        before = F.cross_entropy(net.forward_from(l, h), y, reduction="none")
        after = F.cross_entropy(net.forward_from(l, h - eta * a_hat), y, reduction="none")
    return float((after - before).mean())


def float64_copy(net: BlockNet) -> BlockNet:
    return copy.deepcopy(net).to(torch.float64).eval()


def evaluate_credit(net: BlockNet, hs: list[torch.Tensor], grads: list[torch.Tensor], credits: torch.Tensor,
                    y: torch.Tensor, layers: list[int], *, directions: int = 32, eps: float = 1e-3,
                    etas: tuple[float, ...] = (0.003, 0.01), seed: int = 0, rho_reference: bool = False,
                    credit_eps: float = 1e-6, net64: BlockNet | None = None, grad_floor: float = 1e-7) -> list[dict]:
    """One row per layer in ``layers`` with gamma, rho, gradient norms and nudging.

    ``credits`` is the method's raw (L+1, n, d) credit, ``grads``/``hs`` the true gradients and
    states of the same batch. Directions are drawn from a generator seeded by ``seed`` and the layer,
    so every method sees the same directions at the same seed. rho (and rho_bp_ref) run over the
    samples with ||g_l|| >= ``grad_floor``, rho_all over every sample.
    """
    net64 = net64 if net64 is not None else float64_copy(net)
    rows = []
    for l in layers:
        a, g, h = credits[l], grads[l], hs[l]
        gam, n_undefined = gamma(a, g)
        gnorm = g.to(torch.float32).norm(dim=-1)
        keep = above_floor(gnorm, grad_floor)
        gen = torch.Generator(device=h.device).manual_seed(int(seed) * 1000 + l)
        pred, true = perturbation_pairs(net64, l, h, a, y, directions, eps, gen)
        row = {
            "layer": l, "t": l / (len(hs) - 1), "gamma": gam, "cos_undefined": n_undefined,
            "rho": masked_pearson(pred, true, keep), "rho_all": pearson(pred, true),
            "rho_samples": int(keep.sum()),
            "gnorm_mean": float(gnorm.mean()), "gnorm_min": float(gnorm.min()),
            "grad_floor_share": float(1.0 - keep.mean()),
            "credit_norm_mean": float(a.to(torch.float32).norm(dim=-1).mean()),
        }
        if rho_reference:
            gen = torch.Generator(device=h.device).manual_seed(int(seed) * 1000 + l)
            pred_g, true_g = perturbation_pairs(net64, l, h, g, y, directions, eps, gen)
            row["rho_bp_ref"] = masked_pearson(pred_g, true_g, keep)
        a_hat = a / (a.pow(2).mean(-1, keepdim=True).sqrt() + credit_eps)
        for eta in etas:
            row[f"nudge_{eta_name(eta)}"] = nudge(net, l, h, a_hat, y, eta)
        rows.append(row)
    return rows


def layer_mean(rows: list[dict], key: str, layers: list[int] | None = None) -> float:
    vals = [r[key] for r in rows if (layers is None or r["layer"] in layers) and r.get(key) is not None
            and not (isinstance(r[key], float) and math.isnan(r[key]))]
    return float(np.mean(vals)) if vals else float("nan")
