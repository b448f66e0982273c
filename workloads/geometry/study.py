"""One setting of the geometry study (seed 002; docs/studies/geometry.md): the char-transformer
backbone (the substrate's shared stage), float and quantized traces, then Q1 (linear
recoverability per point) and Q2 (element-wise correctors).

A trial: text -> backbone -> scales -> float and quantized-only CE -> Q1 -> Q2 -> artifacts and row.

RNG (docs/studies/geometry.md, 'Determinism'): trace subsampling uses
``numpy.random.default_rng(seed)`` for train and ``seed + 1`` for test rows; the Q2 element draw
uses ``seed + 2``, the split ``random_state=seed``, and every Q2 variant starts from the same
init/batch-order seed. Q1's records and each finished Q2 variant are checkpointed.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from orchestrator import Diverged, TrialContext
from workloads.substrate.char_transformer import (BackboneRecipe, CharData, CharTransformer, load_char_data,
                                                  mean_ce, perplexity, quantized_baselines, trained_backbone)
from workloads.substrate.correction import calibrated_scales
from workloads.substrate.rows import PhaseClock
from workloads.substrate.stages import Checkpointer, trial_checkpoint, trial_seed

from . import q1 as Q1
from . import q2 as Q2
from .params import GeometryParams
from .traces import ElementCorrectedTap, collect_traces, report_geometry


def run(config: GeometryParams, ctx: TrialContext) -> dict:
    """One setting of the study."""
    clock = PhaseClock()
    p = config.model_dump()   # the phases and the substrate read the config as a dict
    seed = trial_seed(p, ctx)
    data = load_char_data(p, ctx, train_limit=p["train_limit"], test_limit=p["test_limit"])
    recipe = backbone_recipe(p, seed)
    ckpt = trial_checkpoint(ctx, GeometryParams, p, recipe.stage_key(data, ctx.device))
    model, _ = trained_backbone(recipe, data, ctx, ckpt, p["stage_cache"])
    clock.mark("float")
    scales = calibrated_scales(model, data.train_x[: p["calib_sequences"]], p["bits"])
    setting = Setting(model, data, scales, p, seed, ctx.device)
    losses = baseline_losses(setting)
    q1_points = q1_phase(setting, ckpt)
    clock.mark("q1")
    q2 = q2_phase(setting, losses, ckpt)
    clock.mark("q2")
    ctx.write_artifact("q1_points", q1_points)
    ctx.write_artifact("q2_variants", [q2[v] for v in Q2.VARIANTS])
    return {**Q1.q1_summary(q1_points), **q2_columns(q2, losses["baseline"]), **loss_columns(losses),
            "arch": f"({p['d_model']},{p['n_layers']})", "data_source": data.data_source,
            "vocab_size": data.vocab_size, "n_train_sequences": len(data.train_x),
            "n_test_sequences": len(data.test_x), "float_phase_s": clock.wall("start", "float"),
            "q1_phase_s": clock.wall("float", "q1"), "q2_phase_s": clock.wall("q1", "q2"),
            "total_s": clock.wall("start")}


def backbone_recipe(p: dict, seed: int) -> BackboneRecipe:
    """AdamW with gradient clipping, a fresh permutation every epoch, the last partial batch kept."""
    return BackboneRecipe(d_model=p["d_model"], n_heads=p["n_heads"], n_layers=p["n_layers"],
                          d_ff=p["d_ff"] or p["d_ff_mult"] * p["d_model"], max_seq_len=p["max_seq_len"],
                          dropout=p["dropout"], seed=seed, epochs=p["float_epochs"], lr=p["float_lr"],
                          optimizer="adamw", weight_decay=p["weight_decay"], batch_size=p["batch_size"],
                          grad_clip=p["grad_clip"], reshuffle="fresh", last_batch="keep")


class Setting:
    """What the phases after the backbone share: the frozen model, its data and scales, and the
    train traces, taken once and only when a phase still needs them (a resumed trial skips the
    phases it finished)."""

    def __init__(self, model: CharTransformer, data: CharData, scales: dict[str, float], p: dict, seed: int,
                 device: str):
        self.model, self.data, self.scales, self.p, self.seed, self.device = model, data, scales, p, seed, device
        self.bits = p["bits"]
        self.keys = [pt.key for pt in model.points]
        self._train_traces: list | None = None

    def traces(self, X, rng: np.random.Generator) -> list[dict]:
        return collect_traces(self.model, X, self.keys, self.bits, self.scales, self.p["trace_max_rows"], rng)

    def train_traces(self) -> list[dict]:
        if self._train_traces is None:
            X = self.data.train_x[: self.p["trace_train_sequences"]]
            self._train_traces = self.traces(X, np.random.default_rng(self.seed))
        return self._train_traces

    def release_traces(self) -> None:
        self._train_traces = None  # the largest arrays of the trial


def baseline_losses(s: Setting) -> dict[str, Any]:
    """Test CE of the float model and of the quantized-only model with the correct and the legacy
    residual; ``baseline`` says which one loss_quant, loss_gain and q2_verdict use."""
    f, q_ok, q_legacy = quantized_baselines(s.model, s.data, s.bits, s.scales)
    if not all(math.isfinite(v) for v in (f, q_ok, q_legacy)):
        raise Diverged("non-finite evaluation loss", metrics={"loss_float": f})
    legacy = s.p["legacy_prenorm_residual_bug"]
    return {"float": f, "correct": q_ok, "legacy": q_legacy, "baseline": "legacy" if legacy else "correct",
            "quant": q_legacy if legacy else q_ok}


# -------------------------------------------------------------------------------- Q1
def q1_phase(s: Setting, ckpt: Checkpointer) -> list[dict]:
    """Per point: the ridge map's recoverability (train traces -> test traces) and the
    correctability components on the report batch (docs/studies/geometry.md, 'Q1')."""
    points = ckpt.get("q1")
    if points is not None:
        return points
    test = s.traces(s.data.test_x[: s.p["trace_test_sequences"]], np.random.default_rng(s.seed + 1))
    report = report_geometry(s.model, s.data.test_x[: s.p["report_sequences"]], s.keys, s.bits, s.scales)
    train = s.train_traces()
    points = [{**_point_identity(s, k, train[k], test[k]),
               **Q1.linear_recoverability(train[k]["z_quant"], train[k]["z_float"], test[k]["z_quant"],
                                          test[k]["z_float"], lam=s.p["ridge_lambda"]),
               **report[k]} for k in range(len(s.keys))]
    ckpt.put("q1", points)
    return points


def _point_identity(s: Setting, k: int, train: dict, test: dict) -> dict:
    n_points, key = len(s.keys), s.keys[k]
    block, sub = key.split("_")
    return {"point_index": k, "layer_index": k, "block": int(block), "sub_layer": sub, "point": key,
            "relative_depth": k / (n_points - 1) if n_points > 1 else 0.0,
            "depth_bucket": Q1.depth_bucket(k, n_points), "scale": float(s.scales[key]),
            "n_train_rows": len(train["z_quant"]), "n_test_rows": len(test["z_quant"])}


# -------------------------------------------------------------------------------- Q2
def q2_phase(s: Setting, losses: dict, ckpt: Checkpointer) -> dict[str, dict]:
    """Each corrector variant trained on the element dataset of the train traces, then its test CE
    with the corrector at every point (docs/studies/geometry.md,
    'Q2'). Resumes per variant."""
    done = ckpt.get("q2") or {}
    if len(done) < len(Q2.VARIANTS):
        p = s.p
        elements = Q2.element_dataset(s.train_traces(), p["q2_elements"], np.random.default_rng(s.seed + 2))
        split = Q2.split_indices(len(elements["target"]), s.seed, p["q2_test_frac"], p["q2_val_frac"])
        for variant in (v for v in Q2.VARIANTS if v not in done):
            done[variant] = _q2_variant(s, variant, elements, split, losses)
            ckpt.put("q2", done)
    s.release_traces()
    return done


def _q2_variant(s: Setting, variant: str, elements: dict, split: dict, losses: dict) -> dict:
    p = s.p
    corrector, m = Q2.train_variant(variant, elements, split, len(s.keys), s.seed, epochs=p["q2_epochs"],
                                    batch=p["q2_batch"], lr=p["q2_lr"], hidden=p["q2_hidden"],
                                    embed_dim=p["q2_embed_dim"], device=s.device)
    loss_c = mean_ce(s.model, s.data.test_x, s.data.test_y,
                     lambda: ElementCorrectedTap(s.bits, s.scales, s.keys, corrector, Q2.features))
    if not math.isfinite(loss_c):
        loss_c = float("inf")  # a corrector that blows the trajectory up: no gain, kept in the row
    m.update(variant=variant, loss_corrected=loss_c, ppl_corrected=perplexity(loss_c),
             loss_gain_correct=losses["correct"] - loss_c, loss_gain_legacy=losses["legacy"] - loss_c,
             loss_gain=losses["quant"] - loss_c, n_elements=len(elements["target"]))
    return m


def q2_columns(q2: dict[str, dict], baseline: str) -> dict:
    """The setting's Q2 row columns: per variant, across variants, and the verdicts against both
    baselines (the selected one repeated without suffix)."""
    row: dict[str, Any] = {}
    mse = {v: q2[v]["test_mse"] for v in Q2.VARIANTS}
    for v in Q2.VARIANTS:
        row.update({f"q2_{v}_test_mse": mse[v], f"q2_{v}_val_mse": q2[v]["val_mse"],
                    f"loss_corrected_{v}": q2[v]["loss_corrected"], f"loss_gain_{v}": q2[v]["loss_gain"],
                    f"loss_gain_correct_{v}": q2[v]["loss_gain_correct"],
                    f"loss_gain_legacy_{v}": q2[v]["loss_gain_legacy"]})
    row["q2_zero_test_mse"] = q2["features_only"]["zero_test_mse"]
    row["q2_mse_gain"] = Q2.mse_gain(mse["embedding_only"], mse["features_only"])
    row["q2_mse_gain_plus"] = Q2.mse_gain(mse["embedding_only"], mse["features_plus_embedding"])
    row["q2_best_mse_variant"] = min(Q2.VARIANTS, key=lambda v: mse[v])
    for base in ("correct", "legacy"):
        gain = {v: q2[v][f"loss_gain_{base}"] for v in Q2.VARIANTS}
        row[f"q2_best_loss_gain_{base}"] = max(gain["features_only"], gain["features_plus_embedding"])
        row[f"q2_verdict_{base}"] = Q2.q2_verdict(mse["embedding_only"], mse["features_only"], gain["features_only"],
                                                  gain["features_plus_embedding"])
    row.update(q2_baseline=baseline, q2_verdict=row[f"q2_verdict_{baseline}"],
               q2_best_loss_gain=row[f"q2_best_loss_gain_{baseline}"])
    return row


def loss_columns(losses: dict) -> dict:
    f, q_ok, q_legacy = losses["float"], losses["correct"], losses["legacy"]
    return {"loss_float": f, "loss_quant": losses["quant"], "loss_quant_correct": q_ok, "loss_quant_legacy": q_legacy,
            "ppl_float": perplexity(f), "ppl_quant": perplexity(losses["quant"]), "ppl_quant_correct": perplexity(q_ok),
            "ppl_quant_legacy": perplexity(q_legacy), "quant_gap": q_ok - f, "quant_gap_legacy": q_legacy - f}
