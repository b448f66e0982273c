"""Per-cluster (PC) connectivity optimisation: each cluster's neurons (or a group of clusters'
neurons) searched on the surrogate of surrogate.py by the GA then the TS of engines.py. See
docs/studies/ramlm.md, 'Per-cluster optimisation'.

Tiers are visited in order, each against a baseline of every cluster's current votes; later
tiers and later passes get smaller budgets. A cluster keeps its connectivity unless the search
found a strictly fitter one.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from workloads.ramlm.engines import Breeding, Neighbourhood, Population, Walk, evolve, tabu_walk
from workloads.ramlm.surrogate import FITNESS_MODES, ClusterFitness, SurrogateProblem
from workloads.ramlm.tiers import Tier

__all__ = ["FITNESS_MODES", "PCConfig", "per_cluster_optimise", "optimise_unit"]


@dataclass
class PCConfig:
    fitness: str = "SIMPLE"
    generations: int = 20
    population: int = 10
    ts_iterations: int = 5
    ts_neighbors: int = 30
    tabu_tenure: int = 5
    mutation_rate: float = 0.01
    group_size: int = 10             # tier 0's groups (the original's default); tier 1 half of it; 1 = alone
    iterative_passes: int = 1
    seed: int = 42


# ----------------------------------------------------------------------------- GA and TS operators
def member_crossover(p1: np.ndarray, p2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A group's child takes each member cluster's neurons whole from one parent or the other."""
    take = rng.random(len(p1)) < 0.5
    return np.where(take[:, None, None], p1, p2)


