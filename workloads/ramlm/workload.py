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
from typing import Literal

import numpy as np
from pydantic import create_model, field_validator, model_validator

from orchestrator import params
from orchestrator.params import knob, metric, param
from workloads.data.wikitext import load_token_splits
from workloads.ramlm.encoding import bits_per_token as bits_for_vocab
from workloads.ramlm.metrics import ppl_floor, unigram_ce, unigram_log_prior
from workloads.ramlm.model import TieredRAMLM, make_memory
from workloads.ramlm.per_cluster import PCConfig, SurrogateProblem, per_cluster_optimise
from workloads.ramlm.search import GAConfig, OverfittingMonitor, TSConfig, genetic_algorithm, tabu_search
from workloads.ramlm.tiers import (MAX_BITS, ClusterMap, TierSpecError, format_tiers, normalise_tier_spec,
                                   parse_tier_fields, parse_tiers, top_k, uniform_tiers)

MAX_TIER_COLUMNS = 5   # per-tier metric columns t0..t4 (the seed's largest spec has five tiers)
FULL_SIZES = (2_400_000, 251_000, 288_000)   # WikiText-2 train / validation / test tokens (GPT-2 BPE)

STRATEGIES = ("GA", "TS", "PC")
MEMORY_BACKENDS = ("auto", "dense", "sparse", "lsh")
MAX_UNFOLDED_BITS = 30   # dense and sparse memories address at most 30 bits (native tiers.rs); lsh folds


