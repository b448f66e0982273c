"""RAM-LM workload (seed 003): a tiered weightless language model, its connectivity optimisation
(joint GA / TS, per-cluster PC) and the seed's metrics, plus a calibrated scoring beyond the seed.

Flow of one trial (spec §9): load and tokenise; frequency order, top-k negatives, tiers; train one
pass on train; evaluate validation; optionally optimise connectivity on windowed subsets (each
strategy starting from the previous one's best, GA's final CE handed to TS) and retrain on the full
train set; evaluate validation and test overall and per tier.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, fields

import numpy as np

from workloads.data.wikitext import load_token_splits
from workloads.ramlm.encoding import bits_per_token as bits_for_vocab
from workloads.ramlm.metrics import ppl_floor, unigram_ce, unigram_log_prior
from workloads.ramlm.model import TieredRAMLM, make_memory
from workloads.ramlm.per_cluster import FITNESS_MODES, PCConfig, SurrogateProblem, per_cluster_optimise
from workloads.ramlm.search import GAConfig, OverfittingMonitor, TSConfig, genetic_algorithm, tabu_search
from workloads.ramlm.tiers import ClusterMap, format_tiers, parse_tiers, top_k, uniform_tiers

MAX_TIER_COLUMNS = 5   # per-tier metric columns t0..t4 (the seed's largest spec has five tiers)
FULL_SIZES = (2_400_000, 251_000, 288_000)   # WikiText-2 train / validation / test tokens (GPT-2 BPE)


@dataclass
class RamLMConfig:
    experiment: str = ""            # label only (the seed's experiment name)
    semantics: str = ""             # label only: "intended" or "legacy" (the 5c8f4f1 switches)
    # data
    data: str = "auto"              # auto | real | standin | synthetic
    tokenizer: str = "auto"         # auto | gpt2 | word
    word_vocab: int = 8192
    synthetic_vocab: int = 50257
    synthetic_exponent: float = 0.95
    data_seed: int = 0
    train_tokens: int = 0           # prefix lengths; 0 = the whole split
    val_tokens: int = 0
    test_tokens: int = 0
    # model
    context: int = 4
    tiers: str = ""                 # "100,15,20;400,10,12;rest,5,8"; empty = uniform neurons x bits
    neurons: int = 3
    bits: int = 8
    tier_order: str = "frequency"   # frequency (intended) | token_id (legacy bug 1)
    top_k: int = 1000               # global negatives (5c8f4f1 benchmark: 100)
    empty_value: float = 0.0        # 5c8f4f1: 0.5
    seed: int = 0                   # connectivity seed (tier i uses seed + i)
    backend: str = "native"         # native | reference
    memory_backends: str = "auto"   # auto | dense | sparse | lsh, or one per tier joined by ','
    # optimisation
    optimize: bool = False
    strategy: str = "GA,TS"         # comma list of GA, TS, PC
    ga_population: int = 20
    ga_generations: int = 50
    ga_mutation: float = 0.01
    ga_crossover: float = 0.7
    ga_elitism: int = 0             # 0 = max(2, population // 10)
    ga_tournament: int = 3
    ga_threshold_pct: float = 0.05
    ts_iterations: int = 10
    ts_neighbors: int = 30
    ts_tabu: int = 5
    ts_mutation: float = 0.001
    ts_threshold_pct: float = 0.5
    patience: int = 1
    check_every: int = 5
    opt_seed: int = 42
    opt_window: int = 200
    opt_train_windows: int = 50
    opt_eval_windows: int = 20      # the dev subset gets the same number
    opt_eval_split: str = "validation"  # validation (default) | test (as the original)
    overfit_monitor: bool = True
    grace_checks: int = 1
    windowed_pretrain: bool = False
    pc_fitness: str = "SIMPLE"
    pc_group_size: int = 1
    pc_iterative_passes: int = 1
    # scoring beyond the seed
    calibration: str = "temperature_prior"   # none | temperature | temperature_prior
    calibration_examples: int = 2000

    @classmethod
    def from_dict(cls, config: dict) -> "RamLMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"ramlm: unknown config keys {unknown}; known: {sorted(known)}")
        cfg = cls(**config)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        choices = {"data": ("auto", "real", "standin", "synthetic"), "tokenizer": ("auto", "gpt2", "word"),
                   "tier_order": ("frequency", "token_id"), "backend": ("native", "reference"),
                   "opt_eval_split": ("validation", "test"),
                   "calibration": ("none", "temperature", "temperature_prior"), "pc_fitness": FITNESS_MODES}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"ramlm: {key} must be one of {list(allowed)}, got {getattr(self, key)!r}")
        for s in self.strategies:
            if s not in ("GA", "TS", "PC"):
                raise ValueError(f"ramlm: strategy entries must be GA, TS or PC, got {s!r}")
        if self.context < 1:
            raise ValueError("ramlm: context must be >= 1")
        if not 0.0 <= self.empty_value <= 1.0:
            raise ValueError("ramlm: empty_value must lie in [0, 1]")

    @property
    def strategies(self) -> list[str]:
        return [s.strip().upper() for s in self.strategy.split(",") if s.strip()]


def sample_windows(n_tokens: int, count: int, window: int, rng: random.Random) -> list[int]:
    """Sorted window starts as the original sampled them; a contiguous prefix if the stream is short."""
    population = n_tokens - window - 10
    if population < count:
        return [i * window for i in range(max(1, n_tokens // window)) if i < count]
    return sorted(rng.sample(range(0, population), count))


def window_tokens(tokens: np.ndarray, starts: list[int], window: int) -> np.ndarray:
    return np.concatenate([tokens[s:s + window] for s in starts]) if starts else tokens[:0]


def opt_windows(cfg: RamLMConfig, splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(opt_train, opt_eval, opt_dev) token streams (spec §8.1): windows sampled with
    random.Random(opt_seed); eval and dev come from one sorted draw of twice the count, split in half."""
    rng = random.Random(cfg.opt_seed)
    eval_stream = splits.val if cfg.opt_eval_split == "validation" else splits.test
    tr_starts = sample_windows(len(splits.train), cfg.opt_train_windows, cfg.opt_window, rng)
    ev_starts = sample_windows(len(eval_stream), 2 * cfg.opt_eval_windows, cfg.opt_window, rng)
    half = len(ev_starts) // 2 if len(ev_starts) > 1 else 1
    return (window_tokens(splits.train, tr_starts, cfg.opt_window),
            window_tokens(eval_stream, ev_starts[:half], cfg.opt_window),
            window_tokens(eval_stream, ev_starts[half:] or ev_starts[:half], cfg.opt_window))


