"""The per-cluster search's surrogate memory and its four fitness functions. See
docs/studies/ramlm.md, 'Per-cluster optimisation'.

Each cluster's neurons are optimised on a *surrogate*: neuron j of cluster c remembers the set of
addresses it saw on opt_train examples whose target is c (no negatives, no EMPTY); c's vote on an
example is how many of its neurons find their address in their set. Fitness (higher is better) on
opt_eval compares c's votes against a global baseline of every cluster's votes:

  SIMPLE    (sum votes on c's examples - sum votes on the others) / #eval
  ACCURACY  share of c's examples where c's vote beats every other cluster's baseline vote
  CE        -mean global softmax CE (votes as logits), other clusters at their baseline,
            computed incrementally from a cached per-example log-sum-exp
  PENALIZE  mean vote on c's examples - mean vote on up to 2000 other examples

Clusters are logical positions throughout (targets are mapped with the same ClusterMap as the
model), which avoids the original's tiered-mode mix-up of logical ids and token ids. Clusters with
no opt_train example cannot vote, so their fitness is flat and they are left unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FITNESS_MODES = ("SIMPLE", "ACCURACY", "CE", "PENALIZE")


def addresses(bits: np.ndarray, conn: np.ndarray) -> np.ndarray:
    """bits [N, T] uint8, conn [..., b] -> addresses [N, ...] int64 (first connection = MSB)."""
    b = conn.shape[-1]
    weights = (1 << np.arange(b - 1, -1, -1, dtype=np.int64))
    gathered = bits[:, conn.reshape(-1)].reshape((bits.shape[0],) + conn.shape).astype(np.int64)
    return gathered @ weights


def member(eval_addr: np.ndarray, pos_addr: np.ndarray, bits: int) -> np.ndarray:
    """eval_addr [R, N], pos_addr [R, k] -> bool [R, N]: eval address found in row r's positive set."""
    r = eval_addr.shape[0]
    if bits <= 16:
        table = np.zeros((r, 1 << bits), dtype=bool)
        rows = np.repeat(np.arange(r), pos_addr.shape[1])
        table[rows, pos_addr.reshape(-1)] = True
        return table[np.arange(r)[:, None], eval_addr]
    keys_pos = (np.arange(r, dtype=np.int64)[:, None] << bits) | pos_addr
    keys_eval = (np.arange(r, dtype=np.int64)[:, None] << bits) | eval_addr
    return np.isin(keys_eval, keys_pos)


