"""Credit sources: each gives every credit layer l a vector a_l (an estimate of dl/dh_l, per sample).

BP uses the true gradient; DFA a fixed random projection of the output error; FA a chain of fixed
random matrices; SB the gradient of the loss through a learned state predictor P(h_l, t_l, s) ~ h_L;
CB the gradient of a learned scalar value net V(h_l, t_l, s). SB and CB learn "on the side" from
every training batch (``learn``). All randomness comes from generators seeded by the trial, and
everything a source draws or learns is in its ``state_dict`` (saved with the trial's checkpoint:
re-drawing DFA matrices after a resume would silently change the method). Formulas:
docs/studies/credit-bridge.md, 'Credit sources'.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .nets import BlockNet, true_gradients
from .params import Settings


# ----------------------------------------------------------------------------- batch record
@dataclass
class Batch:
    """One forward pass: inputs, labels, detached states (L+1, B, d), logits, per-sample loss."""

    x: torch.Tensor
    y: torch.Tensor
    hs: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor
    n_classes: int
    _delta: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def of(cls, net: BlockNet, x: torch.Tensor, y: torch.Tensor, states: list[torch.Tensor] | None = None) -> "Batch":
        with torch.no_grad():
            hs = states if states is not None else net.states(x)
            logits = net.head(hs[-1])
            loss = F.cross_entropy(logits, y, reduction="none")
        return cls(x, y, torch.stack([h.detach() for h in hs]), logits.detach(), loss.detach(), logits.shape[-1])

    def e_T(self) -> torch.Tensor:
        """Softmax error softmax(z) - onehot(y), (B, C)."""
        return torch.softmax(self.logits, -1) - F.one_hot(self.y, self.n_classes).to(self.logits.dtype)

    def delta_L(self, net: BlockNet) -> torch.Tensor:
        """dl_i/dh_L per sample through the head only (output-local), (B, d)."""
        if self._delta is None:
            with torch.enable_grad():
                h = self.hs[-1].clone().requires_grad_(True)
                loss = F.cross_entropy(net.head(h), self.y, reduction="sum")
                self._delta = torch.autograd.grad(loss, h)[0].detach()
        return self._delta


def rms_normalize(a: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """a / (RMS(a) + eps) along the feature axis, per sample."""
    return a / (a.pow(2).mean(-1, keepdim=True).sqrt() + eps)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of depth fractions t in [0, 1]: (n,) -> (n, dim)."""
    half = dim // 2
    freqs = math.pi * torch.exp(torch.linspace(0.0, math.log(16.0), half, device=t.device, dtype=t.dtype))
    ang = t[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], -1)
    return F.pad(emb, (0, dim - 2 * half))


def layer_times(depth: int, device, dtype=torch.float32) -> torch.Tensor:
    return torch.arange(depth + 1, device=device, dtype=dtype) / depth