class RamLM:
    name = "ramlm"
    version = "1"

    def run(self, config: dict, ctx) -> dict:
        cfg = RamLMConfig.from_dict(dict(config))
        t_start = time.perf_counter()
        metrics: dict = {}

        # ---------------------------------------------------------------- data
        # the synthetic stream is generated at the requested split sizes (the seed's full sizes by default)
        sizes = tuple(n or d for n, d in zip((cfg.train_tokens, cfg.val_tokens, cfg.test_tokens), FULL_SIZES))
        data_key = {"workload": "ramlm-tokens", "data": cfg.data, "tokenizer": cfg.tokenizer,
                    "word_vocab": cfg.word_vocab, "synthetic_vocab": cfg.synthetic_vocab,
                    "synthetic_exponent": cfg.synthetic_exponent, "data_seed": cfg.data_seed,
                    "synthetic_sizes": list(sizes) if cfg.data == "synthetic" else None}
        splits = ctx.stage(data_key, lambda: load_token_splits(
            cfg.data, cfg.tokenizer, ctx.data_root, ctx.cache_dir, word_vocab=cfg.word_vocab, synthetic_sizes=sizes,
            synthetic_vocab=cfg.synthetic_vocab, synthetic_exponent=cfg.synthetic_exponent, seed=cfg.data_seed))
        splits = splits.truncated(cfg.train_tokens, cfg.val_tokens, cfg.test_tokens)
        v = splits.vocab_size
        bpt = bits_for_vocab(v)
        total_bits = cfg.context * bpt
        tiers = parse_tiers(cfg.tiers, v) if cfg.tiers.strip() else uniform_tiers(v, cfg.neurons, cfg.bits)
        cmap = ClusterMap.build(tiers, splits.train, cfg.tier_order)
        negatives = top_k(splits.train, v, cfg.top_k)
        backends = cfg.memory_backends.split(",") if "," in cfg.memory_backends else cfg.memory_backends
        memory = make_memory(tiers, cmap, total_bits, cfg.seed, cfg.backend, backends)
        model = TieredRAMLM(memory, cmap, cfg.context, bpt, negatives, cfg.empty_value)
        metrics.update({
            "data_source": splits.data_source, "tokenizer_name": splits.tokenizer, "vocab_size": v,
            "bits_per_token": bpt, "total_input_bits": total_bits, "tier_spec": format_tiers(tiers),
            "n_tiers": len(tiers), "n_train_tokens": len(splits.train), "n_val_tokens": len(splits.val),
            "n_test_tokens": len(splits.test), "n_neurons": int(memory.num_neurons),
            "n_connections": int(memory.connection_count), "memory_backend_kinds": ",".join(memory.backends),
            "ppl_floor": ppl_floor(v), "ppl_ceiling": float(v),
        })
        for t in tiers[:MAX_TIER_COLUMNS]:
            metrics.update({f"t{t.index}_clusters": t.count, f"t{t.index}_neurons": t.neurons, f"t{t.index}_bits": t.bits})
        ctx.log(f"ramlm: {splits.data_source} / {splits.tokenizer}, V={v}, tiers {format_tiers(tiers)}, "
                f"{memory.num_neurons} neurons, backends {memory.backends}")

        state = ctx.load_checkpoint() or {}
        if state.get("connectivity") is not None:
            memory.set_connectivity_flat(np.asarray(state["connectivity"], dtype=np.int64))
        metrics.update(state.get("metrics", {}))
        done = list(state.get("done", []))

        # ---------------------------------------------------------------- initial training
        if "initial" not in done:
            t0 = time.perf_counter()
            if cfg.optimize and cfg.windowed_pretrain:   # pretrain on the optimiser's train windows only
                model.train(opt_windows(cfg, splits)[0])
            else:
                model.train(splits.train)
            metrics["train_s"] = time.perf_counter() - t0
            metrics["written_cells_init"] = int(np.sum(memory.written_cells()))
            t0 = time.perf_counter()
            init = model.evaluate(splits.val)
            metrics["eval_val_s"] = time.perf_counter() - t0
            metrics.update({"init_val_ppl": init["ppl"], "init_val_acc_pct": 100 * init["acc"], "init_val_ce": init["ce"]})
            _check(init["ce"])
            done.append("initial")
            ctx.report(0, phase="initial", val_ppl=init["ppl"], val_acc_pct=100 * init["acc"])
            ctx.save_checkpoint({"done": done, "metrics": metrics, "connectivity": None})
            trained = True
        else:
            trained = False

        # ---------------------------------------------------------------- optimisation
        if cfg.optimize and cfg.strategies:
            if not trained:
                model.train(opt_windows(cfg, splits)[0] if cfg.windowed_pretrain else splits.train)
            self._optimise(cfg, ctx, model, splits, cmap, tiers, total_bits, metrics, done)
            t0 = time.perf_counter()
            memory.reset()
            model.train(splits.train)     # final retrain on the full train set with the best connectivity
            metrics["retrain_s"] = time.perf_counter() - t0
        elif not trained:
            model.train(splits.train)
        metrics["written_cells_final"] = int(np.sum(memory.written_cells()))

        # ---------------------------------------------------------------- final evaluation
        t0 = time.perf_counter()
        calibration = None
        if cfg.calibration != "none":
            calibration = model.fit_calibration(splits.val, unigram_log_prior(splits.train, v), cfg.calibration,
                                                cfg.calibration_examples)
            metrics.update({"cal_temperature": calibration.temperature, "cal_prior_weight": calibration.prior_weight})
            val, val_cal = model.evaluate_scored(splits.val, calibration)
            test, test_cal = model.evaluate_scored(splits.test, calibration)
        else:
            val, val_cal = model.evaluate(splits.val), None
            test, test_cal = model.evaluate(splits.test), None
        metrics["eval_final_s"] = time.perf_counter() - t0
        _check(test["ce"])
        for name, summary in (("val", val), ("test", test)):
            metrics.update({f"{name}_ppl": summary["ppl"], f"{name}_acc_pct": 100 * summary["acc"], f"{name}_ce": summary["ce"]})
            for k, tier in enumerate(summary["tiers"][:MAX_TIER_COLUMNS]):
                metrics.update({f"{name}_t{k}_ppl": tier["ppl"], f"{name}_t{k}_acc_pct": 100 * tier["acc"],
                                f"{name}_t{k}_share_pct": 100 * tier["share"]})
        for name, summary in (("val", val_cal), ("test", test_cal)):
            if summary is not None:
                metrics.update({f"{name}_ppl_cal": summary["ppl"], f"{name}_acc_cal_pct": 100 * summary["acc"],
                                f"{name}_ce_cal": summary["ce"]})
                for k, tier in enumerate(summary["tiers"][:MAX_TIER_COLUMNS]):
                    metrics[f"{name}_t{k}_ppl_cal"] = tier["ppl"]
        metrics["test_ppl_unigram"] = math.exp(unigram_ce(splits.train, splits.test[cfg.context:], v))
        metrics["val_ppl_delta_pct"] = (metrics["val_ppl"] - metrics["init_val_ppl"]) / metrics["init_val_ppl"] * 100
        if metrics["init_val_acc_pct"] > 0:
            metrics["val_acc_delta_pct"] = (metrics["val_acc_pct"] - metrics["init_val_acc_pct"]) / metrics["init_val_acc_pct"] * 100
        else:
            metrics["val_acc_delta_pct"] = float("nan")
        metrics["total_s"] = time.perf_counter() - t_start
        ctx.report(1, phase="final", val_ppl=val["ppl"], test_ppl=test["ppl"], test_acc_pct=100 * test["acc"])
        return metrics

    # -------------------------------------------------------------------- optimisation phase
    def _optimise(self, cfg, ctx, model, splits, cmap, tiers, total_bits, metrics, done) -> None:
        memory = model.memory
        t0 = time.perf_counter()
        opt_train, opt_eval, opt_dev = opt_windows(cfg, splits)
        tr_bits, tr_tg = model.examples(opt_train).all()
        ev_bits, ev_tg = model.examples(opt_eval).all()
        dv_bits, dv_tg = model.examples(opt_dev).all()
        negatives = model.negatives if model.negatives.size else None

        # baselines with the current model
        base_eval = model.evaluate(opt_eval)["ce"]
        base_dev = model.evaluate(opt_dev)["ce"]
        metrics.update({"opt_train_examples": len(tr_tg), "opt_eval_examples": len(ev_tg),
                        "opt_baseline_eval_ce": base_eval, "opt_baseline_dev_ce": base_dev})
        baseline_ratio = base_dev / base_eval if base_eval > 0 else 1.0

        def fitness(genomes: np.ndarray) -> np.ndarray:
            return np.asarray(memory.evaluate_candidates(np.ascontiguousarray(genomes, dtype=np.int64), tr_bits, tr_tg,
                                                         negatives, ev_bits, ev_tg, cfg.empty_value, True))

        def dev_ce(genome: np.ndarray) -> float:
            return float(memory.evaluate_candidates(np.ascontiguousarray(genome[None], dtype=np.int64), tr_bits, tr_tg,
                                                    negatives, dv_bits, dv_tg, cfg.empty_value, True)[0])

        genome = memory.connectivity_flat()
        neuron_offsets = np.concatenate([[0], np.cumsum(np.concatenate(
            [np.full(t.total_neurons, t.bits, dtype=np.int64) for t in tiers]))[:-1]])
        chained_ce = metrics.get("opt_chained_ce")
        step = 1
        for name in cfg.strategies:
            if f"opt:{name}" in done:
                continue
            monitor = OverfittingMonitor(dev_ce, baseline_ratio, cfg.grace_checks) if cfg.overfit_monitor else None
            key = name.lower()
            if name == "GA":
                ga = GAConfig(cfg.ga_population, cfg.ga_generations, cfg.ga_mutation, cfg.ga_crossover,
                              cfg.ga_elitism or None, cfg.ga_tournament, cfg.ga_threshold_pct, cfg.patience,
                              cfg.check_every, cfg.opt_seed)
                res = genetic_algorithm(genome, fitness, neuron_offsets, total_bits, ga, chained_ce, monitor, ctx.log)
            elif name == "TS":
                ts = TSConfig(cfg.ts_iterations, cfg.ts_neighbors, cfg.ts_tabu, cfg.ts_mutation, cfg.ts_threshold_pct,
                              cfg.patience, cfg.check_every, cfg.opt_seed)
                res = tabu_search(genome, fitness, total_bits, ts, chained_ce, monitor, ctx.log)
            else:  # PC: per-cluster on the surrogate, then measured with the real memory
                problem = SurrogateProblem(tr_bits, cmap.to_logical(tr_tg), ev_bits, cmap.to_logical(ev_tg), cmap.vocab_size,
                                           seed=cfg.opt_seed)
                memory.set_connectivity_flat(genome)
                conn = [memory.connectivity(t.index) for t in tiers]
                pc = PCConfig(cfg.pc_fitness, cfg.ga_generations, cfg.ga_population, cfg.ts_iterations, cfg.ts_neighbors,
                              5, cfg.ga_mutation, cfg.pc_group_size, cfg.pc_iterative_passes, cfg.opt_seed)
                new_conn, stats = per_cluster_optimise(tiers, conn, problem, total_bits, pc, ctx.log)
                new_genome = np.concatenate([c.reshape(-1) for c in new_conn])
                start_ce = chained_ce if chained_ce is not None else float(fitness(genome[None])[0])
                end_ce = float(fitness(new_genome[None])[0])
                metrics.update({"pc_clusters_optimised": stats["clusters_optimised"],
                                "pc_clusters_improved": stats["clusters_improved"]})
                res = type("PCResult", (), {"genome": new_genome, "ce": end_ce, "start_ce": start_ce, "steps": 1,
                                            "evaluations": 0, "stop_reason": "done", "history": []})()
            genome, chained_ce = res.genome, res.ce
            metrics.update({f"{key}_start_ce": res.start_ce, f"{key}_final_ce": res.ce, f"{key}_steps": res.steps,
                            f"{key}_evaluations": res.evaluations, f"{key}_stop": res.stop_reason})
            if monitor is not None and monitor.history:
                metrics[f"{key}_last_overfit_delta_pct"] = monitor.history[-1]["delta_pct"]
            for h in res.history:
                ctx.report(step, phase=key, best_ce=h["best_ce"])
                step += 1
            done.append(f"opt:{name}")
            metrics["opt_chained_ce"] = chained_ce
            ctx.save_checkpoint({"done": list(done), "metrics": dict(metrics), "connectivity": genome})
        memory.set_connectivity_flat(genome)
        metrics["opt_s"] = metrics.get("opt_s", 0.0) + time.perf_counter() - t0


def _check(ce: float) -> None:
    from workloads.base import check_finite  # noqa: PLC0415
    check_finite(0, ce=ce)


__all__ = ["RamLM", "RamLMConfig"]