@dataclass
class Baseline:
    """Global votes of all clusters on opt_eval. Only clusters with opt_train positives can vote,
    so votes are stored for those ('active') columns; all others vote 0."""

    vocab_size: int
    active: np.ndarray          # logical ids, sorted
    votes: np.ndarray           # [N_eval, A] int16
    col: dict                   # logical id -> column in votes

    def vote_of(self, cluster: int) -> np.ndarray:
        j = self.col.get(cluster)
        return self.votes[:, j] if j is not None else np.zeros(self.votes.shape[0], dtype=np.int16)

    def target_votes(self, targets: np.ndarray) -> np.ndarray:
        out = np.zeros(len(targets), dtype=np.float64)
        for i, t in enumerate(targets):
            j = self.col.get(int(t))
            if j is not None:
                out[i] = self.votes[i, j]
        return out

    def lse(self) -> np.ndarray:
        """log sum_c exp(vote_c) per example, inactive clusters contributing exp(0) each."""
        v = self.votes.astype(np.float64)
        m = max(0.0, float(v.max())) if v.size else 0.0
        s = np.exp(v - m).sum(axis=1) + (self.vocab_size - v.shape[1]) * np.exp(-m)
        return np.log(s) + m

    def top2(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per example: best vote, its logical cluster, and the second best vote (inactive = 0)."""
        n, a = self.votes.shape
        if a == 0:
            return np.zeros(n), np.full(n, -1), np.zeros(n)
        v = self.votes.astype(np.float64)
        if self.vocab_size > a:  # an inactive cluster's 0 counts as a competitor
            v = np.concatenate([v, np.zeros((n, 1))], axis=1)
        order = np.argsort(-v, axis=1, kind="stable")[:, :2]
        best = v[np.arange(n), order[:, 0]]
        second = v[np.arange(n), order[:, 1]] if v.shape[1] > 1 else np.zeros(n)
        ids = np.where(order[:, 0] < a, self.active[np.minimum(order[:, 0], a - 1)], -1)
        return best, ids, second


class SurrogateProblem:
    """Opt data shared by all clusters: input bits, logical targets and the positive index."""

    def __init__(self, train_bits, train_targets, eval_bits, eval_targets, vocab_size: int, seed: int = 0):
        self.train_bits = train_bits
        self.eval_bits = eval_bits
        self.train_targets = np.asarray(train_targets, dtype=np.int64)
        self.eval_targets = np.asarray(eval_targets, dtype=np.int64)
        self.vocab_size = vocab_size
        order = np.argsort(self.train_targets, kind="stable")
        uniq, starts = np.unique(self.train_targets[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        self.positives = {int(c): order[s:e] for c, s, e in zip(uniq, starts, ends)}
        self.seed = seed

    def votes(self, cluster: int, conn: np.ndarray) -> np.ndarray:
        """conn [P, n, b] candidates of one cluster -> votes [P, N_eval] int16."""
        p, n, b = conn.shape
        pos = self.positives.get(cluster)
        if pos is None:
            return np.zeros((p, len(self.eval_targets)), dtype=np.int16)
        pos_addr = addresses(self.train_bits[pos], conn).reshape(len(pos), p * n).T       # [P*n, k]
        ev_addr = addresses(self.eval_bits, conn).reshape(len(self.eval_targets), p * n).T  # [P*n, N]
        hit = member(ev_addr, pos_addr, b).reshape(p, n, -1)
        return hit.sum(axis=1, dtype=np.int16)

    def baseline(self, clusters_conn: dict[int, np.ndarray]) -> Baseline:
        """clusters_conn: logical id -> [n, b] for every cluster to consider."""
        active = np.array(sorted(c for c in clusters_conn if c in self.positives), dtype=np.int64)
        votes = np.zeros((len(self.eval_targets), len(active)), dtype=np.int16)
        for j, c in enumerate(active):
            votes[:, j] = self.votes(int(c), clusters_conn[int(c)][None])[0]
        return Baseline(self.vocab_size, active, votes, {int(c): j for j, c in enumerate(active)})

    def scoring_cache(self, base: Baseline) -> dict:
        """What the ACCURACY and CE fitness read from the baseline, computed once per baseline."""
        return {"lse": base.lse(), "top2": base.top2(), "target_vote": base.target_votes(self.eval_targets)}


class ClusterFitness:
    """Fitness of candidate connectivities for one cluster against a fixed baseline."""

    def __init__(self, problem: SurrogateProblem, base: Baseline, cache: dict, mode: str, cluster: int):
        if mode not in FITNESS_MODES:
            raise ValueError(f"fitness must be one of {FITNESS_MODES}, got {mode!r}")
        self.p, self.base, self.cache, self.mode, self.c = problem, base, cache, mode, cluster
        self.is_pos = problem.eval_targets == cluster
        self.neg = None
        if mode == "PENALIZE":   # the other examples it is penalised on: at most 2000, drawn per cluster
            neg = np.nonzero(~self.is_pos)[0]
            if len(neg) > 2000:
                neg = np.sort(np.random.default_rng(problem.seed + cluster).choice(neg, 2000, replace=False))
            self.neg = neg

    def __call__(self, conn: np.ndarray) -> np.ndarray:
        """conn [P, n, b] -> fitness [P] (higher is better)."""
        votes = self.p.votes(self.c, conn).astype(np.float64)   # [P, N]
        return score_votes(votes, self.mode, self.is_pos, self.base, self.cache, self.c, self.neg,
                           len(self.p.eval_targets))


def score_votes(votes: np.ndarray, mode: str, is_pos: np.ndarray, base: Baseline, cache: dict, cluster: int,
                neg: np.ndarray | None, n_eval: int) -> np.ndarray:
    """The four fitness functions on candidate votes [P, N] of ``cluster``."""
    if mode == "SIMPLE":
        return (votes[:, is_pos].sum(axis=1) - votes[:, ~is_pos].sum(axis=1)) / max(1, n_eval)
    if mode == "PENALIZE":
        pos_mean = votes[:, is_pos].mean(axis=1) if is_pos.any() else np.zeros(len(votes))
        neg_mean = votes[:, neg].mean(axis=1) if neg is not None and len(neg) else np.zeros(len(votes))
        return pos_mean - neg_mean
    if mode == "ACCURACY":
        if not is_pos.any():
            return np.zeros(len(votes))
        best, best_id, second = cache["top2"]
        other_max = np.where(best_id == cluster, second, best)[is_pos]     # best vote of any other cluster
        return (votes[:, is_pos] > other_max[None, :]).mean(axis=1)
    # CE: swap this cluster's baseline vote for the candidate's in the cached log-sum-exp
    lse, target_vote = cache["lse"], cache["target_vote"]
    old = base.vote_of(cluster).astype(np.float64)
    new_lse = lse + np.log1p((np.exp(votes) - np.exp(old)[None, :]) / np.exp(lse)[None, :])
    logit_t = np.where(is_pos[None, :], votes, target_vote[None, :])
    return -(new_lse - logit_t).mean(axis=1)
