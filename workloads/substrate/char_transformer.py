"""The pre-LN causal char transformer, its data, and its trained float backbone
(docs/studies/quantization-correction.md, 'Transformer'; docs/studies/geometry.md).

Quantization points: the residual stream right after the attention add and right after the FFN add
of every block (P = 2L, keys "{block}_{attn|ffn}"). Embeddings, the final LN and the head are float.

The backbone is one stage for every study that uses it (quantcorr.transformer, geometry): its key
holds only what determines the trained weights, so a backbone trained for one study is loaded by
the other whenever both would train the same weights.

RNG: the backbone is built and trained right after ``torch.manual_seed(seed)``, so a backbone loaded
from the stage cache is the one the trial would have trained (on the same device).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from workloads.data.locate import at_scale
from workloads.data.shakespeare import char_splits, load_text

from .correction import Point, QuantTap
from .loops import Batches, train_epochs
from .stages import Checkpointer, frozen, load_state, staged, state_to_bytes


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
        # legacy_residual (the original quantized-only baseline; docs/studies/quantization-correction.md,
        # 'Legacy switches'): the residual stream was overwritten by its LayerNorm before the add:
        # h <- LN(h); h <- h + f(h).
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


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


# -------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class CharData:
    """Train and test sequences on the trial's device (inputs x, next characters y)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    vocab_size: int
    data_source: str
    text_sha1: str  # of the text actually used: it fixes the vocabulary and both splits


def load_char_data(p: Mapping[str, Any], ctx, train_limit: int = 0, test_limit: int = 0) -> CharData:
    """tinyshakespeare or its stand-in (``data``, ``download``), the first ``max_chars`` characters
    (0: all), cut into ``seq_len`` sequences; the first ``train_limit`` / ``test_limit`` sequences
    of each split (0: all)."""
    # at full scale `auto` means the real corpus: a failed download raises, never a silent stand-in
    text, source = load_text(at_scale(p["data"], ctx.scale), ctx.data_root, ctx.cache_dir, bool(p["download"]))
    if p["max_chars"]:
        text = text[: p["max_chars"]]
    splits = char_splits(text, p["seq_len"], data_source=source)
    n_tr, n_te = train_limit or len(splits.train_x), test_limit or len(splits.test_x)
    dev = ctx.device
    return CharData(splits.train_x[:n_tr].to(dev), splits.train_y[:n_tr].to(dev), splits.test_x[:n_te].to(dev),
                    splits.test_y[:n_te].to(dev), splits.vocab_size, source, hashlib.sha1(text.encode()).hexdigest())


def quantized_baselines(model: nn.Module, data: CharData, bits: int,
                        scales: dict[str, float]) -> tuple[float, float, float]:
    """Test CE of the float model, and of the quantized-only model with the correct residual and
    with the seed's prenorm residual bug."""
    return (mean_ce(model, data.test_x, data.test_y, lambda: None),
            mean_ce(model, data.test_x, data.test_y, lambda: QuantTap(bits, scales)),
            mean_ce(model, data.test_x, data.test_y, lambda: QuantTap(bits, scales, legacy_residual=True)))


# -------------------------------------------------------------------------------- the backbone stage
@dataclass(frozen=True)
class BackboneRecipe:
    """How a float backbone is built and trained: AdamW or Adam on the LM loss, gradient clipping,
    a new batch order every epoch, a checkpoint after every epoch.

    The studies differ in two habits: ``reshuffle`` "in_place" permutes the previous epoch's order
    (quantcorr, as the seed code shuffled its dataset in place) where "fresh" draws a new permutation;
    ``last_batch`` "drop" trains on full batches only (quantcorr) where "keep" keeps the last
    partial one (geometry)."""

    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    max_seq_len: int
    dropout: float
    seed: int
    epochs: int
    lr: float
    optimizer: Literal["adam", "adamw"]
    weight_decay: float
    batch_size: int
    grad_clip: float
    reshuffle: Literal["in_place", "fresh"]
    last_batch: Literal["drop", "keep"]

    def new_model(self, vocab_size: int) -> CharTransformer:
        return CharTransformer(vocab_size, self.d_model, self.n_heads, self.n_layers, self.d_ff,
                               max_seq_len=self.max_seq_len, dropout=self.dropout)

    def new_optimizer(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr)

    def new_batches(self, n_train: int, device: str | torch.device) -> Batches:
        return Batches(n_train, self.batch_size, keep_last=self.last_batch == "keep",
                       in_place=self.reshuffle == "in_place", device=device)

    def stage_key(self, data: CharData, device: str) -> dict:
        """What determines the trained weights and nothing else: a setting that cannot change them
        stays out, so that studies with different habits still share a backbone where the habits
        make no difference (the reshuffle rule with at most one epoch, the last batch when the batch
        size divides the train set, the weight decay of Adam, all of training without epochs)."""
        n_train = len(data.train_x)
        key = {"stage": "char_transformer_backbone", "v": 2, "text_sha1": data.text_sha1,
               "seq_len": data.train_x.shape[1], "n_train": n_train, "d_model": self.d_model,
               "n_heads": self.n_heads, "n_layers": self.n_layers, "d_ff": self.d_ff,
               "max_seq_len": self.max_seq_len, "seed": self.seed, "device": str(device)}
        if self.epochs:
            key.update(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, batch_size=self.batch_size,
                       grad_clip=self.grad_clip, dropout=self.dropout)
            if self.optimizer == "adamw":
                key["weight_decay"] = self.weight_decay
            if self.epochs > 1:
                key["reshuffle"] = self.reshuffle
            if n_train % self.batch_size:
                key["last_batch"] = self.last_batch
        return key


def trained_backbone(recipe: BackboneRecipe, data: CharData, ctx, ckpt: Checkpointer,
                     stage_cache: bool) -> tuple[CharTransformer, torch.Tensor]:
    """The float backbone (frozen, eval mode) and its last epoch's order of the train sequences,
    from the stage cache (or the trial's checkpoint) or trained here."""
    built = staged(stage_cache, ctx, ckpt, recipe.stage_key(data, ctx.device),
                   lambda: _train_backbone(recipe, data, ckpt, ctx))
    model = frozen(load_state(recipe.new_model(data.vocab_size), built["model"], ctx.device)).eval()
    return model, built["order"]


def _train_backbone(recipe: BackboneRecipe, data: CharData, ckpt: Checkpointer, ctx) -> dict:
    torch.manual_seed(recipe.seed)
    model = recipe.new_model(data.vocab_size).to(ctx.device)
    batches = recipe.new_batches(len(data.train_x), ctx.device)
    model.train()
    train_epochs(model, recipe.new_optimizer(model.parameters()), batches, recipe.epochs,
                 lambda idx: lm_loss(model(data.train_x[idx]), data.train_y[idx]),
                 ckpt=ckpt, ctx=ctx, phase="float", clip=recipe.grad_clip)
    return {"model": state_to_bytes(model), "order": batches.order}
