"""Tier-level connectivity search: the GA and the TS of engines.py over the whole model's
connectivity, with early stopping and the overfitting monitor's diversity modes. See
docs/studies/ramlm.md, 'Connectivity optimisation'.

A genome is the whole model's connectivity flattened tier after tier (the layout of
``TieredMemory.connectivity_flat``); ``neuron_offsets`` marks where each neuron's slice starts, so
crossover cuts only at neuron boundaries. Fitness is a CE (lower is better) computed by a
callable over a batch of genomes, so candidates are evaluated together by the native evaluator.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from workloads.ramlm.engines import Breeding, Neighbourhood, Population, Walk, evolve, tabu_walk
from workloads.ramlm.stopping import EarlyStopper, Log, OverfittingMonitor, Supervisor

BatchFitness = Callable[[np.ndarray], np.ndarray]   # [K, L] int64 -> [K] CE

# diversity mode -> factor on the GA's population and mutation rate
GA_DIVERSITY = {"none": 1.0, "mild": 1.5, "severe": 2.0}
# diversity mode -> (factor on the TS's neighbours and mutation rate, least tabu length)
TS_DIVERSITY = {"none": (1, 0), "mild": (2, 10), "severe": (3, 15)}


@dataclass
class SearchResult:
    genome: np.ndarray
    ce: float
    start_ce: float
    steps: int
    evaluations: int
    stop_reason: str
    history: list = field(default_factory=list)


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


def mutate(genome: np.ndarray, rate: float, n_inputs: int, rng: np.random.Generator) -> np.ndarray:
    """Each entry independently replaced by a uniform random input bit with probability ``rate``."""
    child = genome.copy()
    n = int(rng.binomial(genome.size, min(1.0, rate)))
    if n:
        small = n < genome.size // 4   # few changes: draw their places; many: one coin per entry
        idx = rng.choice(genome.size, size=n, replace=False) if small else np.nonzero(rng.random(genome.size) < rate)[0]
        child[idx] = rng.integers(0, n_inputs, size=idx.size)
    return child


def neuron_crossover(neuron_offsets: np.ndarray, rate: float):
    """With probability ``rate``, one cut at a random neuron boundary; otherwise a copy of parent 1."""
    neurons = len(neuron_offsets)

    def cross(p1: np.ndarray, p2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if neurons > 1 and rng.random() < rate:
            cut = int(neuron_offsets[rng.integers(1, neurons)])
            return np.concatenate([p1[:cut], p2[cut:]])
        return p1.copy()
    return cross


def first_generation(start: np.ndarray, fitness: BatchFitness, n_inputs: int, cfg: GAConfig,
                     start_ce: float | None, rng: np.random.Generator) -> tuple[Population, float]:
    """The start and mutations of it at ten times the rate; the start is evaluated only when its CE
    was not handed over. Returns the population and the start's CE."""
    if cfg.population > 1:
        others = np.stack([mutate(start, 10 * cfg.mutation_rate, n_inputs, rng) for _ in range(cfg.population - 1)])
    else:
        others = np.empty((0, start.size), start.dtype)
    evaluations = len(others)
    if start_ce is None:
        start_ce = float(fitness(start[None, :])[0])
        evaluations += 1
    others_ce = fitness(others) if len(others) else np.empty(0)
    population = Population(np.concatenate([start[None, :], others]), np.concatenate([[start_ce], others_ce]),
                            evaluations)
    return population, float(start_ce)


