"""GA / TS / early stopping / overfitting monitor on a tiny problem with a known optimum."""
import math

import numpy as np

from workloads.ramlm.search import GAConfig, TSConfig, genetic_algorithm, mutate, tabu_search
from workloads.ramlm.stopping import EarlyStopper, OverfittingMonitor

N_INPUTS = 16
TARGET = np.random.default_rng(3).integers(0, N_INPUTS, size=40)


def mismatch_ce(genomes: np.ndarray) -> np.ndarray:
    """A CE-like fitness: lower when more entries equal the hidden optimum."""
    return 5.0 + (genomes != TARGET).mean(axis=1)


def test_mutate_rate_and_range():
    rng = np.random.default_rng(0)
    g = np.zeros(100_000, dtype=np.int64)
    m = mutate(g, 0.01, N_INPUTS, rng)
    changed = (m != g).mean()
    assert 0.008 < changed < 0.0101        # some draws repeat the old value
    assert m.min() >= 0 and m.max() < N_INPUTS


def test_ga_improves_and_keeps_elite():
    start = np.random.default_rng(9).integers(0, N_INPUTS, size=40)
    cfg = GAConfig(population=12, generations=30, mutation_rate=0.05, patience=10)
    offsets = np.arange(0, 40, 4)          # 10 "neurons" of 4 connections
    res = genetic_algorithm(start, mismatch_ce, offsets, N_INPUTS, cfg)
    assert res.ce < res.start_ce - 0.1
    assert res.ce == mismatch_ce(res.genome[None])[0]
    best = [h["best_ce"] for h in res.history]
    assert all(b2 <= b1 for b1, b2 in zip(best, best[1:]))   # elitism: never worse
    assert res.evaluations == 11 + 30 * (12 - 2) + 1          # start evaluated once, children only


def test_ts_improves_from_given_start_ce_without_reevaluating():
    start = np.random.default_rng(9).integers(0, N_INPUTS, size=40)
    start_ce = float(mismatch_ce(start[None])[0])
    cfg = TSConfig(iterations=40, neighbors=20, mutation_rate=0.02, patience=10)
    res = tabu_search(start, mismatch_ce, N_INPUTS, cfg, start_ce=start_ce)
    assert res.start_ce == start_ce
    assert res.ce < start_ce - 0.1
    assert res.evaluations <= 40 * 20


def test_early_stopper_counts_failed_checks_against_patience():
    st = EarlyStopper(start_ce=10.0, threshold_pct=0.5, patience=1, check_every=5)
    assert not st.due(3) and st.due(5)
    assert not st.check(10.0 - 0.01)       # exp improvement ~1%: success, resets
    assert st.failures == 0
    assert not st.check(10.0 - 0.01)       # no further improvement: 1 failure (= patience)
    assert st.check(10.0 - 0.01)           # 2 failures > patience 1: stop


def test_overfitting_monitor_modes_and_grace():
    deltas = iter([5.0, 2.0, 0.5, -0.5, -2.0, 5.0])   # percent above the baseline ratio
    mon = OverfittingMonitor(dev_ce=lambda g: 1.0 + next(deltas) / 100.0, baseline_ratio=1.0, grace_checks=1)
    g = np.zeros(1)
    assert not mon.check(g, 1.0) and mon.mode == "severe"   # critical in grace period -> severe
    assert not mon.check(g, 1.0) and mon.mode == "severe"   # > 1%
    assert not mon.check(g, 1.0) and mon.mode == "mild"     # > 0%
    assert not mon.check(g, 1.0) and mon.mode == "mild"     # hysteresis band keeps the mode
    assert not mon.check(g, 1.0) and mon.mode == "none"     # <= -1% leaves diversity
    assert mon.check(g, 1.0)                                # critical after the grace period: stop
    assert [round(h["delta_pct"], 6) for h in mon.history] == [5.0, 2.0, 0.5, -0.5, -2.0, 5.0]


def test_ga_diversity_mode_grows_population():
    start = np.zeros(40, dtype=np.int64)
    mon = OverfittingMonitor(dev_ce=lambda g: 100.0, baseline_ratio=1.0, grace_checks=100)  # always critical in grace
    res = genetic_algorithm(start, mismatch_ce, np.arange(0, 40, 4), N_INPUTS,
                            GAConfig(population=10, generations=10, patience=10), monitor=mon)
    assert mon.mode == "severe"
    assert res.history[-1]["population"] == 20 and res.history[-1]["mode"] == "severe"
    assert math.isfinite(res.ce)
