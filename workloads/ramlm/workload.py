"""RAM-LM workload (seed 003): a tiered weightless language model, its connectivity optimisation
(tier-level GA / TS, per-cluster PC) and the seed's metrics, plus a calibrated scoring beyond the
seed. See docs/studies/ramlm.md.

One trial, phase by phase (``RamLM.run``): load the tokens; build tiers, cluster map, negatives
and memory; train one pass on train and evaluate validation; optionally optimise connectivity on
windowed subsets and retrain on the full train set; evaluate validation and test, overall and per
tier, with the seed scoring and the calibrated one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from orchestrator import TrialContext, check_finite
from workloads.data.locate import at_scale, data_files_for
from workloads.data.wikitext import load_token_splits, resolve
from workloads.ramlm.encoding import bits_per_token
from workloads.ramlm.metrics import ppl_floor, unigram_ce, unigram_log_prior
from workloads.ramlm.model import TieredRAMLM, make_memory, native_memory_class
from workloads.ramlm.optimise import opt_windows, optimise
from workloads.ramlm.params import MAX_TIER_COLUMNS, RamLMMetrics, RamLMParams
from workloads.ramlm.tiers import ClusterMap, Tier, format_tiers, model_tiers, top_k

FULL_SIZES = (2_400_000, 251_000, 288_000)   # WikiText-2 train / validation / test tokens (GPT-2 BPE)


@dataclass
class Trial:
    """What the phases of one run share."""

    cfg: RamLMParams
    ctx: object
    splits: object
    tiers: list[Tier]
    cmap: ClusterMap
    model: TieredRAMLM
    total_bits: int
    metrics: dict
    done: list[str]       # phases finished, as recorded in the checkpoint


# ----------------------------------------------------------------------------- set-up
def load_splits(cfg: RamLMParams, ctx):
    """The token splits, cached as a stage; the synthetic stream is generated at the requested
    split sizes (the seed's full sizes by default).

    The stage key holds what the data *is*: the sources ``auto`` resolves to here and now (at full
    scale ``auto`` means the real data and tokenizer: never a silent stand-in), the files read, the
    scale and its split sizes. So no scale is ever handed another scale's tokens."""
    sizes = tuple(n or d for n, d in zip((cfg.train_tokens, cfg.val_tokens, cfg.test_tokens), FULL_SIZES))
    sources = resolve(at_scale(cfg.data, ctx.scale), at_scale(cfg.tokenizer, ctx.scale, real="gpt2"), ctx.data_root)
    data_key = {"workload": "ramlm-tokens", "v": 2, "scale": ctx.scale, **sources.key(ctx.data_root),
                "split_tokens": [cfg.train_tokens, cfg.val_tokens, cfg.test_tokens]}
    if sources.data == "synthetic":
        data_key.update(synthetic_vocab=cfg.synthetic_vocab, synthetic_exponent=cfg.synthetic_exponent,
                        data_seed=cfg.data_seed, synthetic_sizes=list(sizes))
    if sources.tokenizer.startswith("word"):
        data_key["word_vocab"] = cfg.word_vocab
    splits = ctx.stage(data_key, lambda: load_token_splits(
        data_root=ctx.data_root, cache_dir=ctx.cache_dir, word_vocab=cfg.word_vocab, synthetic_sizes=sizes,
        synthetic_vocab=cfg.synthetic_vocab, synthetic_exponent=cfg.synthetic_exponent, seed=cfg.data_seed,
        sources=sources))
    return splits.truncated(cfg.train_tokens, cfg.val_tokens, cfg.test_tokens)


def model_metrics(splits, tiers: list[Tier], memory, bpt: int, total_bits: int) -> dict:
    v = splits.vocab_size
    out = {
        "data_source": splits.data_source, "tokenizer_name": splits.tokenizer, "vocab_size": v,
        "bits_per_token": bpt, "total_input_bits": total_bits, "tier_spec": format_tiers(tiers),
        "n_tiers": len(tiers), "n_train_tokens": len(splits.train), "n_val_tokens": len(splits.val),
        "n_test_tokens": len(splits.test), "n_neurons": int(memory.num_neurons),
        "n_connections": int(memory.connection_count), "memory_backend_kinds": ",".join(memory.backends),
        "ppl_floor": ppl_floor(v), "ppl_ceiling": float(v),
    }
    for t in tiers[:MAX_TIER_COLUMNS]:
        out.update({f"t{t.index}_clusters": t.count, f"t{t.index}_neurons": t.neurons, f"t{t.index}_bits": t.bits})
    return out


def resume(trial: Trial) -> None:
    """Take the connectivity, metrics and finished phases from the checkpoint, if there is one."""
    state = trial.ctx.load_checkpoint() or {}
    if state.get("connectivity") is not None:
        trial.model.memory.set_connectivity_flat(np.asarray(state["connectivity"], dtype=np.int64))
    trial.metrics.update(state.get("metrics", {}))
    trial.done = list(state.get("done", []))


# ----------------------------------------------------------------------------- training phases
def pretrain_tokens(trial: Trial) -> np.ndarray:
    """The first pass trains on the optimiser's train windows only with windowed_pretrain."""
    cfg = trial.cfg
    return opt_windows(cfg, trial.splits)[0] if cfg.optimize and cfg.windowed_pretrain else trial.splits.train


def optimises(cfg: RamLMParams) -> bool:
    return cfg.optimize and bool(cfg.strategies)


def train_initial(trial: Trial) -> None:
    """One pass over the training tokens, then the validation metrics before any optimisation, and
    with optimisation the test metrics too (the split the intended variant never selects on)."""
    model, metrics = trial.model, trial.metrics
    t0 = time.perf_counter()
    model.train(pretrain_tokens(trial))
    metrics["train_s"] = time.perf_counter() - t0
    metrics["written_cells_init"] = int(np.sum(model.memory.written_cells()))
    t0 = time.perf_counter()
    init = model.evaluate(trial.splits.val)
    metrics["eval_val_s"] = time.perf_counter() - t0
    metrics.update({"init_val_ppl": init["ppl"], "init_val_acc_pct": 100 * init["acc"], "init_val_ce": init["ce"]})
    check_finite(0, ce=init["ce"])
    if optimises(trial.cfg):
        init_test = model.evaluate(trial.splits.test)
        metrics.update({"init_test_ppl": init_test["ppl"], "init_test_acc_pct": 100 * init_test["acc"],
                        "init_test_ce": init_test["ce"]})
    trial.done.append("initial")
    trial.ctx.report(0, phase="initial", val_ppl=init["ppl"], val_acc_pct=100 * init["acc"])
    trial.ctx.save_checkpoint({"done": trial.done, "metrics": metrics, "connectivity": None})


def optimise_and_retrain(trial: Trial) -> None:
    """Connectivity optimisation, then a fresh memory trained on the full train set with the best
    connectivity found."""
    optimise(trial.cfg, trial.ctx, trial.model, trial.splits, trial.cmap, trial.tiers, trial.total_bits,
             trial.metrics, trial.done)
    t0 = time.perf_counter()
    trial.model.memory.reset()
    trial.model.train(trial.splits.train)
    trial.metrics["retrain_s"] = time.perf_counter() - t0


# ----------------------------------------------------------------------------- final evaluation
def score_splits(trial: Trial) -> tuple[dict, dict | None, dict, dict | None]:
    """(val, calibrated val, test, calibrated test) summaries; the calibration is fitted on
    validation examples when it is asked for."""
    cfg, model, splits, metrics = trial.cfg, trial.model, trial.splits, trial.metrics
    if cfg.calibration == "none":
        return model.evaluate(splits.val), None, model.evaluate(splits.test), None
    log_prior = unigram_log_prior(splits.train, splits.vocab_size)
    calibration = model.fit_calibration(splits.val, log_prior, cfg.calibration, cfg.calibration_examples)
    metrics.update({"cal_temperature": calibration.temperature, "cal_prior_weight": calibration.prior_weight})
    val, val_cal = model.evaluate_scored(splits.val, calibration)
    test, test_cal = model.evaluate_scored(splits.test, calibration)
    return val, val_cal, test, test_cal


def seed_metrics(name: str, summary: dict) -> dict:
    """One split's columns under the seed scoring, overall and per tier."""
    out = {f"{name}_ppl": summary["ppl"], f"{name}_acc_pct": 100 * summary["acc"], f"{name}_ce": summary["ce"]}
    for k, tier in enumerate(summary["tiers"][:MAX_TIER_COLUMNS]):
        out.update({f"{name}_t{k}_ppl": tier["ppl"], f"{name}_t{k}_acc_pct": 100 * tier["acc"],
                    f"{name}_t{k}_share_pct": 100 * tier["share"]})
    return out


def calibrated_metrics(name: str, summary: dict | None) -> dict:
    """One split's columns under the calibrated scoring (none without a calibration)."""
    if summary is None:
        return {}
    out = {f"{name}_ppl_cal": summary["ppl"], f"{name}_acc_cal_pct": 100 * summary["acc"],
           f"{name}_ce_cal": summary["ce"]}
    out.update({f"{name}_t{k}_ppl_cal": tier["ppl"] for k, tier in enumerate(summary["tiers"][:MAX_TIER_COLUMNS])})
    return out


def evaluate_final(trial: Trial) -> tuple[dict, dict]:
    """Validation and test metrics of the final model; returns the (val, test) seed summaries."""
    t0 = time.perf_counter()
    val, val_cal, test, test_cal = score_splits(trial)
    trial.metrics["eval_final_s"] = time.perf_counter() - t0
    check_finite(0, ce=test["ce"])
    trial.metrics.update(seed_metrics("val", val) | seed_metrics("test", test)
                         | calibrated_metrics("val", val_cal) | calibrated_metrics("test", test_cal))
    return val, test


def delta_pct(after: float, before: float) -> float:
    """(after - before) / before in %, NaN when ``before`` is 0 (an accuracy of 0 has no relative change)."""
    return (after - before) / before * 100 if before > 0 else float("nan")


def selection_split(cfg: RamLMParams) -> str:
    """The split whose windows the optimiser selects connectivity on (fitness and overfitting check)."""
    return cfg.opt_eval_split


def heldout_split(cfg: RamLMParams) -> str:
    """The split the optimiser never sees: test when it selects on validation, and the reverse."""
    return "test" if selection_split(cfg) == "validation" else "validation"


def comparisons(trial: Trial) -> dict:
    """The unigram baseline's test PPL and the change since the initial evaluation: on validation
    (always), on test (with optimisation), and on the held-out split, the one the optimiser did not
    select on (docs/studies/ramlm.md, 'Before and after optimisation')."""
    cfg, m, splits = trial.cfg, trial.metrics, trial.splits
    out = {
        "test_ppl_unigram": math.exp(unigram_ce(splits.train, splits.test[cfg.context:], splits.vocab_size)),
        "val_ppl_delta_pct": delta_pct(m["val_ppl"], m["init_val_ppl"]),
        "val_acc_delta_pct": delta_pct(m["val_acc_pct"], m["init_val_acc_pct"]),
    }
    if optimises(cfg) and "init_test_ppl" in m:
        out.update({"test_ppl_delta_pct": delta_pct(m["test_ppl"], m["init_test_ppl"]),
                    "test_acc_delta_pct": delta_pct(m["test_acc_pct"], m["init_test_acc_pct"])})
        key = "test" if heldout_split(cfg) == "test" else "val"
        out.update({"heldout_split": heldout_split(cfg), "heldout_ppl_delta_pct": out[f"{key}_ppl_delta_pct"],
                    "heldout_acc_delta_pct": out[f"{key}_acc_delta_pct"]})
    return out


# ----------------------------------------------------------------------------- the workload
class RamLM:
    """Tiered RAM-neuron language model with GA / TS / per-cluster connectivity optimisation.

    ``reference_memory``: a class with the native memory's API used for ``backend='reference'``.
    Tests pass the numpy oracle (tests/oracles/memory_reference.py); the workload ships without it.
    """

    name = "ramlm"
    version = "3"   # 3: held-out deltas, per-tier metrics by frequency rank, PC group size 10
    Params = RamLMParams
    Metrics = RamLMMetrics
    determinism = ()  # every metric bit-identical across the execution knobs (tests/orchestrator/test_determinism.py)

    def __init__(self, reference_memory=None):
        self.reference_memory = reference_memory

    data_files = data_files_for("wikitext-2", "gpt2-bpe", when=lambda c: c.get("data", "auto") != "synthetic")

    @staticmethod
    def preflight(config: dict, data_root, scale: str) -> None:
        """Before Ray starts (raises DataMissing): WikiText-2 with its train split and the GPT-2 BPE
        at full scale with data / tokenizer auto, and whenever data: real or tokenizer: gpt2 asks
        for them; a stand-in or synthetic stream asked for on purpose needs neither
        (workloads/data/locate.py)."""
        from workloads.data import require

        data = config.get("data", "auto")
        if data == "synthetic":
            return
        if data != "standin":
            require("wikitext-2", data_root, scale, data)
        tokenizer = config.get("tokenizer", "auto")
        if data == "standin" and tokenizer != "gpt2":
            return   # the stand-in on purpose: auto may tokenize it by words (the row says so)
        require("gpt2-bpe", data_root, scale, tokenizer)

    def run(self, config: RamLMParams, ctx: TrialContext) -> dict:
        started = time.perf_counter()
        trial = self.set_up(config, ctx)
        resume(trial)
        if "initial" in trial.done:
            trial.model.train(pretrain_tokens(trial))   # the memory's cells are not checkpointed: refill them
        else:
            train_initial(trial)
        if optimises(config):
            optimise_and_retrain(trial)
        trial.metrics["written_cells_final"] = int(np.sum(trial.model.memory.written_cells()))
        val, test = evaluate_final(trial)
        trial.metrics.update(comparisons(trial))
        trial.metrics["total_s"] = time.perf_counter() - started
        ctx.report(1, phase="final", val_ppl=val["ppl"], test_ppl=test["ppl"], test_acc_pct=100 * test["acc"])
        return trial.metrics

    def memory_class(self, backend: str):
        if backend == "native":
            return native_memory_class()
        if self.reference_memory is None:
            raise ValueError(
                "backend='reference' asks for the numpy oracle of the native memory, which lives with the tests "
                "(tests/oracles/memory_reference.py) and is not part of the workload: run with backend='native', "
                "or, in a test, pass the oracle in: RamLM(reference_memory=ReferenceMemory)")
        return self.reference_memory

    def set_up(self, cfg: RamLMParams, ctx) -> Trial:
        """Tokens, tiers, cluster map, negatives, memory and model, and the metrics that describe them."""
        splits = load_splits(cfg, ctx)
        v = splits.vocab_size
        bpt = bits_per_token(v)
        total_bits = cfg.context * bpt
        tiers = model_tiers(cfg.tiers, v, cfg.neurons, cfg.bits)
        cmap = ClusterMap.build(tiers, splits.train, cfg.tier_order)
        memory = make_memory(tiers, cmap, total_bits, cfg.seed, cfg.backends_per_tier,
                             memory_class=self.memory_class(cfg.backend))
        model = TieredRAMLM(memory, cmap, cfg.context, bpt, top_k(splits.train, v, cfg.top_k), cfg.empty_value)
        ctx.log(f"ramlm: {splits.data_source} / {splits.tokenizer}, V={v}, tiers {format_tiers(tiers)}, "
                f"{memory.num_neurons} neurons, backends {memory.backends}")
        metrics = model_metrics(splits, tiers, memory, bpt, total_bits)
        return Trial(cfg, ctx, splits, tiers, cmap, model, total_bits, metrics, done=[])


__all__ = ["RamLM", "RamLMMetrics", "RamLMParams"]
