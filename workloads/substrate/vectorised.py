"""Vectorised trials: M trials of the same shapes trained and evaluated as one batched computation
(docs/studies/quantization-correction.md, 'Vectorised trials').

Every weight of the char transformer and of its correctors carries a leading *member* dimension:
``Stack`` holds, for each parameter name of the unbatched module's ``state_dict`` (in that order,
which is also its ``parameters()`` order), one tensor of shape ``(M, *shape)``. A linear layer is
then one ``baddbmm``, a LayerNorm one normalisation with per-member affine parameters, an
embedding one lookup in the M tables laid end to end. The members never mix: every op is per
member, the loss that is back-propagated is the sum of the members' losses (so each member's
gradient is its own), gradients are clipped per member, and Adam is elementwise.

RNG: each member keeps its own CPU generator state (``MemberRNG``) and every random draw of the
unbatched trial (the model's init, the epoch permutations of ``Batches``, the dropout masks) is
made from that state, in the unbatched order, with the same op on the same shape. On the CPU the
masks are therefore the ones the unbatched trial draws (``F.dropout`` of a tensor of ones is the
mask ``F.dropout(x)`` multiplies ``x`` by; the attention's dropout is the math path of
``scaled_dot_product_attention``, which the CPU takes whenever dropout is on). Every op is the
unbatched one per member, reduced in the same order (gradient clipping included: each member's
total norm is computed alone), so on the CPU a member's metrics are bit for bit those of its
unbatched trial, whatever its group-mates (tests/orchestrator/test_determinism.py; the batched
GEMMs give the unbatched ones' bits on the CPUs tried). On CUDA the fused dropout kernels draw
their masks inside the kernel, so masks cannot be reproduced outside it: there the batched path
draws its own masks (statistically the same, not the same numbers) from the global CUDA stream.

Checkpoints: ``Stack.member_bytes`` and ``member_optimizer_state`` cut one member out, in the
format of the unbatched loops (workloads.substrate.loops), so a member of an interrupted group
resumes alone through the ordinary ``run``, and ``stack_optimizer_states`` puts members' states
back together to resume a group.
"""
from __future__ import annotations

import io
import math
from contextlib import contextmanager
from collections.abc import Mapping
from typing import Callable, Iterator, Sequence

import torch
from torch.nn import functional as F

from .correction import CorrectorBase, Point
from .quant import Calibrator, absmax_scale


# -------------------------------------------------------------------------------- stacked weights
class Stack:
    """Per-member copies of one module's parameters on a leading member dimension."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.t = tensors

    @classmethod
    def of(cls, states: Sequence[dict[str, torch.Tensor]], device: str | torch.device,
           requires_grad: bool = False) -> "Stack":
        names = list(states[0])
        out = {}
        for n in names:
            v = torch.stack([s[n].detach().to(device) for s in states])
            out[n] = v.requires_grad_(requires_grad) if requires_grad else v
        return cls(out)

    @classmethod
    def of_bytes(cls, blobs: Sequence[bytes], device, requires_grad: bool = False) -> "Stack":
        return cls.of([torch.load(io.BytesIO(b), map_location="cpu", weights_only=True) for b in blobs],
                      device, requires_grad)

    @property
    def members(self) -> int:
        return next(iter(self.t.values())).shape[0]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.t[name]

    def params(self) -> list[torch.Tensor]:
        return list(self.t.values())

    def select(self, index: Sequence[int]) -> "Stack":
        """Members ``index`` (repeats allowed) as a new stack (a copy, no gradient)."""
        ix = torch.as_tensor(list(index), device=next(iter(self.t.values())).device)
        return Stack({n: v.detach().index_select(0, ix) for n, v in self.t.items()})

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        # clone: a view would pickle the whole stack's storage
        return {n: v[i].detach().cpu().clone() for n, v in self.t.items()}

    def member_bytes(self, i: int) -> bytes:
        """Member i's weights in the format of ``stages.state_to_bytes`` of the unbatched module."""
        buf = io.BytesIO()
        torch.save(self.member_state(i), buf)
        return buf.getvalue()

    def load_member_bytes(self, i: int, blob: bytes) -> None:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        with torch.no_grad():
            for n, v in self.t.items():
                v[i].copy_(state[n])


