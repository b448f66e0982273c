"""Honest credit metrics: the share of evaluation samples whose true gradient is
below the floor, and rho over the samples above it, checked on small hand-made inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from orchestrator.study.contract import LocalContext
from workloads.creditbridge import CreditBridge
from workloads.creditbridge.metrics import above_floor, evaluate_credit, masked_pearson, pearson
from workloads.creditbridge.nets import LadderNet, true_gradients


# ----------------------------------------------------------------------------- the pieces
def test_the_floor_itself_counts_as_above():
    gnorm = torch.tensor([0.0, 5e-8, 1e-7, 2e-7, 1.0])
    assert above_floor(gnorm, 1e-7).tolist() == [False, False, True, True, True]
    assert above_floor(gnorm, 0.0).all()                 # floor 0: every sample


def test_masked_pearson_uses_only_the_kept_samples_pairs():
    # 2 directions x 3 samples, direction-major; sample 1 is below the floor and pure noise
    pred = np.array([[1.0, 100.0, 2.0],
                     [3.0, -50.0, 4.0]]).ravel()
    true = np.array([[1.0, 0.0, 2.0],
                     [3.0, 0.0, 4.0]]).ravel()
    keep = np.array([True, False, True])
    assert masked_pearson(pred, true, keep) == pytest.approx(1.0)      # pairs (1,1) (2,2) (3,3) (4,4)
    # all six pairs, by hand: pred mean 10, true mean 10/6
    p, t = pred - pred.mean(), true - true.mean()
    by_hand = (p * t).sum() / math.sqrt((p * p).sum() * (t * t).sum())
    assert pearson(pred, true) == pytest.approx(by_hand)
    assert by_hand < 0.2                                  # the floor sample wrecks the correlation
    assert math.isnan(masked_pearson(pred, true, np.zeros(3, dtype=bool)))   # nothing left: undefined
    assert masked_pearson(pred, true, np.ones(3, dtype=bool)) == pytest.approx(by_hand)


# ----------------------------------------------------------------------------- a net with saturated samples
N, SATURATED, WIDTH, CLASSES = 40, 10, 8, 3


def saturated_batch():
    """A linear ladder and 40 samples, the last 10 scaled up 1e4 and labelled with their argmax:
    their loss, and so their true gradient at every layer, underflows to about 0."""
    torch.manual_seed(0)
    net = LadderNet(WIDTH, 2, CLASSES, 0.0)
    x = torch.randn(N, WIDTH)
    x[N - SATURATED:] *= 1e4
    with torch.no_grad():
        y = torch.randint(0, CLASSES, (N,))
        y[N - SATURATED:] = net(x[N - SATURATED:]).argmax(-1)
    hs, grads, _ = true_gradients(net, x, y)
    return net, hs, grads, y


def test_the_hand_made_batch_has_exactly_the_saturated_samples_below_the_floor():
    _, _, grads, _ = saturated_batch()
    for l in (1, 2):
        norms = grads[l].norm(dim=-1)
        assert (norms[: N - SATURATED] > 1e-4).all()
        assert (norms[N - SATURATED:] < 1e-7).all()


def credit_with_junk_on_the_floor(grads: list[torch.Tensor]) -> torch.Tensor:
    """The true gradient where it exists, and a large random vector where it is below the floor."""
    a = torch.stack(grads).clone()
    junk = torch.randn(a[:, N - SATURATED:].shape, generator=torch.Generator().manual_seed(3))
    a[:, N - SATURATED:] = junk * a[:, : N - SATURATED].norm(dim=-1).max()
    return a


def test_floor_share_and_rho_over_the_samples_above_the_floor():
    net, hs, grads, y = saturated_batch()
    rows = evaluate_credit(net, hs, grads, credit_with_junk_on_the_floor(grads), y, [1, 2], directions=16,
                           seed=0, rho_reference=True)
    for r in rows:
        assert r["grad_floor_share"] == SATURATED / N            # 10 of 40 samples
        assert r["rho_samples"] == N - SATURATED
        assert r["rho"] > 0.99                                   # the true gradient, on the samples it exists
        assert r["rho_bp_ref"] > 0.99                            # calibrated on the same samples
        assert r["rho_all"] < 0.9                                # junk credit where loss does not move


def test_rho_is_the_masked_correlation_of_the_same_pairs():
    """rho, rho_all and the floor all come from one set of (direction, sample) pairs."""
    from workloads.creditbridge.metrics import float64_copy, perturbation_pairs

    net, hs, grads, y = saturated_batch()
    a = credit_with_junk_on_the_floor(grads)
    (row,) = evaluate_credit(net, hs, grads, a, y, [2], directions=8, seed=5)
    gen = torch.Generator().manual_seed(5 * 1000 + 2)
    pred, true = perturbation_pairs(float64_copy(net), 2, hs[2], a[2], y, 8, 1e-3, gen)
    keep = np.arange(N) < N - SATURATED
    assert row["rho"] == pytest.approx(pearson(pred.reshape(8, N)[:, keep], true.reshape(8, N)[:, keep]), abs=1e-12)
    assert row["rho_all"] == pytest.approx(pearson(pred, true), abs=1e-12)


def test_floor_zero_keeps_every_sample():
    net, hs, grads, y = saturated_batch()
    (row,) = evaluate_credit(net, hs, grads, credit_with_junk_on_the_floor(grads), y, [1], directions=8,
                             grad_floor=0.0)
    assert row["grad_floor_share"] == 0.0 and row["rho_samples"] == N
    assert row["rho"] == row["rho_all"]


def test_everything_below_the_floor_leaves_rho_undefined():
    net, hs, grads, y = saturated_batch()
    (row,) = evaluate_credit(net, hs, grads, torch.stack(grads), y, [1], directions=4, grad_floor=1e9)
    assert row["grad_floor_share"] == 1.0 and row["rho_samples"] == 0
    assert math.isnan(row["rho"]) and not math.isnan(row["rho_all"])


# ----------------------------------------------------------------------------- the trial's row
TINY = dict(task="synthetic", width=16, depth=3, n_classes=4, n_train=128, n_test=64, n_eval=32,
            rho_directions=4, vnet_hidden=16, epochs=1, batch_size=64, track_every=0, seed=0)


@pytest.mark.parametrize("floor", [1e-7, 0.3])
def test_row_reports_the_floor_shares_of_its_layers(floor):
    ctx = LocalContext()
    m = CreditBridge().run(CreditBridge.Params.model_validate({**TINY, "method": "dfa", "grad_floor": floor}), ctx)
    layers = [r for r in ctx.artifacts["layers"] if r["in_mean"]]
    shares = [r["grad_floor_share"] for r in layers]
    assert m["n_eval_samples"] == 32
    assert m["grad_floor_share"] == max(shares)
    assert m["grad_floor_share_mean"] == pytest.approx(np.mean(shares))
    assert m["grad_floor_share_top"] == next(r["grad_floor_share"] for r in layers if r["layer"] == 3)
    assert m["rho_samples_min"] == min(r["rho_samples"] for r in layers)
    assert m["rho_samples_min"] == round(32 * (1 - m["grad_floor_share"]))
    assert m["rho_all"] == pytest.approx(np.mean([r["rho_all"] for r in layers]))
    for r in layers:
        assert r["rho_samples"] == round(32 * (1 - r["grad_floor_share"]))
    if floor == 0.3:    # a floor some samples fall under (||g_l|| is 0.2 to 0.5 in this net)
        assert 0 < m["grad_floor_share"] < 1 and m["rho"] != m["rho_all"]
    else:
        assert m["grad_floor_share"] == 0 and m["rho"] == pytest.approx(m["rho_all"])


def test_new_columns_are_declared():
    row, layer = CreditBridge.Metrics.model_fields, CreditBridge.artifacts["layers"].model_fields
    for name in ("rho_all", "rho_samples_min", "grad_floor_share_mean", "grad_floor_share_top", "n_eval_samples"):
        assert name in row and row[name].description
    for name in ("rho_all", "rho_samples"):
        assert name in layer and layer[name].description
