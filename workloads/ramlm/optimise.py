"""The optimisation phase of a RAM-LM trial: sample the optimiser's windows, then run the chosen
strategies in order (GA, TS, PC), each starting from the previous one's best connectivity and CE,
with a checkpoint after each. See docs/studies/ramlm.md, 'Connectivity optimisation'
and 'Optimisation windows'.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from workloads.ramlm.model import TieredRAMLM
from workloads.ramlm.params import RamLMParams
from workloads.ramlm.per_cluster import PCConfig, per_cluster_optimise
from workloads.ramlm.search import GAConfig, SearchResult, TSConfig, genetic_algorithm, tabu_search
from workloads.ramlm.stopping import OverfittingMonitor
from workloads.ramlm.surrogate import SurrogateProblem
from workloads.ramlm.tiers import ClusterMap, Tier


# ----------------------------------------------------------------------------- the optimiser's data
def sample_windows(n_tokens: int, count: int, window: int, rng: random.Random) -> list[int]:
    """Sorted window starts as the original sampled them; a contiguous prefix if the stream is short."""
    population = n_tokens - window - 10
    if population < count:
        return [i * window for i in range(max(1, n_tokens // window)) if i < count]
    return sorted(rng.sample(range(0, population), count))


def window_tokens(tokens: np.ndarray, starts: list[int], window: int) -> np.ndarray:
    return np.concatenate([tokens[s:s + window] for s in starts]) if starts else tokens[:0]


def opt_windows(cfg: RamLMParams, splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(opt_train, opt_eval, opt_dev) token streams: windows sampled with random.Random(opt_seed);
    eval and dev come from one sorted draw of twice the count, split in half."""
    rng = random.Random(cfg.opt_seed)
    eval_stream = splits.val if cfg.opt_eval_split == "validation" else splits.test
    tr_starts = sample_windows(len(splits.train), cfg.opt_train_windows, cfg.opt_window, rng)
    ev_starts = sample_windows(len(eval_stream), 2 * cfg.opt_eval_windows, cfg.opt_window, rng)
    half = len(ev_starts) // 2 if len(ev_starts) > 1 else 1
    return (window_tokens(splits.train, tr_starts, cfg.opt_window),
            window_tokens(eval_stream, ev_starts[:half], cfg.opt_window),
            window_tokens(eval_stream, ev_starts[half:] or ev_starts[:half], cfg.opt_window))


