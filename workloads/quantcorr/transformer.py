"""Task 3 (seeds 000 and 001): pre-LN causal char-level transformer LM (spec §2.1-§2.4, §3).

Quantization points: the residual stream right after the attention add and right after the FFN add
of every block (P = 2L, keys "{block}_{attn|ffn}"). Embeddings, the final LN and the head are float.

Protocols (``protocol``):
  hydra   seed 000 Hydra sweep: correctors distilled on the float logits (MSE), Adam 1e-3, 5 epochs.
  grid    seed 001 243-run grid: correctors trained with CE on the next-character labels, Adam 3e-4,
          5 epochs, unquantized correctors.
  lambda  seed 000 lambda sweep (transformer variant, never run in the seed): hybrid loss with
          corrector QAT on the first 256 train sequences (see lambda_protocol.py).

RNG: the backbone is built and trained right after ``torch.manual_seed(seed)``; correctors come from
their own generator and the correction phase reseeds with ``seed + 1``. So a backbone loaded from the
stage cache gives bit-for-bit the same trial as one trained in the trial (on the same device). The
original code built the correctors together with the model before float training, so their init
consumed the global stream first; that order is not reproduced (``stage_cache: false`` only
recomputes the backbone per trial, it does not recreate that stream).
"""
from __future__ import annotations

import hashlib
import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from orchestrator.interface import Diverged, check_finite
from workloads.data.shakespeare import char_splits, load_text

from .common import Checkpointer, backbone, frozen, load_state, protocol_config, state_to_bytes, trial_seed
from .correction import FloatTap, Point, QuantTap, build_correctors
from .lambda_protocol import train_correctors_lambda
from .metrics import summary
from .params import TRANSFORMER_PROTOCOL_DEFAULTS
from .quant import Calibrator


class CausalSelfAttention(nn.Module):
    """Fused QKV, scale 1/sqrt(head_dim), causal mask, softmax, dropout on the weights, projection."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d_model {d} is not divisible by n_heads {n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, n_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d), nn.Dropout(dropout))

    def forward(self, h: torch.Tensor, tap, b: int) -> torch.Tensor:
        # legacy_residual (quantized-only baseline of the original code, spec §0.1): the residual
        # stream was overwritten by its LayerNorm before the add: h <- LN(h); h <- h + f(h).
        legacy = getattr(tap, "legacy_residual", False)
        for sub, ln, name in ((self.attn, self.ln1, "attn"), (self.ffn, self.ln2, "ffn")):
            if legacy:
                h = ln(h)
                h = h + sub(h)
            else:
                h = h + sub(ln(h))
            if tap is not None:
                h = tap(f"{b}_{name}", "blocks", h)
        return h


class CharTransformer(nn.Module):
    def __init__(self, vocab: int, d_model: int, n_heads: int, n_layers: int, d_ff: int,
                 max_seq_len: int = 256, dropout: float = 0.1):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_seq_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        self.points = [Point(f"{b}_{s}", "blocks", d_model) for b in range(n_layers) for s in ("attn", "ffn")]

    def forward(self, idx: torch.Tensor, tap=None) -> torch.Tensor:
        T = idx.shape[1]
        h = self.drop(self.tok(idx) + self.pos(torch.arange(T, device=idx.device)))
        for b, block in enumerate(self.blocks):
            h = block(h, tap, b)
        return self.head(self.ln_f(h))


def lm_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction)


@torch.no_grad()
def mean_ce(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, make_tap, batch: int = 64) -> float:
    """Mean cross-entropy (nats) over all tokens of (X, Y), eval mode, a fresh tap per batch."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(X), batch):
        logits = model(X[i:i + batch], make_tap())
        total += float(lm_loss(logits, Y[i:i + batch], "sum"))
        count += Y[i:i + batch].numel()
    model.train(was)
    return total / count


# Declared next to the parameters (params.py), which validation imports without torch.
PROTOCOL_DEFAULTS = TRANSFORMER_PROTOCOL_DEFAULTS


