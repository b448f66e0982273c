"""RAM-LM's typed parameters and metrics (they define trial ids and the dataset schema: names and
types must not change, and a changed default or meaning needs a new workload version, as version 3
did for pc_group_size). See docs/studies/ramlm.md for what each switch means."""
from __future__ import annotations

from typing import Literal

from pydantic import create_model, field_validator, model_validator

from orchestrator import Metrics, Params, knob, metric, param
from workloads.ramlm.tiers import MAX_BITS, TierSpecError, normalise_tier_spec, parse_tier_fields

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


class RamLMParams(Params):
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
        "frequency", "clusters stored in tiers by train frequency, or by raw token id (legacy bug); per-tier "
        "metrics bucket by frequency rank either way")
    top_k: int = param(1000, "global negatives: the k most frequent train tokens (5c8f4f1 benchmark: 100)", ge=0)
    empty_value: float = param(0.0, "score of a never-written cell (5c8f4f1: 0.5)", ge=0, le=1)
    seed: int = param(0, "connectivity seed (tier i uses seed + i)", ge=0)
    backend: Literal["native", "reference"] = knob(
        "native", "memory implementation: the Rust extension, or the numpy oracle of the tests (only where a "
        "test hands it to RamLM)")
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
    pc_group_size: int = param(
        10, "clusters optimised jointly in tier 0 (the original's default 10; tier 1: half, at least 2; "
        "1 = every cluster alone)", ge=1)
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

    @property
    def backends_per_tier(self) -> str | list[str]:
        """``memory_backends`` as the memory takes it: one name for every tier, or a list."""
        return self.memory_backends.split(",") if "," in self.memory_backends else self.memory_backends


class RunMetrics(Metrics):
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
    init_test_ppl: float | None = metric("test PPL before optimisation (only with optimisation)")
    init_test_acc_pct: float | None = metric("test accuracy in % before optimisation (only with optimisation)")
    init_test_ce: float | None = metric("test CE before optimisation (only with optimisation)")
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
    val_ppl_delta_pct: float | None = metric(
        "final vs initial validation PPL, in % of the initial (with opt_eval_split validation the optimiser "
        "selected on this split: see heldout_ppl_delta_pct)")
    val_acc_delta_pct: float | None = metric("final vs initial validation accuracy, in % of the initial (null if 0)")
    test_ppl_delta_pct: float | None = metric("final vs initial test PPL, in % of the initial (only with optimisation)")
    test_acc_delta_pct: float | None = metric(
        "final vs initial test accuracy, in % of the initial (only with optimisation; null if 0)")
    heldout_split: str | None = metric(
        "the split the optimiser did not select on: test (opt_eval_split validation) or validation (test)")
    heldout_ppl_delta_pct: float | None = metric(
        "final vs initial PPL on heldout_split, in % of the initial: the fair before/after comparison")
    heldout_acc_delta_pct: float | None = metric(
        "final vs initial accuracy on heldout_split, in % of the initial (null if 0)")
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
            where = f"{'validation' if split == 'val' else 'test'} targets whose train-frequency rank is in tier {k}"
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
