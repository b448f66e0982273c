"""Block networks: states h_0 -> h_1 -> ... -> h_L, then a head that gives logits.

Both nets share one interface so credit sources and metrics never look inside a block:
``states(x)`` (all states, detached), ``block_outputs(x)`` (each block's output with a graph only
inside that block, for the block-local surrogate) and ``forward_from(l, h)`` (run blocks l+1..L and
the head from state h_l).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def phi(z: torch.Tensor, alpha: float) -> torch.Tensor:
    """The ladder nonlinearity phi_alpha(z) = (1 - alpha) z + alpha tanh(z)."""
    if alpha == 0.0:
        return z
    return (1.0 - alpha) * z + alpha * torch.tanh(z)


class BlockNet(nn.Module):
    """Common plumbing. Subclasses set ``stem`` (module or None), ``blocks`` and ``head``."""

    stem: nn.Module | None
    blocks: nn.ModuleList
    head: nn.Module

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def credit_layers(self) -> list[int]:
        """States whose credit trains parameters: h_0 only when there is a stem (embedding)."""
        return list(range(0 if self.stem is not None else 1, self.depth + 1))

    def first_state(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x) if self.stem is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first_state(x)
        for blk in self.blocks:
            h = blk(h)
        return self.head(h)

    def forward_from(self, l: int, h: torch.Tensor) -> torch.Tensor:
        """Logits from state h_l: blocks l+1..L, then the head."""
        for blk in self.blocks[l:]:
            h = blk(h)
        return self.head(h)

    @torch.no_grad()
    def states(self, x: torch.Tensor) -> list[torch.Tensor]:
        hs = [self.first_state(x)]
        for blk in self.blocks:
            hs.append(blk(hs[-1]))
        return hs

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        """F_l(h_{l-1}) with h_{l-1} detached, for l = 0..L (None for a parameter-free h_0)."""
        outs: list[torch.Tensor | None] = []
        if self.stem is not None:
            outs.append(self.stem(x))
            h = outs[0].detach()
        else:
            outs.append(None)
            h = x
        for blk in self.blocks:
            o = blk(h)
            outs.append(o)
            h = o.detach()
        return outs


class PhiBlock(nn.Module):
    """h -> phi_alpha(W h + b); W ~ N(0, 1/d) so the state scale matches the teacher's layers."""

    def __init__(self, width: int, alpha: float):
        super().__init__()
        self.alpha = float(alpha)
        self.linear = nn.Linear(width, width)
        nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(width))
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return phi(self.linear(h), self.alpha)


class LadderNet(BlockNet):
    """Student of the synthetic task: h_0 = x, h_l = phi_alpha(W_l h_{l-1} + b_l), linear head.
    No residual: at alpha = 1 the block Jacobians are far from the identity, as in the seed."""

    def __init__(self, width: int, depth: int, n_classes: int, alpha: float):
        super().__init__()
        self.stem = None
        self.blocks = nn.ModuleList(PhiBlock(width, alpha) for _ in range(depth))
        self.head = nn.Linear(width, n_classes)


class ResBlock(nn.Module):
    """Pre-LN residual MLP block h + W2 GELU(W1 LN(h)), hidden width = d."""

    def __init__(self, width: int):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.gelu(self.fc1(self.ln(h))))


class ResidualMLP(BlockNet):
    """CIFAR model: embed Linear(3072 -> d) (block 0, trained with a_0), L pre-LN residual blocks,
    terminal LayerNorm ``out_ln`` and a Linear head (together: ``head``)."""

    def __init__(self, in_dim: int, width: int, depth: int, n_classes: int):
        super().__init__()
        self.stem = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_classes))


def true_gradients(net: BlockNet, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """(states h_0..h_L, g_l = d l_i / d h_l per sample, per-sample loss). The per-sample losses
    are summed, so each sample's gradient is its own (no LayerNorm/BatchNorm couples samples)."""
    with torch.enable_grad():
        h = net.first_state(x) if net.stem is not None else x.detach().clone().requires_grad_(True)
        hs = [h]
        for blk in net.blocks:
            hs.append(blk(hs[-1]))
        loss = F.cross_entropy(net.head(hs[-1]), y, reduction="none")
        grads = torch.autograd.grad(loss.sum(), hs)
    return [h.detach() for h in hs], [g.detach() for g in grads], loss.detach()
