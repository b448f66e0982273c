"""Gamma, rho and the true gradients on small nets, checked against known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workloads.creditbridge.credit import Batch, DFACredit, rms_normalize
from workloads.creditbridge.metrics import cosine_per_sample, evaluate_credit, gamma, pearson
from workloads.creditbridge.nets import LadderNet, ResidualMLP, true_gradients


def small_ladder(alpha: float = 1.0, depth: int = 3, width: int = 24, classes: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    net = LadderNet(width, depth, classes, alpha)
    x = torch.randn(256, width)
    y = torch.randint(0, classes, (256,))
    return net, x, y


def small_resmlp(depth: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    net = ResidualMLP(40, 16, depth, 10)
    x = torch.randn(128, 40)
    y = torch.randint(0, 10, (128,))
    return net, x, y


def test_true_gradients_match_the_chain_rule_on_a_linear_net():
    net, x, y = small_ladder(alpha=0.0, depth=3)
    hs, grads, loss = true_gradients(net, x, y)
    e = torch.softmax(net(x), -1) - torch.nn.functional.one_hot(y, 5).float()
    g = e @ net.head.weight                     # dl/dh_L of per-sample CE
    assert torch.allclose(grads[3], g, atol=1e-6)
    for l in (2, 1, 0):                         # h_{l+1} = W h_l + b  =>  g_l = W^T g_{l+1}
        g = g @ net.blocks[l].linear.weight
        assert torch.allclose(grads[l], g, atol=1e-5)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(net(x), y, reduction="none"))


def test_hand_cosine_has_no_eps_clamp():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1e-30, 1e-30]])
    g = torch.tensor([[2.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    cos = cosine_per_sample(a, g)
    assert cos[0] == 1.0
    assert math.isnan(cos[1])                    # zero credit: undefined, not 0
    assert cos[2] == pytest.approx(1.0, abs=1e-6)  # tiny but nonzero: no underflow to 0/0
    mean, undefined = gamma(a[:2], g[:2])
    assert mean == 1.0 and undefined == 1


def test_pearson_constant_side_is_zero():
    assert pearson(np.ones(10), np.arange(10)) == 0.0
    assert pearson(np.arange(10), 3 * np.arange(10) + 1) == pytest.approx(1.0)


@pytest.mark.parametrize("make", [small_ladder, small_resmlp])
def test_bp_credit_gives_gamma_one_and_rho_above_099(make):
    net, x, y = make()
    hs, grads, _ = true_gradients(net, x, y)
    rows = evaluate_credit(net, hs, grads, torch.stack(grads), y, net.credit_layers, directions=32, eps=1e-3, seed=0)
    for r in rows:
        assert r["gamma"] == pytest.approx(1.0, abs=1e-5)
        assert r["rho"] > 0.99
        assert r["cos_undefined"] == 0
        # the normalized true gradient lowers the loss when nudged against
        assert r["nudge_eta0p003"] < 0 and r["nudge_eta0p01"] < r["nudge_eta0p003"]


def test_random_credit_gives_rho_near_zero():
    net, x, y = small_ladder()
    hs, grads, _ = true_gradients(net, x, y)
    noise = torch.randn(torch.stack(grads).shape, generator=torch.Generator().manual_seed(7))
    rows = evaluate_credit(net, hs, grads, noise, y, net.credit_layers, directions=32, eps=1e-3, seed=0,
                           rho_reference=True)
    for r in rows:
        assert abs(r["rho"]) < 0.05
        assert abs(r["gamma"]) < 0.1
        assert r["rho_bp_ref"] > 0.99            # the same directions do see the true gradient


def test_rho_needs_no_gradient_scale():
    """rho is a correlation: scaling every sample's credit by one constant leaves it unchanged."""
    net, x, y = small_ladder()
    hs, grads, _ = true_gradients(net, x, y)
    g = torch.stack(grads)
    noise = torch.randn(g.shape, generator=torch.Generator().manual_seed(1))
    a = g + noise * g.pow(2).mean(-1, keepdim=True).sqrt()   # noise as large as the signal, per dim
    r1 = evaluate_credit(net, hs, grads, a, y, [2], seed=3)[0]
    r2 = evaluate_credit(net, hs, grads, 1000.0 * a, y, [2], seed=3)[0]
    assert r1["rho"] == pytest.approx(r2["rho"], abs=1e-9)
    assert 0.2 < r1["rho"] < 0.99                # a noisy gradient: in between


def test_dfa_credit_is_the_fixed_projection_of_the_output_error():
    net, x, y = small_ladder(depth=2)
    dfa = DFACredit(24, 2, 5, torch.Generator().manual_seed(0))
    batch = Batch.of(net, x, y)
    a = dfa.credits(net, batch)
    e = torch.softmax(net(x), -1) - torch.nn.functional.one_hot(y, 5).float()
    assert torch.allclose(a[1], e @ dfa.B[1].T, atol=1e-6)
    assert dfa.B.std().item() == pytest.approx(1 / math.sqrt(5), rel=0.15)


def test_rms_normalize_is_per_sample():
    a = torch.tensor([[3.0, 4.0], [0.03, 0.04]])
    out = rms_normalize(a)
    assert torch.allclose(out.pow(2).mean(-1), torch.ones(2), atol=1e-4)
