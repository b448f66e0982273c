"""The genetic algorithm and the tabu search, written once for both connectivity searches: the
tier-level search over the whole model (search.py) and the per-cluster search (per_cluster.py).
See docs/studies/ramlm.md, 'Genetic algorithm' and 'Tabu search'.

Both engines minimise a cost computed for a batch of genomes at once (the tier-level search's CE,
the per-cluster search's negated fitness). What differs between the two searches is passed in:
how a child is bred and mutated, how a neighbour is drawn, and what happens after each step
(history, early stopping, diversity). The order of random draws is fixed here, so a search with
the same seed gives the same genomes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

BatchCost = Callable[[np.ndarray], np.ndarray]   # [K, ...] genomes -> [K] costs, lower is better
Rng = np.random.Generator


# ----------------------------------------------------------------------------- genetic algorithm
@dataclass
class Breeding:
    """How the GA makes the next generation. The tier-level search changes ``size`` and ``rate``
    when its diversity mode changes."""

    size: int            # genomes per generation
    elite: int           # best genomes carried over unchanged
    tournament: int      # genomes drawn for each parent; the cheapest one is the parent
    rate: float          # mutation rate handed to ``mutate``
    crossover: Callable[[np.ndarray, np.ndarray, Rng], np.ndarray]
    mutate: Callable[[np.ndarray, float, Rng], np.ndarray]


class Population:
    """GA genomes with their costs, the best genome seen so far and the evaluations spent."""

    def __init__(self, genomes: np.ndarray, costs: np.ndarray, evaluations: int = 0):
        self.genomes, self.costs, self.evaluations = genomes, costs, evaluations
        i = int(np.argmin(costs))
        self.best, self.best_cost = genomes[i].copy(), float(costs[i])

    def parent(self, tournament: int, rng: Rng) -> np.ndarray:
        k = min(tournament, len(self.genomes))
        picks = rng.choice(len(self.genomes), size=k, replace=False)
        return self.genomes[int(picks[np.argmin(self.costs[picks])])]

    def next_generation(self, breeding: Breeding, cost: BatchCost, rng: Rng) -> None:
        """The elite survive; every other place goes to a mutated child of two tournament winners."""
        keep = np.argsort(self.costs, kind="stable")[:min(breeding.elite, breeding.size)]
        children = []
        for _ in range(breeding.size - len(keep)):
            p1, p2 = self.parent(breeding.tournament, rng), self.parent(breeding.tournament, rng)
            children.append(breeding.mutate(breeding.crossover(p1, p2, rng), breeding.rate, rng))
        new = np.stack(children) if children else self.genomes[:0]
        new_costs = cost(new) if len(new) else np.empty(0)
        self.evaluations += len(new)
        self.genomes = np.concatenate([self.genomes[keep], new])
        self.costs = np.concatenate([self.costs[keep], new_costs])
        i = int(np.argmin(self.costs))
        if self.costs[i] < self.best_cost:
            self.best, self.best_cost = self.genomes[i].copy(), float(self.costs[i])

    def grow(self, genomes: np.ndarray, cost: BatchCost) -> None:
        costs = cost(genomes)
        self.evaluations += len(genomes)
        self.genomes, self.costs = np.concatenate([self.genomes, genomes]), np.concatenate([self.costs, costs])

    def shrink(self, size: int) -> None:
        keep = np.argsort(self.costs, kind="stable")[:size]
        self.genomes, self.costs = self.genomes[keep], self.costs[keep]


def evolve(population: Population, breeding: Breeding, cost: BatchCost, generations: int, rng: Rng,
           after: Callable[[int], str | None] | None = None) -> tuple[int, str | None]:
    """Up to ``generations`` generations. ``after(generation)`` may change ``breeding`` or the
    population and returns a reason to stop, or None. Returns (generations run, stop reason)."""
    for generation in range(1, generations + 1):
        population.next_generation(breeding, cost, rng)
        if after is not None and (reason := after(generation)) is not None:
            return generation, reason
    return generations, None


# ----------------------------------------------------------------------------- tabu search
@dataclass
class Neighbourhood:
    """How the TS draws neighbours. ``draw(current, rate, rng)`` gives the flat indices to change and
    their new values; the last of them is the move the tabu list remembers as (index, old, new).
    A neighbour is tabu when it changes an index away from the value a remembered move set."""

    size: int            # neighbours drawn per step (tabu ones are dropped, not redrawn)
    tabu: deque
    rate: float
    draw: Callable[[np.ndarray, float, Rng], tuple[np.ndarray, np.ndarray]]

    def neighbours(self, current: np.ndarray, rng: Rng) -> tuple[list[np.ndarray], list[tuple[int, int, int]]]:
        candidates, moves = [], []
        for _ in range(self.size):
            idx, values = self.draw(current, self.rate, rng)
            move = (int(idx[-1]), int(current.reshape(-1)[idx[-1]]), int(values[-1]))
            if any(move[0] == t_idx and move[1] == t_new for t_idx, _, t_new in self.tabu):
                continue
            neighbour = current.copy()
            neighbour.reshape(-1)[idx] = values
            candidates.append(neighbour)
            moves.append(move)
        return candidates, moves


@dataclass
class Walk:
    """Where the TS stands and the best genome it has seen."""

    current: np.ndarray
    current_cost: float
    best: np.ndarray = field(init=False)
    best_cost: float = field(init=False)
    evaluations: int = 0

    def __post_init__(self):
        self.current, self.current_cost = self.current.copy(), float(self.current_cost)
        self.best, self.best_cost = self.current.copy(), self.current_cost


def tabu_walk(walk: Walk, hood: Neighbourhood, cost: BatchCost, iterations: int, rng: Rng,
              after: Callable[[int, int], str | None] | None = None) -> tuple[int, str | None]:
    """Up to ``iterations`` steps, each moving to the cheapest neighbour even when it is worse.
    ``after(step, neighbours evaluated)`` may change ``hood`` and returns a reason to stop, or None.
    Returns (steps run, stop reason)."""
    for step in range(1, iterations + 1):
        candidates, moves = hood.neighbours(walk.current, rng)
        if candidates:
            costs = cost(np.stack(candidates))
            walk.evaluations += len(candidates)
            i = int(np.argmin(costs))
            walk.current, walk.current_cost = candidates[i], float(costs[i])
            hood.tabu.append(moves[i])
            if walk.current_cost < walk.best_cost:
                walk.best, walk.best_cost = walk.current.copy(), walk.current_cost
        if after is not None and (reason := after(step, len(candidates))) is not None:
            return step, reason
    return iterations, None