# ----------------------------------------------------------------------------- sources
class CreditSource:
    """Interface. ``credits`` returns a (L+1, B, d) tensor (row l = a_l; rows of states without
    trainable parameters are computed but unused)."""

    learns = False

    def credits(self, net: BlockNet, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def learn(self, net: BlockNet, batch: Batch, noise: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Learned sources: one update of the credit model on this batch, returning the credit of
        the model as it was before the update (computed from the same forward pass) and the losses."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class BPCredit(CreditSource):
    def credits(self, net: BlockNet, batch: Batch) -> torch.Tensor:
        _, grads, _ = true_gradients(net, batch.x, batch.y)
        return torch.stack(grads)


class DFACredit(CreditSource):
    """a_l = B_l e_T with fixed B_l (d x C), entries N(0, std^2), std = 1/sqrt(C) by default."""

    def __init__(self, width: int, depth: int, n_classes: int, gen: torch.Generator, std: float | None = None,
                 device: str = "cpu"):
        std = std if std is not None else 1.0 / math.sqrt(n_classes)
        self.B = (torch.randn(depth + 1, width, n_classes, generator=gen) * std).to(device)

    def credits(self, net: BlockNet, batch: Batch) -> torch.Tensor:
        return torch.einsum("ldc,bc->lbd", self.B, batch.e_T())

    def state_dict(self) -> dict:
        return {"B": self.B.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.B = state["B"].to(self.B.device, self.B.dtype)


class FACredit(CreditSource):
    """Feedback alignment in its simplest chain form: a_L = B_L e_T (B_L: d x C, like DFA), then
    a_l = B_l a_{l+1} with fixed random d x d matrices (entries N(0, 1/d))."""

    def __init__(self, width: int, depth: int, n_classes: int, gen: torch.Generator, std: float | None = None,
                 device: str = "cpu"):
        top_std = std if std is not None else 1.0 / math.sqrt(n_classes)
        self.B_top = (torch.randn(width, n_classes, generator=gen) * top_std).to(device)
        self.B = (torch.randn(depth, width, width, generator=gen) / math.sqrt(width)).to(device)

    def credits(self, net: BlockNet, batch: Batch) -> torch.Tensor:
        depth = self.B.shape[0]
        a = [None] * (depth + 1)
        a[depth] = batch.e_T() @ self.B_top.T
        for l in range(depth - 1, -1, -1):
            a[l] = a[l + 1] @ self.B[l].T
        return torch.stack(a)

    def state_dict(self) -> dict:
        return {"B_top": self.B_top.detach().cpu(), "B": self.B.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.B_top = state["B_top"].to(self.B_top.device)
        self.B = state["B"].to(self.B.device)


class CondMLP(nn.Module):
    """f(LN(h), emb(t), s): an MLP with ``layers`` hidden layers of ``hidden`` units and SiLU.
    Takes h as (n, B, d) with t as (n,) and s as (B, s_dim)."""

    def __init__(self, width: int, s_dim: int, time_dim: int, hidden: int, layers: int, out_dim: int):
        super().__init__()
        self.time_dim = time_dim
        self.ln = nn.LayerNorm(width, elementwise_affine=False)
        dims = [width + time_dim + s_dim] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.SiLU()]
        mods.append(nn.Linear(dims[-1], out_dim))
        self.mlp = nn.Sequential(*mods)

    def forward(self, h: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        n, b = h.shape[0], h.shape[1]
        temb = time_embedding(t.to(h.dtype), self.time_dim)[:, None, :].expand(n, b, self.time_dim)
        sx = s[None].expand(n, b, s.shape[-1])
        return self.mlp(torch.cat([self.ln(h), temb, sx], -1))


class CondCode:
    """The conditioning code s fed to the value net / predictor."""

    def __init__(self, kind: str, width: int, n_classes: int, proj_dim: int, gen: torch.Generator, device: str):
        self.kind = kind
        base = n_classes if kind.startswith("eT") else width
        self.dim = base + (proj_dim if kind.endswith("+proj") else 0)
        # fixed random projection of h_L (only used by the "+proj" codes; drawn always so the
        # generator advances the same way for every code)
        self.proj = (torch.randn(width, proj_dim, generator=gen) / math.sqrt(width)).to(device)

    def __call__(self, net: BlockNet, batch: Batch) -> torch.Tensor:
        s = batch.e_T() if self.kind.startswith("eT") else batch.delta_L(net)
        if self.kind.endswith("+proj"):
            s = torch.cat([s, batch.hs[-1] @ self.proj], -1)
        return s


class _Learned(CreditSource):
    learns = True

    def __init__(self, cfg: Settings, out_dim: int, gen: torch.Generator, device: str):
        self.cfg = cfg
        self.code = CondCode(cfg.cond, cfg.width, cfg.n_classes, cfg.proj_dim, gen, device)
        self.net = CondMLP(cfg.width, self.code.dim, cfg.time_dim, cfg.vnet_hidden, cfg.vnet_layers, out_dim).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.vnet_lr)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "proj": self.code.proj.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.code.proj = state["proj"].to(self.code.proj.device)


class StateBridge(_Learned):
    """P(h_l, t_l, s) ~ h_L trained with normalized MSE; a_l = grad_{h_l} l(head(P(h_l, t_l, s)), y)
    with the head frozen (it is only differentiated through, never updated here)."""

    def __init__(self, cfg: Settings, gen: torch.Generator, device: str):
        super().__init__(cfg, cfg.width, gen, device)

    def _credit(self, net: BlockNet, batch: Batch, H: torch.Tensor, pred: torch.Tensor, keep: bool) -> torch.Tensor:
        logits = net.head(pred.reshape(-1, pred.shape[-1]))
        loss = F.cross_entropy(logits, batch.y.repeat(H.shape[0]), reduction="sum")
        return torch.autograd.grad(loss, H, retain_graph=keep)[0].detach()

    def credits(self, net: BlockNet, batch: Batch) -> torch.Tensor:
        t = layer_times(batch.hs.shape[0] - 1, batch.hs.device)
        with torch.enable_grad():
            H = batch.hs.clone().requires_grad_(True)
            return self._credit(net, batch, H, self.net(H, t, self.code(net, batch)), keep=False)

    def learn(self, net: BlockNet, batch: Batch, noise: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        t = layer_times(batch.hs.shape[0] - 1, batch.hs.device)
        target = batch.hs[-1]
        H = batch.hs.clone().requires_grad_(True)
        pred = self.net(H, t, self.code(net, batch))
        credit = self._credit(net, batch, H, pred, keep=True)
        nmse = (pred - target[None]).pow(2).mean() / (target.var() + 1e-8)
        self.opt.zero_grad(set_to_none=True)
        nmse.backward(inputs=list(self.net.parameters()))
        self.opt.step()
        return credit, {"state_nmse": float(nmse.detach())}


class CreditBridge(_Learned):
    """Scalar value net V(LN(h_l), emb(t_l), s), a_l = grad_{h_l} V. Trained with
    (i) bridge consistency V(h_l, t_l) ~ softmin_k Vbar(h_{l+1} + sigma eps_k, t_{l+1}) (Vbar: EMA),
    (ii) terminal value V(h_L, t_L) ~ l(head(h_L), y) per sample,
    (iii) tgw * ||grad_h V(h_L, t_L) - dl/dh_L||^2 / ||dl/dh_L||^2 over the batch (``gm_norm: batch``),
          or tgw * mean (grad_h V - dl/dh_L / RMS(dl/dh_L))^2 per sample (``gm_norm: unit``)."""

    def __init__(self, cfg: Settings, gen: torch.Generator, device: str):
        super().__init__(cfg, 1, gen, device)
        self.target = copy.deepcopy(self.net).requires_grad_(False)

    def value(self, h: torch.Tensor, t: torch.Tensor, s: torch.Tensor, target: bool = False) -> torch.Tensor:
        return (self.target if target else self.net)(h, t, s).squeeze(-1)

    def credits(self, net: BlockNet, batch: Batch) -> torch.Tensor:
        t = layer_times(batch.hs.shape[0] - 1, batch.hs.device)
        s = self.code(net, batch)
        with torch.enable_grad():
            H = batch.hs.clone().requires_grad_(True)
            return torch.autograd.grad(self.value(H, t, s).sum(), H)[0].detach()

    def learn(self, net: BlockNet, batch: Batch, noise: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        hs = batch.hs
        n = hs.shape[0]
        t = layer_times(n - 1, hs.device)
        s = self.code(net, batch)
        with torch.no_grad():  # (i) the bridge target from the slow copy at the next states
            nxt = hs[1:]
            eps = torch.randn((cfg.bridge_k,) + tuple(nxt.shape), generator=noise, device=hs.device, dtype=hs.dtype)
            noisy = (nxt[None] + cfg.bridge_sigma * eps).reshape(-1, *nxt.shape[1:])
            vbar = self.value(noisy, t[1:].repeat(cfg.bridge_k), s, target=True).reshape(cfg.bridge_k, n - 1, -1)
            tau = cfg.softmin_tau
            soft = -tau * (torch.logsumexp(-vbar / tau, dim=0) - math.log(cfg.bridge_k))
        # one forward of V at every state serves the credit (grad wrt h) and losses (i)-(iii)
        H = hs.clone().requires_grad_(True)
        v = self.value(H, t, s)
        # retain_graph: the losses below backpropagate through v's graph again, also when tgw = 0
        # (then no double backward is needed, but grad() would otherwise free the graph)
        gv = torch.autograd.grad(v.sum(), H, create_graph=cfg.tgw > 0, retain_graph=True)[0]
        credit = gv.detach()
        bridge = (v[:-1] - soft).pow(2).mean()
        terminal = (v[-1] - batch.loss).pow(2).mean()
        total = bridge + terminal
        match = torch.zeros((), device=hs.device)
        if cfg.tgw > 0:  # (iii) a double backward through V at the terminal state
            g = batch.delta_L(net)
            if cfg.gm_norm == "unit":  # match a target rescaled to RMS 1 per sample
                match = (gv[-1] - rms_normalize(g, cfg.credit_eps)).pow(2).mean()
            else:  # relative error: the gradient keeps the scale of the values it is consistent with
                match = (gv[-1] - g).pow(2).mean() / (g.pow(2).mean() + 1e-12)
            total = total + cfg.tgw * match
        self.opt.zero_grad(set_to_none=True)
        total.backward(inputs=list(self.net.parameters()))
        self.opt.step()
        with torch.no_grad():
            for p_t, p in zip(self.target.parameters(), self.net.parameters()):
                p_t.lerp_(p, 1.0 - cfg.ema_decay)
        return credit, {"bridge_loss": float(bridge.detach()), "terminal_loss": float(terminal.detach()),
                        "gradmatch_loss": float(match.detach())}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "target": self.target.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.target.load_state_dict(state["target"])


def build_source(cfg: Settings, gen: torch.Generator, device: str) -> CreditSource:
    if cfg.method == "bp":
        return BPCredit()
    if cfg.method == "dfa":
        return DFACredit(cfg.width, cfg.depth, cfg.n_classes, gen, cfg.dfa_std, device)
    if cfg.method == "fa":
        return FACredit(cfg.width, cfg.depth, cfg.n_classes, gen, cfg.dfa_std, device)
    if cfg.method == "sb":
        return StateBridge(cfg, gen, device)
    if cfg.method == "cb":
        return CreditBridge(cfg, gen, device)
    raise ValueError(f"unknown method {cfg.method!r}")
