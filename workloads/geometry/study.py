"""One setting of the geometry study (seed 002): train the char-transformer backbone (stage
cache), take float and quantized traces, then Q1 (linear recoverability per point) and Q2
(element-wise correctors). Spec: geometry-study.md; substrate: quantization-correction.md §1.

RNG: ``torch.manual_seed(seed)`` right before the backbone is built and trained (so a backbone from
the stage cache is the one this trial would have trained); trace subsampling uses
``numpy.random.default_rng(seed)`` for train and ``seed + 1`` for test rows (spec §3); the Q2 element
draw uses ``seed + 2``, the split ``random_state=seed``, and every Q2 variant starts from the same
init/batch-order seed.
"""
from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from orchestrator.params import is_knob, validate
from orchestrator.interface import Diverged, check_finite
from workloads.data.shakespeare import char_splits, load_text
from workloads.quantcorr.common import Checkpointer, backbone, frozen, load_state, state_to_bytes
from workloads.quantcorr.correction import FloatTap, QuantTap
from workloads.quantcorr.quant import Calibrator
from workloads.quantcorr.transformer import CharTransformer, lm_loss, mean_ce

from . import q1 as Q1
from . import q2 as Q2
from .schema import GeometryParams
from .traces import ElementCorrectedTap, collect_traces, report_geometry


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def train_backbone(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, P: dict, ckpt: Checkpointer, ctx) -> nn.Module:
    """AdamW with gradient clipping; a fresh permutation per epoch, last partial batch kept.
    Checkpoints after every epoch (phase ``float_progress``) and resumes from there."""
    opt = torch.optim.AdamW(model.parameters(), lr=float(P["float_lr"]), weight_decay=float(P["weight_decay"]))
    start = 0
    prog = ckpt.get("float_progress")
    if prog is not None:
        load_state(model, prog["model"], X.device)
        opt.load_state_dict(prog["opt"])
        torch.set_rng_state(prog["rng"])
        start = prog["epoch"]
    batch = int(P["batch_size"])
    model.train()
    for epoch in range(start, int(P["float_epochs"])):
        perm = torch.randperm(len(X)).to(X.device)
        total, n = 0.0, 0
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = lm_loss(model(X[idx]), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), float(P["grad_clip"]))
            opt.step()
            total, n = total + float(loss.detach()), n + 1
        check_finite(epoch + 1, float_loss=total / max(n, 1))
        ctx.report(epoch + 1, phase="float", loss=total / max(n, 1))
        ckpt.put("float_progress", {"model": state_to_bytes(model), "opt": opt.state_dict(),
                                    "epoch": epoch + 1, "rng": torch.get_rng_state()})
    model.eval()
    return model