def parse_strategy(text: str) -> list[str]:
    """``"GA,TS"`` -> ["GA", "TS"]: case and spaces are free, each strategy at most once."""
    names = [s.strip().upper() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in STRATEGIES:
            raise ValueError(f"entries must be GA, TS or PC, not {name!r}")
    if len(set(names)) != len(names):   # the phase bookkeeping would silently skip a repeat
        raise ValueError("each strategy may appear once")
    return names


def parse_memory_backends(text: str) -> list[str]:
    """``"auto"`` (one name for every tier) or one name per tier joined by ','."""
    names = [s.strip() for s in text.split(",")]
    for name in names:
        if name not in MEMORY_BACKENDS:
            raise ValueError(f"each entry must be one of {list(MEMORY_BACKENDS)}, not {name!r}")
    return names


class RamLMParams(params.Params):
    """Every key a RAM-LM trial reads. Defaults are the intended semantics; the 5c8f4f1 legacy
    switches are empty_value 0.5, top_k 100, tier_order token_id, opt_eval_split test."""

    # labels (they change no computation, but name the trial in reports)
    experiment: str = param("", "label: the seed's experiment name")
    semantics: Literal["", "intended", "legacy"] = param("", "label: which switch set the trial uses")
    # data
    data: Literal["auto", "real", "standin", "synthetic"] = param(
        "auto", "token source: WikiText-2 if available else the offline stand-in (auto), or one of them")
    tokenizer: Literal["auto", "gpt2", "word"] = param("auto", "GPT-2 BPE if available else word-level (auto)")
    word_vocab: int = param(8192, "vocabulary size of the word-level tokenizer", ge=2)
    synthetic_vocab: int = param(50257, "vocabulary size of the synthetic Zipf stream", ge=2)
    synthetic_exponent: float = param(0.95, "Zipf exponent of the synthetic stream", ge=0)
    data_seed: int = param(0, "seed of the synthetic stream", ge=0)
    train_tokens: int = param(0, "train prefix length in tokens; 0 = the whole split", ge=0)
    val_tokens: int = param(0, "validation prefix length in tokens; 0 = the whole split", ge=0)
    test_tokens: int = param(0, "test prefix length in tokens; 0 = the whole split", ge=0)
    # model
    context: int = param(4, "context length N in tokens", ge=1)
    tiers: str = param("", "tier spec 'count,neurons,bits;...;rest,neurons,bits'; empty = uniform neurons x bits")
    neurons: int = param(3, "neurons per cluster of the uniform model (only when tiers is empty)", ge=1)
    bits: int = param(8, "bits per neuron of the uniform model (only when tiers is empty)", ge=1, le=MAX_BITS)
    tier_order: Literal["frequency", "token_id"] = param(
        "frequency", "clusters assigned to tiers by train frequency, or by raw token id (legacy bug)")
    top_k: int = param(1000, "global negatives: the k most frequent train tokens (5c8f4f1 benchmark: 100)", ge=0)
    empty_value: float = param(0.0, "score of a never-written cell (5c8f4f1: 0.5)", ge=0, le=1)
    seed: int = param(0, "connectivity seed (tier i uses seed + i)", ge=0)
    backend: Literal["native", "reference"] = knob(
        "native", "memory implementation: the Rust extension or the numpy reference (same results)")
    memory_backends: str = param("auto", "cell storage: auto, dense, sparse or lsh, or one per tier joined by ','")
    # optimisation
    optimize: bool = param(False, "optimise connectivity, then retrain on the full train set")
    strategy: str = param("GA,TS", "optimisers run in order, comma list of GA, TS, PC")
    ga_population: int = param(20, "GA population (also the per-cluster GA's)", ge=1)
    ga_generations: int = param(50, "GA generations (also the per-cluster GA's)", ge=0)
    ga_mutation: float = param(0.01, "GA per-connection mutation rate (also the per-cluster GA's)", ge=0, le=1)
    ga_crossover: float = param(0.7, "GA crossover probability", ge=0, le=1)
    ga_elitism: int = param(0, "GA elite size; 0 = max(2, population // 10)", ge=0)
    ga_tournament: int = param(3, "GA tournament size", ge=1)
    ga_threshold_pct: float = param(0.05, "GA early stop: least PPL improvement in % per check", ge=0)
    ts_iterations: int = param(10, "TS iterations (also the per-cluster TS's)", ge=0)
    ts_neighbors: int = param(30, "TS neighbours per iteration (also the per-cluster TS's)", ge=1)
    ts_tabu: int = param(5, "TS tabu list length", ge=0)
    ts_mutation: float = param(0.001, "TS per-connection mutation rate of a neighbour", ge=0, le=1)
    ts_threshold_pct: float = param(0.5, "TS early stop: least PPL improvement in % per check", ge=0)
    patience: int = param(1, "early stop after this many failed checks in a row, plus one", ge=0)
    check_every: int = param(5, "steps between early-stop / overfitting checks", ge=1)
    opt_seed: int = param(42, "seed of the window sampling and the optimisers", ge=0)
    opt_window: int = param(200, "tokens per optimisation window", ge=1)
    opt_train_windows: int = param(50, "windows of the optimiser's train subset", ge=1)
    opt_eval_windows: int = param(20, "windows of the optimiser's eval subset (the dev subset gets as many)", ge=1)
    opt_eval_split: Literal["validation", "test"] = param(
        "validation", "split the eval/dev windows come from (test: as the original)")
    overfit_monitor: bool = param(True, "watch the dev/eval CE ratio and adapt diversity or stop")
    grace_checks: int = param(1, "overfitting checks that may exceed the critical delta before it stops", ge=0)
    windowed_pretrain: bool = param(False, "with optimize: pretrain on the optimiser's train windows only")
    pc_fitness: Literal["SIMPLE", "ACCURACY", "CE", "PENALIZE"] = param("SIMPLE", "per-cluster fitness mode")
    pc_group_size: int = param(1, "clusters optimised jointly in tier 0 (tier 1: half of it)", ge=1)
    pc_iterative_passes: int = param(1, "passes of the per-cluster optimiser over the clusters", ge=1)
    # scoring beyond the seed
    calibration: Literal["none", "temperature", "temperature_prior"] = param(
        "temperature_prior", "calibrated scoring fitted on validation, next to the seed scoring")
    calibration_examples: int = param(2000, "validation examples the calibration is fitted on", ge=1)

    @field_validator("tiers")
    @classmethod
    def _tier_spec(cls, value: str) -> str:
        if not value.strip():
            return ""
        try:
            return normalise_tier_spec(value)
        except TierSpecError as e:
            raise ValueError(str(e)) from None

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        return ",".join(parse_strategy(value))

    @field_validator("memory_backends")
    @classmethod
    def _memory_backends(cls, value: str) -> str:
        return ",".join(parse_memory_backends(value))

    @model_validator(mode="after")
    def _consistent(self) -> "RamLMParams":
        defaults = type(self).model_fields
        if self.tiers and (self.neurons, self.bits) != (defaults["neurons"].default, defaults["bits"].default):
            raise ValueError(f"neurons, bits: only used by the uniform model, but tiers is set "
                             f"(got neurons={self.neurons}, bits={self.bits}, tiers={self.tiers!r})")
        tier_bits = [b for _, _, b in parse_tier_fields(self.tiers)] if self.tiers else [self.bits]
        names = parse_memory_backends(self.memory_backends)
        if len(names) > 1 and len(names) != len(tier_bits):
            raise ValueError(f"memory_backends: {len(names)} entries for {len(tier_bits)} tiers "
                             f"(got {self.memory_backends!r})")
        for i, bits in enumerate(tier_bits):
            name = names[i] if len(names) > 1 else names[0]
            if name in ("dense", "sparse") and bits > MAX_UNFOLDED_BITS:
                raise ValueError(f"memory_backends: {name!r} stores at most {MAX_UNFOLDED_BITS} bits per neuron, "
                                 f"tier {i} has {bits} (got {self.memory_backends!r}; use lsh or auto)")
        return self

    @property
    def strategies(self) -> list[str]:
        return parse_strategy(self.strategy)


class RunMetrics(params.Metrics):
    """The metrics of every trial, and the optimisation ones (only with optimize)."""

    # data and model
    data_source: str | None = metric("where the tokens came from (wikitext-2-raw-v1, the stand-in, synthetic:zipf...)")
    tokenizer_name: str | None = metric("tokenizer used: gpt2, word<V> or none (synthetic)")
    vocab_size: int | None = metric("vocabulary size V = number of clusters")
    bits_per_token: int | None = metric("ceil(log2 V)")
    total_input_bits: int | None = metric("context x bits_per_token")
    tier_spec: str | None = metric("the resolved tiers, count,neurons,bits per tier")
    n_tiers: int | None = metric("number of tiers")
    n_train_tokens: int | None = metric("train tokens used")
    n_val_tokens: int | None = metric("validation tokens used")
    n_test_tokens: int | None = metric("test tokens used")
    n_neurons: int | None = metric("neurons in the model")
    n_connections: int | None = metric("connections in the model (neurons x bits)")
    memory_backend_kinds: str | None = metric("cell storage per tier, joined by ','")
    ppl_floor: float | None = metric("lowest PPL the seed scoring (softmax of votes) can reach")
    ppl_ceiling: float | None = metric("highest PPL of the seed scoring (= V)")
    # initial training and evaluation
    train_s: float | None = metric("seconds of the initial training pass")
    written_cells_init: int | None = metric("cells written after the initial training")
    eval_val_s: float | None = metric("seconds of the initial validation evaluation")
    init_val_ppl: float | None = metric("validation PPL before optimisation")
    init_val_acc_pct: float | None = metric("validation accuracy in % before optimisation")
    init_val_ce: float | None = metric("validation CE before optimisation")
    # optimisation
    opt_train_examples: int | None = metric("examples in the optimiser's train windows")
    opt_eval_examples: int | None = metric("examples in the optimiser's eval windows")
    opt_baseline_eval_ce: float | None = metric("CE of the trained model on the eval windows")
    opt_baseline_dev_ce: float | None = metric("CE of the trained model on the dev windows")
    opt_chained_ce: float | None = metric("eval-window CE of the last optimiser's best connectivity")
    opt_s: float | None = metric("seconds of the optimisation phase")
    pc_clusters_optimised: int | None = metric("clusters the per-cluster optimiser worked on")
    pc_clusters_improved: int | None = metric("clusters whose connectivity the per-cluster optimiser improved")
    retrain_s: float | None = metric("seconds of the retraining on the full train set")
    # final evaluation
    written_cells_final: int | None = metric("cells written in the final model")
    cal_temperature: float | None = metric("fitted calibration temperature")
    cal_prior_weight: float | None = metric("fitted weight of the unigram log prior")
    eval_final_s: float | None = metric("seconds of the final validation and test evaluation")
    val_ppl: float | None = metric("final validation PPL (seed scoring)")
    val_acc_pct: float | None = metric("final validation accuracy in %")
    val_ce: float | None = metric("final validation CE")
    test_ppl: float | None = metric("test PPL (seed scoring)")
    test_acc_pct: float | None = metric("test accuracy in %")
    test_ce: float | None = metric("test CE")
    val_ppl_cal: float | None = metric("validation PPL, calibrated scoring")
    val_acc_cal_pct: float | None = metric("validation accuracy in %, calibrated scoring")
    val_ce_cal: float | None = metric("validation CE, calibrated scoring")
    test_ppl_cal: float | None = metric("test PPL, calibrated scoring")
    test_acc_cal_pct: float | None = metric("test accuracy in %, calibrated scoring")
    test_ce_cal: float | None = metric("test CE, calibrated scoring")
    test_ppl_unigram: float | None = metric("test PPL of the add-one unigram model of the train split")
    val_ppl_delta_pct: float | None = metric("final vs initial validation PPL, in % of the initial")
    val_acc_delta_pct: float | None = metric("final vs initial validation accuracy, in % of the initial (null if 0)")
    total_s: float | None = metric("seconds of the whole trial")
    diverged_step: int | None = metric("set when a CE was not finite (the trial is diverged)")


def _family_fields() -> dict:
    """The metric columns that repeat per tier (t0..t4) and per optimiser (ga, ts, pc)."""
    out: dict = {}
    for k in range(MAX_TIER_COLUMNS):
        out |= {f"t{k}_clusters": (int | None, metric(f"clusters in tier {k}")),
                f"t{k}_neurons": (int | None, metric(f"neurons per cluster in tier {k}")),
                f"t{k}_bits": (int | None, metric(f"bits per neuron in tier {k}"))}
    for split in ("val", "test"):
        for k in range(MAX_TIER_COLUMNS):
            where = f"{'validation' if split == 'val' else 'test'} targets in tier {k}"
            out |= {f"{split}_t{k}_ppl": (float | None, metric(f"PPL on {where}")),
                    f"{split}_t{k}_acc_pct": (float | None, metric(f"accuracy in % on {where}")),
                    f"{split}_t{k}_share_pct": (float | None, metric(f"share in % of {where}")),
                    f"{split}_t{k}_ppl_cal": (float | None, metric(f"PPL on {where}, calibrated scoring"))}
    for name in STRATEGIES:
        key = name.lower()
        out |= {f"{key}_start_ce": (float | None, metric(f"{name}: eval-window CE it started from")),
                f"{key}_final_ce": (float | None, metric(f"{name}: eval-window CE of its best connectivity")),
                f"{key}_steps": (int | None, metric(f"{name}: generations / iterations run")),
                f"{key}_evaluations": (int | None, metric(f"{name}: candidate connectivities evaluated")),
                f"{key}_stop": (str | None, metric(f"{name}: why it stopped (max_steps, early_stop, overfitting, done)"))}
        if name != "PC":   # the per-cluster optimiser never consults the overfitting monitor
            out[f"{key}_last_overfit_delta_pct"] = (float | None, metric(f"{name}: last overfitting-monitor delta in %"))
    return out


RamLMMetrics = create_model("RamLMMetrics", __base__=RunMetrics, __doc__="Every metric column of a RAM-LM row.",
                            **_family_fields())


def sample_windows(n_tokens: int, count: int, window: int, rng: random.Random) -> list[int]:
    """Sorted window starts as the original sampled them; a contiguous prefix if the stream is short."""
    population = n_tokens - window - 10
    if population < count:
        return [i * window for i in range(max(1, n_tokens // window)) if i < count]
    return sorted(rng.sample(range(0, population), count))


def window_tokens(tokens: np.ndarray, starts: list[int], window: int) -> np.ndarray:
    return np.concatenate([tokens[s:s + window] for s in starts]) if starts else tokens[:0]


def opt_windows(cfg: RamLMParams, splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    """Tiered RAM-neuron language model with GA / TS / per-cluster connectivity optimisation."""

    name = "ramlm"
    version = "2"
    Params = RamLMParams
    Metrics = RamLMMetrics

    def run(self, config: dict, ctx) -> dict:
        # the orchestrator passes the validated full config; validating again also serves direct callers
        cfg = RamLMParams.model_validate(params.validate(RamLMParams, config))
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
    from orchestrator.interface import check_finite  # noqa: PLC0415
    check_finite(0, ce=ce)


__all__ = ["RamLM", "RamLMMetrics", "RamLMParams"]