def genetic_algorithm(start: np.ndarray, fitness: BatchFitness, neuron_offsets: np.ndarray, n_inputs: int,
                      cfg: GAConfig, start_ce: float | None = None, monitor: OverfittingMonitor | None = None,
                      log: Log | None = None) -> SearchResult:
    rng = np.random.default_rng(cfg.seed)
    population, start_ce = first_generation(start, fitness, n_inputs, cfg, start_ce, rng)
    elite = cfg.elitism if cfg.elitism is not None else max(2, cfg.population // 10)
    breeding = Breeding(cfg.population, elite, cfg.tournament, cfg.mutation_rate,
                        neuron_crossover(neuron_offsets, cfg.crossover_rate),
                        lambda child, rate, r: mutate(child, rate, n_inputs, r))

    def adapt(mode: str) -> None:
        factor = GA_DIVERSITY[mode]
        breeding.size = max(2, int(round(cfg.population * factor)))
        breeding.rate = cfg.mutation_rate * factor
        missing = breeding.size - len(population.genomes)
        if missing > 0:    # grow with mutations of the best at 5x the rate
            population.grow(np.stack([mutate(population.best, 5 * breeding.rate, n_inputs, rng)
                                      for _ in range(missing)]), fitness)
        elif missing < 0:  # leaving diversity: keep the best
            population.shrink(breeding.size)

    stopper = EarlyStopper(population.best_cost, cfg.threshold_pct, cfg.patience, cfg.check_every)
    sup = Supervisor(stopper, monitor, adapt, log)
    sup.record({"step": 0, "best_ce": population.best_cost, "mode": "none", "population": breeding.size})

    def after(gen: int) -> str | None:
        best_ce, size = population.best_cost, breeding.size
        sup.record({"step": gen, "best_ce": best_ce, "mode": sup.mode, "population": size},
                   f"GA gen {gen}: best CE {best_ce:.5f} (pop {size}, mode {sup.mode})")
        return sup.check(gen, population.best, best_ce)

    steps, reason = evolve(population, breeding, fitness, cfg.generations, rng, after)
    return SearchResult(population.best, population.best_cost, start_ce, steps, population.evaluations,
                        reason or "max_steps", sup.history)


def multi_entry_draw(n_inputs: int):
    """A neighbour changes about ``rate`` of the entries, at least one, to random input bits."""
    def draw(current: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = max(1, int(rng.binomial(current.size, min(1.0, rate))))
        idx = np.unique(rng.integers(0, current.size, size=n))
        return idx, rng.integers(0, n_inputs, size=idx.size)
    return draw


def tabu_search(start: np.ndarray, fitness: BatchFitness, n_inputs: int, cfg: TSConfig,
                start_ce: float | None = None, monitor: OverfittingMonitor | None = None,
                log: Log | None = None) -> SearchResult:
    """``start_ce`` chains GA -> TS: the start is not re-evaluated (the 578fcd8 fix)."""
    rng = np.random.default_rng(cfg.seed)
    evaluations = 0
    if start_ce is None:
        start_ce = float(fitness(start[None, :])[0])
        evaluations += 1
    walk = Walk(start, start_ce, evaluations=evaluations)
    hood = Neighbourhood(cfg.neighbors, deque(maxlen=cfg.tabu_size), cfg.mutation_rate, multi_entry_draw(n_inputs))

    def adapt(mode: str) -> None:
        factor, least_tabu = TS_DIVERSITY[mode]
        hood.size, hood.rate = cfg.neighbors * factor, cfg.mutation_rate * factor
        hood.tabu = deque(hood.tabu, maxlen=cfg.tabu_size if factor == 1 else max(factor * cfg.tabu_size, least_tabu))

    sup = Supervisor(EarlyStopper(walk.best_cost, cfg.threshold_pct, cfg.patience, cfg.check_every), monitor, adapt, log)
    sup.record({"step": 0, "best_ce": walk.best_cost, "current_ce": walk.current_cost, "mode": "none"})

    def after(it: int, evaluated: int) -> str | None:
        row = {"step": it, "best_ce": walk.best_cost, "current_ce": walk.current_cost, "mode": sup.mode}
        if not evaluated:     # every neighbour was tabu: nothing moved, nothing to check
            sup.record(row)
            return None
        sup.record(row, f"TS iter {it}: current {walk.current_cost:.5f} best {walk.best_cost:.5f} "
                        f"({evaluated} neighbours, mode {sup.mode})")
        return sup.check(it, walk.best, walk.best_cost)

    steps, reason = tabu_walk(walk, hood, fitness, cfg.iterations, rng, after)
    return SearchResult(walk.best, walk.best_cost, float(start_ce), steps, walk.evaluations, reason or "max_steps",
                        sup.history)