def run_transformer(cfg: dict, ctx) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    protocol = cfg.get("protocol", "hydra")
    if protocol not in PROTOCOL_DEFAULTS:
        raise ValueError(f"protocol for transformer must be hydra|grid|lambda, got {protocol!r}")
    P = protocol_config(PROTOCOL_DEFAULTS[protocol], cfg)
    dev = ctx.device
    seed = trial_seed(cfg, ctx)
    bits, every, hidden = int(cfg["bits"]), int(cfg["correct_every"]), int(cfg.get("correction_hidden", 0))
    arch = dict(d_model=int(cfg["d_model"]), n_heads=int(cfg["n_heads"]), n_layers=int(cfg["n_layers"]),
                d_ff=int(cfg["d_ff"]))
    seq_len, batch = int(P.get("seq_len", 128)), int(P.get("batch_size", 64))
    max_seq_len, dropout = int(P["max_seq_len"]), float(P.get("dropout", 0.1))

    text, source = load_text(P.get("data", "auto"), ctx.data_root, ctx.cache_dir, bool(P.get("download", True)))
    if int(P.get("max_chars", 0)):
        text = text[: int(P["max_chars"])]
    data = char_splits(text, seq_len, data_source=source)
    Xtr, Ytr = data.train_x.to(dev), data.train_y.to(dev)
    n_eval = int(P.get("eval_sequences", 0)) or len(data.test_x)
    Xte, Yte = data.test_x[:n_eval].to(dev), data.test_y[:n_eval].to(dev)
    V = data.vocab_size

    float_epochs, float_lr = int(P["float_epochs"]), float(P["float_lr"])
    key = {"stage": "quantcorr.char_transformer", "v": 1, **arch, "seed": seed, "seq_len": seq_len,
           "max_seq_len": max_seq_len, "dropout": dropout, "batch_size": batch, "float_epochs": float_epochs,
           "float_lr": float_lr, "float_optimizer": P["float_optimizer"],
           "weight_decay": float(P.get("weight_decay", 0.01)), "grad_clip": float(P.get("grad_clip", 1.0)),
           "data_source": source, "text_sha1": hashlib.sha1(text.encode()).hexdigest(), "device": str(dev)}
    ckpt = Checkpointer(ctx, {**key, "trial": {k: cfg[k] for k in sorted(cfg) if k != "stage_cache"}})
    new_model = lambda: CharTransformer(V, **arch, max_seq_len=max_seq_len, dropout=dropout)  # noqa: E731

    def build() -> dict:
        """Float training: permute the training set every epoch, full batches only, grad clip."""
        torch.manual_seed(seed)
        model = new_model().to(dev)
        if P["float_optimizer"] == "adamw":
            opt = torch.optim.AdamW(model.parameters(), lr=float_lr, weight_decay=key["weight_decay"])
        else:
            opt = torch.optim.Adam(model.parameters(), lr=float_lr)
        order = torch.arange(len(Xtr))
        start = 0
        prog = ckpt.get("float_progress")
        if prog is not None:  # resume a killed float training at its last finished epoch
            load_state(model, prog["model"], dev)
            opt.load_state_dict(prog["opt"])
            order, start = prog["order"], prog["epoch"]
            torch.set_rng_state(prog["rng"])
        model.train()
        n_batches = len(Xtr) // batch
        for epoch in range(start, float_epochs):
            order = order[torch.randperm(len(order))]  # "permuted in place": compose the orders
            total = 0.0
            for i in range(n_batches):
                idx = order[i * batch:(i + 1) * batch].to(dev)
                loss = lm_loss(model(Xtr[idx]), Ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), key["grad_clip"])
                opt.step()
                total += float(loss.detach())
            check_finite(epoch + 1, float_loss=total / max(n_batches, 1))
            ctx.report(epoch + 1, phase="float", loss=total / max(n_batches, 1))
            ckpt.put("float_progress", {"model": state_to_bytes(model), "opt": opt.state_dict(),
                                        "order": order, "epoch": epoch + 1, "rng": torch.get_rng_state()})
        return {"model": state_to_bytes(model), "order": order}

    staged = backbone(cfg, ctx, ckpt, key, build)
    model = frozen(load_state(new_model(), staged["model"], dev))
    order = staged["order"]
    t_float, c_float = time.perf_counter(), time.process_time()

    # Scales: float model, eval mode, on the first calib_sequences of the last-permuted train set.
    calib_idx = order[: int(P.get("calib_sequences", 64))].to(dev)
    cal = Calibrator()
    model.eval()
    with torch.no_grad():
        model(Xtr[calib_idx], FloatTap(cal))
    scales = cal.scales(bits)

    legacy = bool(P.get("legacy_prenorm_residual_bug", False))
    loss_f = mean_ce(model, Xte, Yte, lambda: None)
    loss_q_ok = mean_ce(model, Xte, Yte, lambda: QuantTap(bits, scales))
    loss_q_legacy = mean_ce(model, Xte, Yte, lambda: QuantTap(bits, scales, legacy_residual=True))
    loss_q = loss_q_legacy if legacy else loss_q_ok

    correctors = build_correctors(model.points, every, hidden, P.get("correction_init", "default"), seed, dev)
    n_corr = len(correctors)
    final_loss = float("nan")
    if n_corr:
        final_loss = _train_correctors(protocol, P, model, correctors, Xtr, Ytr, order, bits, scales,
                                       seed, batch, ckpt, ctx)
        loss_c = mean_ce(model, Xte, Yte, lambda: QuantTap(bits, scales, correctors))
    else:
        loss_c = loss_q

    row = summary(loss_f, loss_q, loss_c, higher_is_better=False, guard=P.get("guard", "hydra"),
                  rel=float(P.get("reliable_gap_rel", 0.005)))
    if not n_corr:
        row["recovery_pct"] = 0.0
    ppl = lambda v: math.exp(min(v, 50.0))  # noqa: E731
    row.update(
        loss_float=loss_f, loss_quant=loss_q, loss_corrected=loss_c,
        ppl_float=ppl(loss_f), ppl_quant=ppl(loss_q), ppl_corrected=ppl(loss_c),
        quant_degradation_pct=100 * (loss_q - loss_f) / loss_f,
        corrected_degradation_pct=100 * (loss_c - loss_f) / loss_f,
        loss_quant_correct_residual=loss_q_ok, loss_quant_legacy_residual=loss_q_legacy,
        num_correction_layers=n_corr, num_quant_points=len(model.points),
        correction_final_loss=final_loss, data_source=source, vocab_size=V,
        n_train_sequences=len(Xtr), n_test_sequences=len(Xte),
        float_phase_s=t_float - t0, float_phase_cpu_s=c_float - c0,
               total_s=time.perf_counter() - t0, total_cpu_s=time.process_time() - c0)
    if not all(math.isfinite(v) for v in (loss_f, loss_q, loss_c)):
        raise Diverged("non-finite evaluation loss", metrics=row)
    return row


