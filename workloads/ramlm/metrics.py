"""Scoring and metrics. See docs/studies/ramlm.md, 'Scoring' and 'Metrics'.

Seed scoring: p = softmax over all V cluster scores (temperature 1), CE = -ln max(p_target, 1/V),
PPL = exp(mean CE), accuracy = argmax == target with ties going to the lowest *token id*.
Score columns are token ids (the memory scatters logical positions back to tokens).

Calibrated scoring (beyond the seed): logits = score / temperature + prior_weight * ln p_unigram,
with (temperature, prior_weight) fitted on validation examples. It is a proper distribution, so
its CE is reported without the 1/V clamp; the softmax-of-votes floor (V-1+e)/e no longer binds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


def ppl_floor(vocab_size: int) -> float:
    """Best possible seed-scoring PPL: target scores 1, every other cluster 0."""
    return (vocab_size - 1 + math.e) / math.e


@dataclass
class TierAccumulator:
    n_tiers: int
    ce_sum: np.ndarray = field(init=False)
    correct: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)

    def __post_init__(self):
        self.ce_sum = np.zeros(self.n_tiers, dtype=np.float64)
        self.correct = np.zeros(self.n_tiers, dtype=np.int64)
        self.count = np.zeros(self.n_tiers, dtype=np.int64)

    def add(self, ce: np.ndarray, correct: np.ndarray, tier: np.ndarray) -> None:
        self.ce_sum += np.bincount(tier, weights=ce, minlength=self.n_tiers)
        self.correct += np.bincount(tier, weights=correct.astype(np.float64), minlength=self.n_tiers).astype(np.int64)
        self.count += np.bincount(tier, minlength=self.n_tiers)

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def summary(self) -> dict:
        n = max(1, self.n)
        ce = float(self.ce_sum.sum() / n)
        out = {"ce": ce, "ppl": math.exp(ce), "acc": float(self.correct.sum() / n), "n": self.n, "tiers": []}
        for k in range(self.n_tiers):
            c = int(self.count[k])
            tce = float(self.ce_sum[k] / c) if c else float("nan")
            out["tiers"].append({
                "ce": tce, "ppl": math.exp(tce) if c else float("nan"),
                "acc": float(self.correct[k] / c) if c else float("nan"),
                "share": c / n, "n": c,
            })
        return out


class SeedScorer:
    """Accumulates seed metrics (and optionally calibrated ones) over chunks of [B, V] scores whose
    columns are token ids, so torch.argmax (first maximum) already breaks ties to the lowest id."""

    def __init__(self, tier_of_token: np.ndarray, n_tiers: int, calibration: "Calibration | None" = None):
        self.v = len(tier_of_token)
        self.tier_of_token = np.asarray(tier_of_token)
        self.seed = TierAccumulator(n_tiers)
        self.calibration = calibration
        self.cal = TierAccumulator(n_tiers) if calibration is not None else None
        self.log_clamp = -math.log(self.v)

    def add(self, scores: np.ndarray, target: np.ndarray) -> None:
        s = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
        target = np.asarray(target, dtype=np.int64)
        t = torch.from_numpy(target)
        tier = self.tier_of_token[target]
        logp = s.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(s, dim=1)
        ce = (-torch.clamp(logp, min=self.log_clamp)).double().numpy()
        self.seed.add(ce, torch.argmax(s, dim=1).numpy() == target, tier)
        if self.calibration is not None:
            logits = self.calibration.logits(s)
            ce_c = (torch.logsumexp(logits, dim=1) - logits.gather(1, t[:, None]).squeeze(1)).double().numpy()
            self.cal.add(ce_c, torch.argmax(logits, dim=1).numpy() == target, tier)


def seed_ce(scores: np.ndarray, target_logical: np.ndarray, clamp: bool = True) -> float:
    """Mean softmax CE of one block of scores (used by tests and small evaluations)."""
    s = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float64))
    t = torch.from_numpy(np.asarray(target_logical, dtype=np.int64))
    logp = s.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(s, dim=1)
    if clamp:
        logp = torch.clamp(logp, min=-math.log(s.shape[1]))
    return float(-logp.mean())


class Calibration:
    """logits = score / temperature + prior_weight * log_prior (token order)."""

    def __init__(self, log_prior: np.ndarray, mode: str = "temperature_prior"):
        if mode not in ("temperature", "temperature_prior"):
            raise ValueError(f"calibration must be none, temperature or temperature_prior, got {mode!r}")
        self.mode = mode
        self.log_prior = torch.from_numpy(np.asarray(log_prior, dtype=np.float32))
        self.temperature = 1.0
        self.prior_weight = 0.0

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        out = s / self.temperature
        if self.prior_weight != 0.0:
            out = out + self.prior_weight * self.log_prior
        return out

    def _pass(self, scores, targets, a: float, b: float, chunk: int, derivatives: bool):
        """Mean CE at inverse temperature a and prior weight b; with its gradient and Hessian.
        CE is convex in (a, b) (log-sum-exp of logits linear in them), so Newton converges fast.
        Elementwise work in float32, row sums accumulated in float64."""
        n = len(targets)
        lp = self.log_prior
        lp2 = lp * lp
        loss, g, h = 0.0, np.zeros(2), np.zeros((2, 2))
        for i in range(0, n, chunk):
            s = torch.from_numpy(np.asarray(scores[i:i + chunk], dtype=np.float32))
            t = torch.from_numpy(np.asarray(targets[i:i + chunk], dtype=np.int64))
            logits = s * a + lp * b
            lse = torch.logsumexp(logits, dim=1)
            s_t, lp_t = s.gather(1, t[:, None]).squeeze(1).double(), lp[t].double()
            loss += float((lse.double() - (a * s_t + b * lp_t)).sum())
            if derivatives:
                p = torch.exp(logits.sub_(lse[:, None]))
                ps = p * s
                es, el = ps.sum(1).double(), (p @ lp).double()
                ess, esl, ell = (ps * s).sum(1).double(), (ps @ lp).double(), (p @ lp2).double()
                g += [float((es - s_t).sum()), float((el - lp_t).sum())]
                h += [[float((ess - es * es).sum()), float((esl - es * el).sum())],
                      [float((esl - es * el).sum()), float((ell - el * el).sum())]]
        return loss / n, g / n, h / n

    def fit(self, scores: np.ndarray, target_logical: np.ndarray, steps: int = 40, chunk: int | None = None,
            max_step: float = 2.0) -> dict:
        """Minimise mean CE on the given (validation) scores over the inverse temperature and, in
        temperature_prior mode, the prior weight (damped Newton with backtracking; no autograd).
        ``scores`` may be float16 to save memory; each chunk is computed in float64."""
        targets = np.asarray(target_logical, dtype=np.int64)
        chunk = chunk or max(1, (1 << 22) // max(1, scores.shape[1]))   # ~4M elements per block
        with_prior = self.mode == "temperature_prior"
        x = np.array([1.0, 0.0])
        if len(targets):
            loss, g, h = self._pass(scores, targets, *x, chunk, True)
            for _ in range(steps):
                if not with_prior:
                    g, h = g * [1, 0], np.array([[h[0, 0], 0.0], [0.0, 1.0]])
                try:
                    step = -np.linalg.solve(h + 1e-9 * np.eye(2), g)
                except np.linalg.LinAlgError:
                    step = -g
                if g @ step >= 0:          # not a descent direction: fall back to the gradient
                    step = -g
                norm = float(np.linalg.norm(step))
                if norm > max_step:        # trust region: near-uniform or near-one-hot softmaxes
                    step *= max_step / norm  # have a tiny Hessian and would overshoot by far
                t = 1.0
                while t > 1e-4:
                    cand = x + t * step
                    cand[0] = max(cand[0], 1e-3)    # keep the temperature positive
                    new_loss = self._pass(scores, targets, *cand, chunk, False)[0]
                    if new_loss <= loss + 1e-4 * t * (g @ step):
                        break
                    t *= 0.5
                else:
                    break
                converged = abs(loss - new_loss) < 1e-7
                x, loss = cand, new_loss
                if converged:
                    break
                loss, g, h = self._pass(scores, targets, *x, chunk, True)
        self.temperature, self.prior_weight = float(1.0 / x[0]), float(x[1])
        return {"temperature": self.temperature, "prior_weight": self.prior_weight}


def unigram_log_prior(train_tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Add-one smoothed unigram log-probabilities from train counts, in token order."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def unigram_ce(train_tokens: np.ndarray, eval_targets: np.ndarray, vocab_size: int) -> float:
    logp = unigram_log_prior(train_tokens, vocab_size)
    return float(-logp[np.asarray(eval_targets, dtype=np.int64)].mean()) if len(eval_targets) else float("nan")