def member_optimizer_state(opt: torch.optim.Optimizer, i: int) -> dict:
    """Member i's share of a torch optimizer over stacked parameters: the ``state_dict`` the same
    optimizer over member i's unbatched parameters (same order) would have. Per-parameter tensors
    with the member dimension are sliced; scalars (Adam's ``step``) are shared."""
    sd = opt.state_dict()
    state = {}
    for j, s in sd["state"].items():
        state[j] = {k: (v[i].detach().cpu().clone() if torch.is_tensor(v) and v.dim() > 0 else
                        (v.detach().cpu().clone() if torch.is_tensor(v) else v)) for k, v in s.items()}
    return {"state": state, "param_groups": [dict(g) for g in sd["param_groups"]]}


def stack_optimizer_states(states: Sequence[dict]) -> dict:
    """The members' optimizer ``state_dict``s (same step, same hyperparameters) as one for the
    stacked parameters."""
    first = states[0]
    stacked = {}
    for j, s in first["state"].items():
        stacked[j] = {k: (torch.stack([st["state"][j][k] for st in states]) if torch.is_tensor(v) and v.dim() > 0
                          else v) for k, v in s.items()}
    return {"state": stacked, "param_groups": first["param_groups"]}


# -------------------------------------------------------------------------------- member RNG streams
class MemberRNG:
    """One CPU generator state per member, swapped into torch's global generator for each of that
    member's draws (the unbatched trial draws from the global generator)."""

    def __init__(self, states: Sequence[torch.Tensor]):
        self.states = list(states)

    @classmethod
    def seeded(cls, seeds: Sequence[int]) -> "MemberRNG":
        states = []
        for s in seeds:
            torch.manual_seed(s)
            states.append(torch.get_rng_state())
        return cls(states)

    @contextmanager
    def member(self, i: int) -> Iterator[None]:
        torch.set_rng_state(self.states[i])
        try:
            yield
        finally:
            self.states[i] = torch.get_rng_state()


