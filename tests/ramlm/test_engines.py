"""The GA and TS engines that the tier-level and the per-cluster searches share."""
from collections import deque

import numpy as np

from workloads.ramlm.engines import Breeding, Neighbourhood, Population, Walk, evolve, tabu_walk

TARGET = np.arange(12) % 5


def distance(genomes: np.ndarray) -> np.ndarray:
    return (genomes != TARGET).sum(axis=1).astype(np.float64)


def test_evolve_keeps_the_best_and_stops_when_asked():
    rng = np.random.default_rng(0)
    first = rng.integers(0, 5, size=(6, 12))
    pop = Population(first, distance(first))
    start_best = pop.best_cost
    breeding = Breeding(6, 1, 2, 0.2, lambda a, b, r: np.concatenate([a[:6], b[6:]]),
                        lambda c, rate, r: np.where(r.random(c.shape) < rate, r.integers(0, 5, c.shape), c))
    seen = []
    steps, reason = evolve(pop, breeding, distance, 50, rng,
                           lambda gen: seen.append(pop.best_cost) or ("enough" if gen == 7 else None))
    assert (steps, reason) == (7, "enough")
    assert all(b <= a for a, b in zip([start_best] + seen, seen))     # one elite: never worse
    assert pop.evaluations == 7 * 5 and len(pop.genomes) == 6
    assert distance(pop.best[None])[0] == pop.best_cost


def test_tabu_walk_always_moves_and_drops_tabu_neighbours():
    rng = np.random.default_rng(1)
    start = np.zeros(12, dtype=np.int64)
    # every neighbour sets entry 0 to 3: once that move is remembered, setting entry 0 away from 3 is tabu
    hood = Neighbourhood(4, deque(maxlen=3), 0.0, lambda cur, rate, r: (np.array([0]), np.array([3 - cur[0]])))
    walk = Walk(start, float(distance(start[None])[0]))
    evaluated = []
    steps, reason = tabu_walk(walk, hood, distance, 3, rng, lambda it, n: evaluated.append(n))
    assert (steps, reason) == (3, None)
    assert evaluated == [4, 0, 0]          # after the first move every neighbour would undo it
    assert walk.current[0] == 3 and walk.evaluations == 4
    assert walk.best_cost == min(distance(start[None])[0], walk.current_cost)
