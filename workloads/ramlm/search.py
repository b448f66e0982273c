"""Joint connectivity search (spec §8.2-§8.4): genetic algorithm, tabu search, early stopping and
the overfitting monitor with its diversity modes.

A genome is the whole model's connectivity flattened tier after tier (the layout of
``TieredMemory.connectivity_flat``); ``neuron_offsets`` marks where each neuron's slice starts, so
crossover cuts only at neuron boundaries. Fitness is a CE (lower is better) computed by a
callable over a batch of genomes, so candidates are evaluated together by the native evaluator.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

BatchFitness = Callable[[np.ndarray], np.ndarray]   # [K, L] int64 -> [K] CE
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- early stopping
class EarlyStopper:
    """Every ``check_every`` steps: PPL improvement since the last successful check, in percent;
    below ``threshold_pct`` counts against ``patience``; stop once the count exceeds it."""

    def __init__(self, start_ce: float, threshold_pct: float, patience: int, check_every: int = 5):
        self.ref_ce = start_ce
        self.threshold_pct = threshold_pct
        self.patience = patience
        self.check_every = check_every
        self.failures = 0

    def due(self, step: int) -> bool:
        return step > 0 and step % self.check_every == 0

    def check(self, best_ce: float) -> bool:
        """True = stop."""
        ref, best = math.exp(self.ref_ce), math.exp(best_ce)
        improvement = (ref - best) / ref * 100.0
        if improvement >= self.threshold_pct:
            self.failures = 0
            self.ref_ce = best_ce
        else:
            self.failures += 1
        return self.failures > self.patience


# ----------------------------------------------------------------------------- overfitting monitor
@dataclass
class OverfittingMonitor:
    """ratio = CE_dev / CE_eval of the current best; delta% against ``baseline_ratio``.
    delta > critical: stop (severe diversity during the grace period); > severe: severe diversity;
    > warning: mild; <= healthy: leave diversity; in between: keep the current mode."""

    dev_ce: Callable[[np.ndarray], float]
    baseline_ratio: float
    grace_checks: int = 1
    healthy_pct: float = -1.0
    warning_pct: float = 0.0
    severe_pct: float = 1.0
    critical_pct: float = 3.0
    mode: str = "none"
    checks: int = 0
    history: list = field(default_factory=list)

    def check(self, genome: np.ndarray, eval_ce: float) -> bool:
        """Update the mode; True = stop the search."""
        self.checks += 1
        dev = self.dev_ce(genome)
        ratio = dev / eval_ce if eval_ce > 0 else 1.0
        delta = (ratio - self.baseline_ratio) / self.baseline_ratio * 100.0
        stop = False
        if delta > self.critical_pct:
            if self.checks <= self.grace_checks + 1:
                self.mode = "severe"
            else:
                stop = True
        elif delta > self.severe_pct:
            self.mode = "severe"
        elif delta > self.warning_pct:
            self.mode = "mild"
        elif delta <= self.healthy_pct:
            self.mode = "none"
        self.history.append({"check": self.checks, "dev_ce": dev, "eval_ce": eval_ce, "delta_pct": delta,
                             "mode": self.mode, "stop": stop})
        return stop


def periodic_check(stopper: "EarlyStopper", monitor: "OverfittingMonitor | None", step: int,
                   best: np.ndarray, best_ce: float, mode: str) -> tuple[str | None, str]:
    """The every-N-steps check GA and TS share: (stop reason or None, diversity mode to use next)."""
    if not stopper.due(step):
        return None, mode
    if stopper.check(best_ce):
        return "early_stop", mode
    if monitor is None:
        return None, mode
    if monitor.check(best, best_ce):
        return "overfitting", mode
    return None, monitor.mode


@dataclass
class SearchResult:
    genome: np.ndarray
    ce: float
    start_ce: float
    steps: int
    evaluations: int
    stop_reason: str
    history: list = field(default_factory=list)


def mutate(genome: np.ndarray, rate: float, n_inputs: int, rng: np.random.Generator) -> np.ndarray:
    """Each entry independently replaced by a uniform random input bit with probability ``rate``."""
    child = genome.copy()
    n = int(rng.binomial(genome.size, min(1.0, rate)))
    if n:
        idx = rng.choice(genome.size, size=n, replace=False) if n < genome.size // 4 else np.nonzero(rng.random(genome.size) < rate)[0]
        child[idx] = rng.integers(0, n_inputs, size=idx.size)
    return child


# ----------------------------------------------------------------------------- genetic algorithm
@dataclass
class GAConfig:
    population: int = 20
    generations: int = 50
    mutation_rate: float = 0.01
    crossover_rate: float = 0.7
    elitism: int | None = None      # None = max(2, population // 10)
    tournament: int = 3
    threshold_pct: float = 0.05
    patience: int = 1
    check_every: int = 5
    seed: int = 42


def genetic_algorithm(start: np.ndarray, fitness: BatchFitness, neuron_offsets: np.ndarray, n_inputs: int,
                      cfg: GAConfig, start_ce: float | None = None, monitor: OverfittingMonitor | None = None,
                      log: Log | None = None) -> SearchResult:
    rng = np.random.default_rng(cfg.seed)
    base_pop, base_rate = cfg.population, cfg.mutation_rate
    pop_size, rate = base_pop, base_rate
    elite_n = cfg.elitism if cfg.elitism is not None else max(2, base_pop // 10)
    evaluations = 0

    others = np.stack([mutate(start, 10 * rate, n_inputs, rng) for _ in range(pop_size - 1)]) if pop_size > 1 else np.empty((0, start.size), start.dtype)
    if start_ce is None:
        ce0 = fitness(start[None, :])
        start_ce = float(ce0[0])
        evaluations += 1
    ce_others = fitness(others) if len(others) else np.empty(0)
    evaluations += len(others)
    population = np.concatenate([start[None, :], others])
    ce = np.concatenate([[start_ce], ce_others])
    best_i = int(np.argmin(ce))
    best, best_ce = population[best_i].copy(), float(ce[best_i])
    stopper = EarlyStopper(best_ce, cfg.threshold_pct, cfg.patience, cfg.check_every)
    history = [{"step": 0, "best_ce": best_ce, "mode": "none", "population": pop_size}]
    mode, reason, gen = "none", "max_steps", 0

    def tournament() -> int:
        k = min(cfg.tournament, len(population))
        picks = rng.choice(len(population), size=k, replace=False)
        return int(picks[np.argmin(ce[picks])])

    neurons = len(neuron_offsets)
    for gen in range(1, cfg.generations + 1):
        order = np.argsort(ce, kind="stable")
        elite_idx = order[:min(elite_n, pop_size)]
        children = []
        for _ in range(pop_size - len(elite_idx)):
            p1, p2 = population[tournament()], population[tournament()]
            if neurons > 1 and rng.random() < cfg.crossover_rate:
                cut = int(neuron_offsets[rng.integers(1, neurons)])
                child = np.concatenate([p1[:cut], p2[cut:]])
            else:
                child = p1.copy()
            children.append(mutate(child, rate, n_inputs, rng))
        child_arr = np.stack(children) if children else np.empty((0, start.size), start.dtype)
        child_ce = fitness(child_arr) if len(child_arr) else np.empty(0)
        evaluations += len(child_arr)
        population = np.concatenate([population[elite_idx], child_arr])
        ce = np.concatenate([ce[elite_idx], child_ce])
        i = int(np.argmin(ce))
        if ce[i] < best_ce:
            best, best_ce = population[i].copy(), float(ce[i])
        history.append({"step": gen, "best_ce": best_ce, "mode": mode, "population": pop_size})
        if log:
            log(f"GA gen {gen}: best CE {best_ce:.5f} (pop {pop_size}, mode {mode})")
        stop, next_mode = periodic_check(stopper, monitor, gen, best, best_ce, mode)
        if stop:
            reason = stop
            break
        if next_mode != mode:
            mode = next_mode
            factor = {"none": 1.0, "mild": 1.5, "severe": 2.0}[mode]
            pop_size, rate = max(2, int(round(base_pop * factor))), base_rate * factor
            if len(population) < pop_size:  # grow with mutations of the best at 5x the rate
                extra = np.stack([mutate(best, 5 * rate, n_inputs, rng) for _ in range(pop_size - len(population))])
                extra_ce = fitness(extra)
                evaluations += len(extra)
                population, ce = np.concatenate([population, extra]), np.concatenate([ce, extra_ce])
            elif len(population) > pop_size:  # leaving diversity: keep the best
                keep = np.argsort(ce, kind="stable")[:pop_size]
                population, ce = population[keep], ce[keep]
    return SearchResult(best, best_ce, float(start_ce), gen, evaluations, reason, history)


# ----------------------------------------------------------------------------- tabu search
@dataclass
class TSConfig:
    iterations: int = 10
    neighbors: int = 30
    tabu_size: int = 5
    mutation_rate: float = 0.001
    threshold_pct: float = 0.5
    patience: int = 1
    check_every: int = 5
    seed: int = 42


def tabu_search(start: np.ndarray, fitness: BatchFitness, n_inputs: int, cfg: TSConfig,
                start_ce: float | None = None, monitor: OverfittingMonitor | None = None,
                log: Log | None = None) -> SearchResult:
    """``start_ce`` chains GA -> TS: the start is not re-evaluated (the 578fcd8 fix)."""
    rng = np.random.default_rng(cfg.seed)
    evaluations = 0
    if start_ce is None:
        start_ce = float(fitness(start[None, :])[0])
        evaluations += 1
    current, current_ce = start.copy(), float(start_ce)
    best, best_ce = current.copy(), current_ce
    n_neighbors, rate, tabu_len = cfg.neighbors, cfg.mutation_rate, cfg.tabu_size
    tabu: deque = deque(maxlen=tabu_len)
    stopper = EarlyStopper(best_ce, cfg.threshold_pct, cfg.patience, cfg.check_every)
    history = [{"step": 0, "best_ce": best_ce, "current_ce": current_ce, "mode": "none"}]
    mode, reason, it = "none", "max_steps", 0
    for it in range(1, cfg.iterations + 1):
        cands, moves = [], []
        for _ in range(n_neighbors):
            n = max(1, int(rng.binomial(current.size, min(1.0, rate))))  # at least one change
            idx = np.unique(rng.integers(0, current.size, size=n))
            new_vals = rng.integers(0, n_inputs, size=idx.size)
            last = (int(idx[-1]), int(current[idx[-1]]), int(new_vals[-1]))  # the recorded move
            if any(last[0] == t_idx and last[1] == t_new for t_idx, _, t_new in tabu):
                continue
            nb = current.copy()
            nb[idx] = new_vals
            cands.append(nb)
            moves.append(last)
        if not cands:
            history.append({"step": it, "best_ce": best_ce, "current_ce": current_ce, "mode": mode})
            continue
        ce = fitness(np.stack(cands))
        evaluations += len(cands)
        i = int(np.argmin(ce))
        current, current_ce = cands[i], float(ce[i])   # always move, even to a worse neighbour
        tabu.append(moves[i])
        if current_ce < best_ce:
            best, best_ce = current.copy(), current_ce
        history.append({"step": it, "best_ce": best_ce, "current_ce": current_ce, "mode": mode})
        if log:
            log(f"TS iter {it}: current {current_ce:.5f} best {best_ce:.5f} ({len(cands)} neighbours, mode {mode})")
        stop, next_mode = periodic_check(stopper, monitor, it, best, best_ce, mode)
        if stop:
            reason = stop
            break
        if next_mode != mode:
            mode = next_mode
            f, tmin = {"none": (1, 0), "mild": (2, 10), "severe": (3, 15)}[mode]
            n_neighbors, rate = cfg.neighbors * f, cfg.mutation_rate * f
            tabu_len = cfg.tabu_size if f == 1 else max(f * cfg.tabu_size, tmin)
            tabu = deque(tabu, maxlen=tabu_len)
    return SearchResult(best, best_ce, float(start_ce), it, evaluations, reason, history)