class Dropout:
    """Dropout for a batched forward. ``exact`` (CPU): each member's mask is drawn from its own
    stream, with the op and shape of the unbatched trial, in the unbatched order. Otherwise (CUDA)
    one ``F.dropout`` over the whole stack, from the global stream."""

    def __init__(self, p: float, rng: MemberRNG | None, exact: bool):
        self.p, self.rng, self.exact = float(p), rng, exact

    @property
    def active(self) -> bool:
        return self.p > 0

    def masks(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """(M, *shape): member i's ``F.dropout`` noise for a tensor of ``shape``. On the CPU,
        ``F.dropout(x)`` is ``x * empty_like(x).bernoulli_(1 - p).div_(1 - p)`` (ATen's _dropout_impl);
        the same draw, from member i's state, into row i of one buffer."""
        out = torch.empty((len(self.rng.states), *shape), dtype=like.dtype, device=like.device)
        for i in range(len(self.rng.states)):
            with self.rng.member(i):
                out[i].bernoulli_(1 - self.p)
        return out.div_(1 - self.p)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        if not self.exact:
            return F.dropout(x, self.p, True)
        return x * self.masks(x.shape[1:], x)


# -------------------------------------------------------------------------------- batched layers
def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (M, ..., in), w (M, out, in), b (M, out) -> (M, ..., out)."""
    M = x.shape[0]
    y = torch.baddbmm(b.unsqueeze(1), x.reshape(M, -1, x.shape[-1]), w.transpose(1, 2))
    return y.view(*x.shape[:-1], w.shape[1])


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per member, the fused ``F.layer_norm`` of the unbatched model (its numerics, and faster on the
    CPU than a normalisation followed by a per-member affine over the whole stack)."""
    C = x.shape[-1:]
    return torch.stack([F.layer_norm(xi, C, wi, bi, eps) for xi, wi, bi in zip(x.unbind(0), w.unbind(0), b.unbind(0))])


def embedding(idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """idx (M, ...) long, w (M, V, C) -> (M, ..., C): the M tables laid end to end, one lookup."""
    M, V = w.shape[:2]
    offset = (torch.arange(M, device=idx.device) * V).view((M,) + (1,) * (idx.dim() - 1))
    return F.embedding(idx + offset, w.reshape(M * V, w.shape[2]))


def per_member(x: torch.Tensor, members: int) -> torch.Tensor:
    """A tensor shared by all members (no member dimension) expanded to (M, ...)."""
    return x.unsqueeze(0).expand(members, *x.shape)


class BatchedCharTransformer:
    """The forward pass of workloads.substrate.char_transformer.CharTransformer over a ``Stack`` of
    its parameters (state_dict names), with the same taps at the same points."""

    def __init__(self, params: Stack, n_layers: int, n_heads: int):
        self.P, self.n_layers, self.n_heads = params, n_layers, n_heads
        d = params["tok.weight"].shape[2]
        self.points = [Point(f"{b}_{s}", "blocks", d) for b in range(n_layers) for s in ("attn", "ffn")]

    @property
    def members(self) -> int:
        return self.P.members

    def __call__(self, idx: torch.Tensor, tap=None, drop: Dropout | None = None) -> torch.Tensor:
        """idx (M, B, T) or (B, T) (the same sequences for every member) -> logits (M, B, T, V).
        ``drop``: dropout (train mode); None: eval mode."""
        P, M = self.P, self.members
        if idx.dim() == 2:
            idx = per_member(idx, M)
        T = idx.shape[-1]
        h = embedding(idx, P["tok.weight"]) + P["pos.weight"][:, :T].unsqueeze(1)
        if drop is not None:
            h = drop(h)
        legacy = getattr(tap, "legacy_residual", False)
        for b in range(self.n_layers):
            pre = f"blocks.{b}."
            for name, ln in (("attn", "ln1"), ("ffn", "ln2")):
                z = layer_norm(h, P[pre + ln + ".weight"], P[pre + ln + ".bias"])
                out = self._attention(z, pre, drop) if name == "attn" else self._ffn(z, pre, drop)
                h = (z if legacy else h) + out
                if tap is not None:
                    h = tap(f"{b}_{name}", "blocks", h)
        h = layer_norm(h, P["ln_f.weight"], P["ln_f.bias"])
        return linear(h, P["head.weight"], P["head.bias"])

    def _ffn(self, z: torch.Tensor, pre: str, drop: Dropout | None) -> torch.Tensor:
        P = self.P
        y = linear(F.gelu(linear(z, P[pre + "ffn.0.weight"], P[pre + "ffn.0.bias"])),
                   P[pre + "ffn.2.weight"], P[pre + "ffn.2.bias"])
        return drop(y) if drop is not None else y

    def _attention(self, x: torch.Tensor, pre: str, drop: Dropout | None) -> torch.Tensor:
        P, H = self.P, self.n_heads
        M, B, T, C = x.shape
        hd = C // H
        q, k, v = linear(x, P[pre + "attn.qkv.weight"], P[pre + "attn.qkv.bias"]).view(
            M, B, T, 3, H, hd).permute(3, 0, 1, 4, 2, 5)
        if drop is not None and drop.active and drop.exact:
            # ATen's _scaled_dot_product_attention_math (what the CPU runs when dropout is on): q and
            # k each scaled by sqrt(1/sqrt(hd)), the causal mask, softmax, dropout, @ v; with each
            # member's mask drawn as the unbatched trial draws it
            sf = math.sqrt(1.0 / math.sqrt(hd))
            att = (q * sf) @ (k.transpose(-1, -2) * sf)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(causal, float("-inf")).softmax(-1)
            y = (att * drop.masks(att.shape[1:], att)) @ v
        else:
            p = drop.p if drop is not None else 0.0
            fold = lambda t: t.reshape(M * B, H, T, hd)  # noqa: E731 - members folded into the batch
            y = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), dropout_p=p, is_causal=True)
            y = y.view(M, B, H, T, hd)
        return linear(y.transpose(2, 3).reshape(M, B, T, C), P[pre + "attn.proj.weight"], P[pre + "attn.proj.bias"])


# -------------------------------------------------------------------------------- correctors and calibration
# The taps are correction.FloatTap and correction.QuantTap themselves: they only need correctors that
# take a stacked error, and per-member scales, which broadcast over the member dimension.
class StackedCorrector(CorrectorBase):
    """One corrector (``correction.Corrector``) of every member: its layers are batched linears over
    the members' weights in a ``Stack``."""

    def __init__(self, params: Stack, key: str, hidden: int):
        self.P, self.key, self.hidden = params, key, hidden
        self._init_qat()

    def layer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.P[f"{self.key}.{name}.weight"], self.P[f"{self.key}.{name}.bias"])

    def __call__(self, err: torch.Tensor) -> torch.Tensor:
        return self.correct(err)