@dataclass
class Candidates:
    """Scores candidate connectivities: each fills a fresh memory from the train windows and is
    measured on the eval windows (fitness) or the dev windows (overfitting check)."""

    model: TieredRAMLM
    empty_value: float
    train: tuple[np.ndarray, np.ndarray]     # (input bits, targets)
    eval: tuple[np.ndarray, np.ndarray]
    dev: tuple[np.ndarray, np.ndarray]

    @classmethod
    def from_windows(cls, model: TieredRAMLM, cfg: RamLMParams, windows) -> "Candidates":
        train, eval_, dev = (model.examples(w).all() for w in windows)
        return cls(model, cfg.empty_value, train, eval_, dev)

    def _ce(self, genomes: np.ndarray, bits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        negatives = self.model.negatives if self.model.negatives.size else None
        return np.asarray(self.model.memory.evaluate_candidates(
            np.ascontiguousarray(genomes, dtype=np.int64), *self.train, negatives, bits, targets,
            self.empty_value, True))

    def eval_ce(self, genomes: np.ndarray) -> np.ndarray:
        return self._ce(genomes, *self.eval)

    def dev_ce(self, genome: np.ndarray) -> float:
        return float(self._ce(genome[None], *self.dev)[0])


# ----------------------------------------------------------------------------- the strategies
@dataclass
class Optimisation:
    """What every strategy reads: the trial's settings, the model and its tiers, the scorer."""

    cfg: RamLMParams
    model: TieredRAMLM
    cmap: ClusterMap
    tiers: list[Tier]
    total_bits: int
    candidates: Candidates
    log: Callable[[str], None]


def run_ga(opt: Optimisation, genome: np.ndarray, start_ce: float | None, monitor, metrics: dict) -> SearchResult:
    cfg = opt.cfg
    ga = GAConfig(cfg.ga_population, cfg.ga_generations, cfg.ga_mutation, cfg.ga_crossover, cfg.ga_elitism or None,
                  cfg.ga_tournament, cfg.ga_threshold_pct, cfg.patience, cfg.check_every, cfg.opt_seed)
    bits_per_neuron = np.concatenate([np.full(t.total_neurons, t.bits, dtype=np.int64) for t in opt.tiers])
    neuron_offsets = np.concatenate([[0], np.cumsum(bits_per_neuron)[:-1]])
    return genetic_algorithm(genome, opt.candidates.eval_ce, neuron_offsets, opt.total_bits, ga, start_ce, monitor,
                             opt.log)


def run_ts(opt: Optimisation, genome: np.ndarray, start_ce: float | None, monitor, metrics: dict) -> SearchResult:
    cfg = opt.cfg
    ts = TSConfig(cfg.ts_iterations, cfg.ts_neighbors, cfg.ts_tabu, cfg.ts_mutation, cfg.ts_threshold_pct,
                  cfg.patience, cfg.check_every, cfg.opt_seed)
    return tabu_search(genome, opt.candidates.eval_ce, opt.total_bits, ts, start_ce, monitor, opt.log)


def run_pc(opt: Optimisation, genome: np.ndarray, start_ce: float | None, monitor, metrics: dict) -> SearchResult:
    """Per-cluster search on the surrogate, then measured with the real memory like GA and TS."""
    cfg, cmap, memory = opt.cfg, opt.cmap, opt.model.memory
    (tr_bits, tr_tg), (ev_bits, ev_tg) = opt.candidates.train, opt.candidates.eval
    problem = SurrogateProblem(tr_bits, cmap.to_logical(tr_tg), ev_bits, cmap.to_logical(ev_tg), cmap.vocab_size,
                               seed=cfg.opt_seed)
    memory.set_connectivity_flat(genome)
    conn = [memory.connectivity(t.index) for t in opt.tiers]
    pc = PCConfig(cfg.pc_fitness, cfg.ga_generations, cfg.ga_population, cfg.ts_iterations, cfg.ts_neighbors,
                  5, cfg.ga_mutation, cfg.pc_group_size, cfg.pc_iterative_passes, cfg.opt_seed)
    new_conn, stats = per_cluster_optimise(opt.tiers, conn, problem, opt.total_bits, pc, opt.log)
    new_genome = np.concatenate([c.reshape(-1) for c in new_conn])
    start_ce = start_ce if start_ce is not None else float(opt.candidates.eval_ce(genome[None])[0])
    end_ce = float(opt.candidates.eval_ce(new_genome[None])[0])
    metrics.update({"pc_clusters_optimised": stats["clusters_optimised"],
                    "pc_clusters_improved": stats["clusters_improved"]})
    return SearchResult(new_genome, end_ce, start_ce, 1, stats["evaluations"], "done", [])


STRATEGY_RUNNERS = {"GA": run_ga, "TS": run_ts, "PC": run_pc}


# ----------------------------------------------------------------------------- the phase
def measure_baselines(model: TieredRAMLM, windows, metrics: dict, candidates: Candidates) -> float:
    """CE of the trained model on the eval and dev windows; returns their ratio, the overfitting
    monitor's reference."""
    base_eval = model.evaluate(windows[1])["ce"]
    base_dev = model.evaluate(windows[2])["ce"]
    metrics.update({"opt_train_examples": len(candidates.train[1]), "opt_eval_examples": len(candidates.eval[1]),
                    "opt_baseline_eval_ce": base_eval, "opt_baseline_dev_ce": base_dev})
    return base_dev / base_eval if base_eval > 0 else 1.0


def record_result(metrics: dict, key: str, res: SearchResult, monitor: OverfittingMonitor | None) -> None:
    metrics.update({f"{key}_start_ce": res.start_ce, f"{key}_final_ce": res.ce, f"{key}_steps": res.steps,
                    f"{key}_evaluations": res.evaluations, f"{key}_stop": res.stop_reason})
    if monitor is not None and monitor.history:
        metrics[f"{key}_last_overfit_delta_pct"] = monitor.history[-1]["delta_pct"]


def optimise(cfg: RamLMParams, ctx, model: TieredRAMLM, splits, cmap: ClusterMap, tiers: list[Tier],
             total_bits: int, metrics: dict, done: list[str]) -> None:
    """Run the strategies not yet in ``done`` and leave the best connectivity in the model's memory."""
    t0 = time.perf_counter()
    windows = opt_windows(cfg, splits)
    candidates = Candidates.from_windows(model, cfg, windows)
    baseline_ratio = measure_baselines(model, windows, metrics, candidates)
    opt = Optimisation(cfg, model, cmap, tiers, total_bits, candidates, ctx.log)
    genome = model.memory.connectivity_flat()
    chained_ce = metrics.get("opt_chained_ce")
    step = 1
    for name in cfg.strategies:
        if f"opt:{name}" in done:
            continue
        monitor = OverfittingMonitor(candidates.dev_ce, baseline_ratio, cfg.grace_checks) if cfg.overfit_monitor else None
        res = STRATEGY_RUNNERS[name](opt, genome, chained_ce, monitor, metrics)
        genome, chained_ce = res.genome, res.ce
        record_result(metrics, name.lower(), res, monitor)
        for h in res.history:
            ctx.report(step, phase=name.lower(), best_ce=h["best_ce"])
            step += 1
        done.append(f"opt:{name}")
        metrics["opt_chained_ce"] = chained_ce
        ctx.save_checkpoint({"done": list(done), "metrics": dict(metrics), "connectivity": genome})
    model.memory.set_connectivity_flat(genome)
    metrics["opt_s"] = metrics.get("opt_s", 0.0) + time.perf_counter() - t0