def neuron_cut_crossover(p1: np.ndarray, p2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A single cluster's child: one cut at a neuron boundary."""
    n_neurons = p1.shape[1]
    cut = int(rng.integers(1, n_neurons)) if n_neurons > 1 else 0
    return np.concatenate([p1[:, :cut], p2[:, cut:]], axis=1)


def entry_mutation(n_inputs: int):
    """Each entry independently replaced by a random input bit with probability ``rate``."""
    def mutate(child: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
        mask = rng.random(child.shape) < rate
        return np.where(mask, rng.integers(0, n_inputs, size=child.shape), child)
    return mutate


def single_entry_draw(n_inputs: int):
    """A neighbour changes one entry to a random input bit."""
    def draw(current: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pos = int(rng.integers(current.size))
        return np.array([pos]), np.array([int(rng.integers(n_inputs))])
    return draw


def optimise_unit(fit_fns: list, start: np.ndarray, n_inputs: int, gens: int, pop: int, ts_iters: int,
                  cfg: PCConfig, rng: np.random.Generator) -> tuple[np.ndarray, float, float, int]:
    """GA then TS over a unit of m clusters, genome [m, n, b]; fitness = mean over members, and the
    engines minimise its negative. Returns (best genome, its fitness, start fitness, candidate
    connectivities evaluated)."""
    def cost(genomes: np.ndarray) -> np.ndarray:  # [P, m, n, b] -> [P]
        return -np.mean([f(genomes[:, i]) for i, f in enumerate(fit_fns)], axis=0)

    if pop > 1:   # the start and random connectivities
        first = np.concatenate([start[None], rng.integers(0, n_inputs, size=(pop - 1,) + start.shape)])
    else:
        first = start[None]
    population = Population(first, cost(first), evaluations=len(first))
    start_cost = float(population.costs[0])
    crossover = member_crossover if len(fit_fns) > 1 else neuron_cut_crossover
    breeding = Breeding(pop, max(1, pop // 10), 2, cfg.mutation_rate, crossover, entry_mutation(n_inputs))
    evolve(population, breeding, cost, gens, rng)

    walk = Walk(population.best, population.best_cost)
    hood = Neighbourhood(cfg.ts_neighbors, deque(maxlen=cfg.tabu_tenure), 0.0, single_entry_draw(n_inputs))
    tabu_walk(walk, hood, cost, ts_iters, rng)
    return walk.best, -walk.best_cost, -start_cost, population.evaluations + walk.evaluations


# ----------------------------------------------------------------------------- clusters, tiers, passes
class ClusterConnectivity:
    """The per-tier connectivity arrays (copies), read and written one cluster at a time."""

    def __init__(self, tiers: list[Tier], connectivity: list[np.ndarray]):
        self.tiers = tiers
        self.arrays = [c.copy() for c in connectivity]

    def of(self, logical: int) -> np.ndarray:
        """The [neurons, bits] rows of the cluster at a logical position (a view: writable)."""
        t = next(t for t in self.tiers if t.start <= logical < t.end)
        k = logical - t.start
        return self.arrays[t.index][k * t.neurons:(k + 1) * t.neurons]


MAX_GROUPED_TIER = 500   # the original grouped a tier only if it had at most this many clusters


def group_size_of(tier: Tier, n_tiers: int, group_size: int) -> int:
    """Clusters per unit, as the original's tiered PC chose them: ``group_size`` in tier 0, half of
    it (at least 2) in tier 1, single clusters below and in any tier of more than 500 clusters.
    ``group_size`` 1 means no groups anywhere (the original's 0). The uniform model (one tier) is
    grouped like tier 0 whatever its size: the seed's PC table has a uniform run in groups of 50,
    although the 5c8f4f1 code optimised the uniform model's clusters one by one."""
    if group_size <= 1 or tier.index > 1:
        return 1
    if n_tiers > 1 and tier.count > MAX_GROUPED_TIER:
        return 1
    return group_size if tier.index == 0 else max(2, group_size // 2)


def tier_budget(tier: Tier, n_tiers: int, gens: int, ts_iters: int, group_size: int) -> tuple[int, int, int]:
    """(GA generations, TS iterations, clusters per unit) for one tier: a third per tier down, at
    least 5; the unit size from :func:`group_size_of`."""
    if n_tiers > 1:
        gens, ts_iters = max(5, int(gens / 3 ** tier.index)), max(5, int(ts_iters / 3 ** tier.index))
    return gens, ts_iters, group_size_of(tier, n_tiers, group_size)


def optimise_tier(tier: Tier, conn: ClusterConnectivity, problem: SurrogateProblem, n_inputs: int, cfg: PCConfig,
                  budget: tuple[int, int, int], pass_index: int, stats: dict) -> int:
    """One tier's active clusters, unit by unit, against the baseline of every cluster's current
    votes. Returns the number of active clusters."""
    gens, ts_iters, group = budget
    voters = {c: conn.of(c) for t in conn.tiers for c in range(t.start, t.end) if c in problem.positives}
    base = problem.baseline(voters)
    cache = problem.scoring_cache(base)
    active = [c for c in range(tier.start, tier.end) if c in problem.positives]
    for u in range(0, len(active), group):
        members = active[u:u + group]
        rng = np.random.default_rng(cfg.seed + pass_index * 1_000_003 + members[0])
        fns = [ClusterFitness(problem, base, cache, cfg.fitness, c) for c in members]
        start = np.stack([conn.of(c) for c in members])
        best, best_fit, start_fit, evaluated = optimise_unit(fns, start, n_inputs, gens, cfg.population, ts_iters,
                                                             cfg, rng)
        stats["clusters_optimised"] += len(members)
        stats["evaluations"] += evaluated
        if best_fit > start_fit:   # keep the current connectivity unless strictly better
            stats["clusters_improved"] += len(members)
            stats["fitness_gain_sum"] += best_fit - start_fit
            for c, g in zip(members, best):
                conn.of(c)[:] = g
    return len(active)


def per_cluster_optimise(tiers: list[Tier], connectivity: list[np.ndarray], problem: SurrogateProblem,
                         n_inputs: int, cfg: PCConfig, log=None) -> tuple[list[np.ndarray], dict]:
    """Optimise every active cluster's neurons; returns new per-tier connectivity and stats."""
    conn = ClusterConnectivity(tiers, connectivity)
    stats = {"clusters_optimised": 0, "clusters_improved": 0, "fitness_gain_sum": 0.0, "evaluations": 0}
    gens, ts_iters = cfg.generations, cfg.ts_iterations
    for p in range(cfg.iterative_passes):
        for tier in tiers:
            budget = tier_budget(tier, len(tiers), gens, ts_iters, cfg.group_size)
            n_active = optimise_tier(tier, conn, problem, n_inputs, cfg, budget, p, stats)
            if log:
                log(f"PC pass {p} tier {tier.index}: {n_active} active clusters, "
                    f"{stats['clusters_improved']} improved so far")
        gens, ts_iters = max(1, gens // 2), max(1, ts_iters // 2)   # later passes refine with less
    return conn.arrays, stats