class BatchedCorrectors(Mapping):
    """The correctors of ``correction.build_correctors`` (a ModuleDict) for M members: the same keys,
    one ``Stack`` of the ModuleDict's state_dict. ``correction``'s taps, calibration and QAT switch
    take it in place of the ModuleDict."""

    def __init__(self, params: Stack, keys: Sequence[str], hidden: int):
        self.P, self.hidden = params, hidden
        self.by_key = {k: StackedCorrector(params, k, hidden) for k in keys}

    def __getitem__(self, key: str) -> StackedCorrector:
        return self.by_key[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_key)

    def __len__(self) -> int:
        return len(self.by_key)

    def of_members(self, index: Sequence[int]) -> "BatchedCorrectors":
        """Members ``index``' correctors as trainable copies (no QAT state)."""
        return BatchedCorrectors(Stack({n: v.detach()[index].clone().requires_grad_(True) for n, v in self.P.t.items()}),
                                 list(self), self.hidden)


class MemberCalibrator(Calibrator):
    """``quant.Calibrator`` for tensors with a leading member dimension: each member's running absmax,
    and its scales as (M, 1, 1, 1) tensors (``member_scales``)."""

    def observe(self, key: str, x: torch.Tensor) -> None:
        m = x.detach().abs().flatten(1).amax(1).tolist() if x[0].numel() else [0.0] * x.shape[0]
        prev = self.absmax.get(key, [0.0] * len(m))  # the running max starts from 0, as Calibrator's
        self.absmax[key] = [max(a, b) for a, b in zip(prev, m)]
        self.device = x.device

    def scales(self, bits: int) -> dict[str, torch.Tensor]:
        return {k: member_scales([absmax_scale(a, bits) for a in v], self.device) for k, v in self.absmax.items()}


def member_scales(values: Sequence[float], device) -> torch.Tensor:
    """Per-member scales (Python floats, as the unbatched code keeps them) as an (M, 1, 1, 1)
    float32 tensor: the same float32 value each unbatched op would cast its scalar to."""
    return torch.tensor(list(values), dtype=torch.float32, device=device).view(-1, 1, 1, 1)


# -------------------------------------------------------------------------------- losses, steps, eval
def lm_losses(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """(M,) per-member ``char_transformer.lm_loss``; y (M, B, T) or (B, T) shared."""
    V = logits.shape[-1]
    ys = y.unbind(0) if y.dim() == logits.dim() - 1 else [y] * logits.shape[0]
    return torch.stack([F.cross_entropy(li.reshape(-1, V), yi.reshape(-1), reduction=reduction)
                        for li, yi in zip(logits.unbind(0), ys)])  # unbind: one copy in the backward


def mse_losses(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(M,) per-member ``F.mse_loss`` (mean)."""
    return torch.stack([F.mse_loss(ai, bi) for ai, bi in zip(a.unbind(0), b.unbind(0))])


def clip_per_member(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_`` applied to each member's gradients separately, with its numerics:
    each member's total norm is ``nn.utils.get_total_norm`` of that member's own gradients (the
    function ``clip_grad_norm_`` calls) and its coefficient is computed alone, so a member's clipped
    gradients are bit for bit those of its unbatched trial whatever the group's size. (Norms over
    the member dimension of the stacked gradients reduce in another order: a member's coefficient
    then changed in the last bit with the group's size, and so did its weights.)"""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    coef = torch.stack([torch.clamp(max_norm / (_total_norm([g[i] for g in grads]) + 1e-6), max=1.0)
                        for i in range(grads[0].shape[0])])
    for g in grads:
        g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)))