def _train_correctors(protocol, P, model, correctors, Xtr, Ytr, order, bits, scales, seed, batch,
                      ckpt: Checkpointer, ctx) -> float:
    """Correctors only; backbone frozen. hydra: MSE to the float logits; grid: CE on the labels.
    Both in train mode (dropout on), batches of ``batch`` drawn from a per-epoch permutation."""
    lr = float(P["correction_lr"])
    if protocol == "lambda":
        idx = order[: int(P["correction_sequences"])].to(Xtr.device)
        model.eval()  # full batch against a fixed teacher
        return train_correctors_lambda(model, correctors, Xtr[idx], bits, scales,
                                       steps=int(P["correction_steps"]), lr=lr, lam=float(P["lam"]),
                                       legacy_h0_unquantized=bool(P.get("legacy_h0_unquantized", False)),
                                       ctx=ctx, report_every=10)
    epochs = int(P["correction_epochs"])
    batch = int(P.get("correction_batch_size", batch))
    if int(P.get("correction_sequences", 0)):  # a subset (CPU budgets): first N of the last float order
        sub = order[: int(P["correction_sequences"])].to(Xtr.device)
        Xtr, Ytr = Xtr[sub], Ytr[sub]
    opt = torch.optim.Adam(correctors.parameters(), lr=lr)
    torch.manual_seed(seed + 1)  # dropout stream of the correction phase
    gen = torch.Generator().manual_seed(seed + 2)  # batch order of the correction phase
    start, last = 0, float("nan")
    prog = ckpt.get("correction_progress")
    if prog is not None:
        correctors.load_state_dict(prog["correctors"])
        opt.load_state_dict(prog["opt"])
        gen.set_state(prog["gen"])
        torch.set_rng_state(prog["rng"])
        start = prog["epoch"]
    model.train()
    n_batches = len(Xtr) // batch
    for epoch in range(start, epochs):
        perm = torch.randperm(len(Xtr), generator=gen)
        total = 0.0
        for i in range(n_batches):
            idx = perm[i * batch:(i + 1) * batch].to(Xtr.device)
            x = Xtr[idx]
            out = model(x, QuantTap(bits, scales, correctors))
            if protocol == "grid":
                loss = lm_loss(out, Ytr[idx])
            else:
                with torch.no_grad():
                    target = model(x)  # float teacher, same (train) mode as the student
                loss = F.mse_loss(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        last = total / max(n_batches, 1)
        check_finite(epoch + 1, correction_loss=last)
        ctx.report(epoch + 1, phase="correction", loss=last)
        ckpt.put("correction_progress", {"correctors": {k: v.detach().cpu() for k, v in correctors.state_dict().items()},
                                         "opt": opt.state_dict(), "gen": gen.get_state(),
                                         "rng": torch.get_rng_state(), "epoch": epoch + 1})
    model.eval()
    return last