def run_geometry(cfg: dict, ctx) -> dict:
    t0 = time.perf_counter()
    # The orchestrator passes the full validated config; validating again (idempotent) fills the
    # defaults for direct callers (tests, notebooks) and rejects their typos.
    P = validate(GeometryParams, cfg)
    dev = ctx.device
    seed = ctx.seed if P["seed"] is None else P["seed"]
    d_model, n_layers = int(P["d_model"]), int(P["n_layers"])
    arch = dict(d_model=d_model, n_heads=int(P["n_heads"]), n_layers=n_layers,
                d_ff=int(P["d_ff"] or int(P["d_ff_mult"]) * d_model))
    bits = int(P["bits"])

    text, source = load_text(P["data"], ctx.data_root, ctx.cache_dir, bool(P["download"]))
    if int(P["max_chars"]):
        text = text[: int(P["max_chars"])]
    data = char_splits(text, int(P["seq_len"]), data_source=source)
    n_tr = int(P["train_limit"]) or len(data.train_x)
    n_te = int(P["test_limit"]) or len(data.test_x)
    Xtr, Ytr = data.train_x[:n_tr].to(dev), data.train_y[:n_tr].to(dev)
    Xte, Yte = data.test_x[:n_te].to(dev), data.test_y[:n_te].to(dev)
    V = data.vocab_size

    key = {"stage": "geometry.char_transformer", "v": 1, **arch, "seed": seed, "seq_len": int(P["seq_len"]),
           "max_seq_len": int(P["max_seq_len"]), "dropout": float(P["dropout"]),
           "batch_size": int(P["batch_size"]), "float_epochs": int(P["float_epochs"]),
           "float_lr": float(P["float_lr"]), "weight_decay": float(P["weight_decay"]),
           "grad_clip": float(P["grad_clip"]), "n_train": len(Xtr), "data_source": source,
           "text_sha1": hashlib.sha1(text.encode()).hexdigest(), "device": str(dev)}
    # execution-only knobs (stage_cache, download) do not change what the checkpoint holds
    ckpt = Checkpointer(ctx, {**key, "trial": {k: P[k] for k in sorted(P) if not is_knob(GeometryParams, k)}})

    def new_model() -> CharTransformer:
        return CharTransformer(V, **arch, max_seq_len=int(P["max_seq_len"]), dropout=float(P["dropout"]))

    def build() -> dict:
        torch.manual_seed(seed)
        model = new_model().to(dev)
        return {"model": state_to_bytes(train_backbone(model, Xtr, Ytr, P, ckpt, ctx))}

    staged = backbone(P, ctx, ckpt, key, build)
    # The backbone is now in the stage cache (or under "float"): drop the per-epoch training state
    # (weights + AdamW moments) so the later phase checkpoints stay small.
    ckpt.state.pop("float_progress", None)
    model = frozen(load_state(new_model(), staged["model"], dev)).eval()
    keys = [p.key for p in model.points]
    Pn = len(keys)
    t_float = time.perf_counter()

    # Scales: float model, eval mode, the first calib_sequences train sequences (spec §2).
    cal = Calibrator()
    with torch.no_grad():
        model(Xtr[: int(P["calib_sequences"])], FloatTap(cal))
    scales = cal.scales(bits)

    loss_f = mean_ce(model, Xte, Yte, lambda: None)
    loss_q_ok = mean_ce(model, Xte, Yte, lambda: QuantTap(bits, scales))
    loss_q_legacy = mean_ce(model, Xte, Yte, lambda: QuantTap(bits, scales, legacy_residual=True))
    legacy = bool(P["legacy_prenorm_residual_bug"])
    loss_q = loss_q_legacy if legacy else loss_q_ok
    if not all(math.isfinite(v) for v in (loss_f, loss_q_ok, loss_q_legacy)):
        raise Diverged("non-finite evaluation loss", metrics={"loss_float": loss_f})

    # ---- traces (spec §3) -----------------------------------------------------------------
    max_rows = int(P["trace_max_rows"])
    train_cache: list = []

    def train_traces() -> list:  # only taken when a phase still needs them (resume skips done phases)
        if not train_cache:
            train_cache.append(collect_traces(model, Xtr[: int(P["trace_train_sequences"])], keys, bits, scales,
                                              max_rows, np.random.default_rng(seed)))
        return train_cache[0]

    # ---- Q1 ------------------------------------------------------------------------------
    q1_points = ckpt.get("q1")
    if q1_points is None:
        test_tr = collect_traces(model, Xte[: int(P["trace_test_sequences"])], keys, bits, scales, max_rows,
                                 np.random.default_rng(seed + 1))
        geo = report_geometry(model, Xte[: int(P["report_sequences"])], keys, bits, scales)
        q1_points = []
        train_tr = train_traces()
        for k, key_k in enumerate(keys):
            block, sub = key_k.split("_")
            rec = {"point_index": k, "layer_index": k, "block": int(block), "sub_layer": sub, "point": key_k,
                   "relative_depth": k / (Pn - 1) if Pn > 1 else 0.0, "depth_bucket": Q1.depth_bucket(k, Pn),
                   "scale": float(scales[key_k]),
                   "n_train_rows": len(train_tr[k]["z_quant"]), "n_test_rows": len(test_tr[k]["z_quant"])}
            rec.update(Q1.linear_recoverability(train_tr[k]["z_quant"], train_tr[k]["z_float"],
                                                test_tr[k]["z_quant"], test_tr[k]["z_float"],
                                                lam=float(P["ridge_lambda"])))
            rec.update(geo[k])
            q1_points.append(rec)
        del test_tr
        ckpt.put("q1", q1_points)
    t_q1 = time.perf_counter()
    row: dict[str, Any] = {}
    row.update(Q1.q1_summary(q1_points))

    # ---- Q2 ------------------------------------------------------------------------------
    q2 = ckpt.get("q2") or {}
    if len(q2) < len(Q2.VARIANTS):
        elements = Q2.element_dataset(train_traces(), int(P["q2_elements"]), np.random.default_rng(seed + 2))
        split = Q2.split_indices(len(elements["target"]), seed, float(P["q2_test_frac"]), float(P["q2_val_frac"]))
        for variant in Q2.VARIANTS:
            if variant in q2:
                continue
            corr, m = Q2.train_variant(variant, elements, split, Pn, seed, epochs=int(P["q2_epochs"]),
                                       batch=int(P["q2_batch"]), lr=float(P["q2_lr"]), hidden=int(P["q2_hidden"]),
                                       embed_dim=int(P["q2_embed_dim"]), device=dev)
            loss_c = mean_ce(model, Xte, Yte, lambda: ElementCorrectedTap(bits, scales, keys, corr, Q2.features))
            if not math.isfinite(loss_c):
                loss_c = float("inf")  # a corrector that blows the trajectory up: no gain, kept in the row
            m.update(variant=variant, loss_corrected=loss_c, ppl_corrected=_ppl(loss_c),
                     loss_gain_correct=loss_q_ok - loss_c, loss_gain_legacy=loss_q_legacy - loss_c,
                     loss_gain=loss_q - loss_c, n_elements=len(elements["target"]))
            q2[variant] = m
            ckpt.put("q2", q2)
        del elements
    train_cache.clear()
    t_q2 = time.perf_counter()

    # ---- outputs ---------------------------------------------------------------------------
    ctx.write_artifact("q1_points", q1_points)
    ctx.write_artifact("q2_variants", [q2[v] for v in Q2.VARIANTS])

    mse = {v: q2[v]["test_mse"] for v in Q2.VARIANTS}
    for v in Q2.VARIANTS:
        row[f"q2_{v}_test_mse"] = mse[v]
        row[f"q2_{v}_val_mse"] = q2[v]["val_mse"]
        row[f"loss_corrected_{v}"] = q2[v]["loss_corrected"]
        row[f"loss_gain_{v}"] = q2[v]["loss_gain"]
        row[f"loss_gain_correct_{v}"] = q2[v]["loss_gain_correct"]
        row[f"loss_gain_legacy_{v}"] = q2[v]["loss_gain_legacy"]
    row["q2_zero_test_mse"] = q2["features_only"]["zero_test_mse"]
    row["q2_mse_gain"] = Q2.mse_gain(mse["embedding_only"], mse["features_only"])
    row["q2_mse_gain_plus"] = Q2.mse_gain(mse["embedding_only"], mse["features_plus_embedding"])
    row["q2_best_mse_variant"] = min(Q2.VARIANTS, key=lambda v: mse[v])
    verdicts = {}
    for base in ("correct", "legacy"):
        g = {v: q2[v][f"loss_gain_{base}"] for v in Q2.VARIANTS}
        verdicts[base] = Q2.q2_verdict(mse["embedding_only"], mse["features_only"], g["features_only"],
                                       g["features_plus_embedding"])
        row[f"q2_best_loss_gain_{base}"] = max(g["features_only"], g["features_plus_embedding"])
        row[f"q2_verdict_{base}"] = verdicts[base]
    row["q2_baseline"] = "legacy" if legacy else "correct"
    row["q2_verdict"] = verdicts[row["q2_baseline"]]
    row["q2_best_loss_gain"] = row[f"q2_best_loss_gain_{row['q2_baseline']}"]
    row.update(
        loss_float=loss_f, loss_quant=loss_q, loss_quant_correct=loss_q_ok, loss_quant_legacy=loss_q_legacy,
        ppl_float=_ppl(loss_f), ppl_quant=_ppl(loss_q), ppl_quant_correct=_ppl(loss_q_ok),
        ppl_quant_legacy=_ppl(loss_q_legacy), quant_gap=loss_q_ok - loss_f, quant_gap_legacy=loss_q_legacy - loss_f,
        arch=f"({d_model},{n_layers})", data_source=source, vocab_size=V, n_train_sequences=len(Xtr),
        n_test_sequences=len(Xte), float_phase_s=t_float - t0, q1_phase_s=t_q1 - t_float,
        q2_phase_s=t_q2 - t_q1, total_s=time.perf_counter() - t0)
    return row