def _total_norm(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of ``grads`` as ``clip_grad_norm_`` computes it: ``nn.utils.get_total_norm``
    (torch >= 2.6), else the same reduction written out (the norm of the per-tensor norms)."""
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(grads, 2.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, 2.0) for g in grads]), 2.0)


def step_members(opt: torch.optim.Optimizer, losses: torch.Tensor, params: Sequence[torch.Tensor],
                 clip: float | None = None) -> list[float]:
    """``loops.optimizer_step`` for M members at once; returns each member's loss."""
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()  # d(sum)/d(loss_i) = 1: each member gets its own gradient
    if clip is not None:
        clip_per_member(params, clip)
    opt.step()
    return losses.detach().tolist()


@torch.no_grad()
def mean_ce_members(model: BatchedCharTransformer, X: torch.Tensor, Y: torch.Tensor, make_tap,
                    batch: int = 64) -> list[float]:
    """``char_transformer.mean_ce`` per member (eval mode); X, Y (N, T) shared or (M, N, T)."""
    M = model.members
    shared = X.dim() == 2
    totals, count = [0.0] * M, 0
    n = X.shape[0] if shared else X.shape[1]
    for i in range(0, n, batch):
        x = X[i:i + batch] if shared else X[:, i:i + batch]
        y = Y[i:i + batch] if shared else Y[:, i:i + batch]
        sums = lm_losses(model(x, make_tap()), y, "sum").tolist()
        totals = [t + s for t, s in zip(totals, sums)]
        count += (y[0] if not shared else y).numel()
    return [t / count for t in totals]


# -------------------------------------------------------------------------------- the batched epoch loop
class Unit:
    """One trained thing of a batched loop (a backbone, or one member's correctors): where its
    history goes (``report_to``: contexts), where its per-epoch progress goes (``ckpts``:
    ``stages.Checkpointer``s) and, once it has one, its error (``Diverged``)."""

    def __init__(self, report_to: Sequence = (), ckpts: Sequence = ()):
        self.report_to, self.ckpts = list(report_to), list(ckpts)
        self.error: BaseException | None = None


def record_losses(units: Sequence[Unit], step: int, values: Sequence[float], last: list[float], *,
                  phase: str, report: bool = True) -> list[int]:
    """The check and report of ``loops.train_steps`` / ``train_epochs`` for each unit still
    training: its loss goes into ``last[k]``; a non-finite one sets the unit's ``error`` to the
    ``Diverged`` the unbatched loop raises (the unit then stops, the others go on), a finite one is
    reported when ``report``. Returns the units whose loss was finite."""
    from orchestrator import check_finite  # light, kept beside its use

    finite = []
    for k, u in enumerate(units):
        if u.error is not None:
            continue
        last[k] = values[k]
        try:
            check_finite(step, **{f"{phase}_loss": last[k]})
        except Exception as e:  # noqa: BLE001 - Diverged
            u.error = e
            continue
        finite.append(k)
        if report:
            for ctx in u.report_to:
                ctx.report(step, phase=phase, loss=last[k])
    return finite


def resume_members(stack: Stack, opt: torch.optim.Optimizer, batches: Sequence, rng: MemberRNG,
                   progress: Sequence[dict]) -> tuple[int, list[float]]:
    """``loops._resume`` for every unit of a batched loop (all at the same epoch)."""
    for i, pr in enumerate(progress):
        stack.load_member_bytes(i, pr["module"])
        batches[i].load_state_dict(pr["batches"])
        rng.states[i] = pr["rng"]
    opt.load_state_dict(stack_optimizer_states([pr["opt"] for pr in progress]))
    return progress[0]["epoch"], [pr["loss"] for pr in progress]


def train_epochs_members(units: Sequence[Unit], stack: Stack, opt: torch.optim.Optimizer, batches: Sequence,
                         rng: MemberRNG, epochs: int, loss_of: Callable[[torch.Tensor], torch.Tensor], *,
                         phase: str, clip: float | None = None, progress: Sequence[dict] | None = None) -> list[float]:
    """``loops.train_epochs`` for K units at once (``stack``'s members, ``batches[k]`` and
    ``rng.states[k]`` are unit k's): ``loss_of(idx)`` maps the (K, batch) sample indices to the (K,)
    losses. Each epoch, each unit's permutation is drawn from its own stream (``Batches`` without a
    generator draws from the global one); its loss is checked and reported (``record_losses``) and
    checkpointed in the unbatched format. Returns the units' last epoch losses."""
    K = len(units)
    start, last = resume_members(stack, opt, batches, rng, progress) if progress else (0, [float("nan")] * K)
    for epoch in range(start + 1, epochs + 1):
        lists = []
        for k, b in enumerate(batches):
            with rng.member(k):
                lists.append(b.next_epoch())
        totals, count = [0.0] * K, 0
        for j in range(len(lists[0])):
            idx = torch.stack([lst[j] for lst in lists])
            values = step_members(opt, loss_of(idx), stack.params(), clip)
            totals = [t + v for t, v in zip(totals, values)]
            count += 1
        for k in record_losses(units, epoch, [t / max(count, 1) for t in totals], last, phase=phase):
            if units[k].ckpts:
                state = {"module": stack.member_bytes(k), "opt": member_optimizer_state(opt, k),
                         "batches": batches[k].state_dict(), "rng": rng.states[k], "epoch": epoch, "loss": last[k]}
                for ck in units[k].ckpts:
                    ck.put(f"{phase}_progress", state)
    return last
