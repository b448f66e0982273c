"""The substrate's training loops, checkpoints and result row."""
import math

import pytest
import torch
from torch import nn

from orchestrator.study.contract import Diverged, LocalContext
from workloads.substrate.loops import Batches, train_epochs, train_steps
from workloads.substrate.rows import PhaseClock, result_row
from workloads.substrate.stages import Checkpointer, staged

torch.set_num_threads(1)


class Killed(RuntimeError):
    """Stands for a worker killed after a checkpoint."""


class KilledAtEpoch(LocalContext):
    """Killed while reporting an epoch, so before that epoch's checkpoint."""

    def __init__(self, epoch: int, **kw):
        super().__init__(**kw)
        self.kill_at = epoch

    def report(self, step, **metrics):
        super().report(step, **metrics)
        if step == self.kill_at:
            self.kill_at = None
            raise Killed()


def _fit(ctx, epochs=4, keep_last=True, in_place=False):
    """A small net with dropout (so the RNG restore matters) through the resumable epoch loop."""
    torch.manual_seed(0)
    X, y = torch.randn(50, 6), torch.randn(50, 1)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    batches = Batches(len(X), 16, keep_last=keep_last, in_place=in_place)
    loss = train_epochs(net, opt, batches, epochs, lambda idx: nn.functional.mse_loss(net(X[idx]), y[idx]),
                        ckpt=Checkpointer(ctx, {"k": 1}), ctx=ctx, phase="float", clip=1.0, per_sample=True)
    return net, batches, loss


@pytest.mark.parametrize("in_place", [False, True])
def test_a_killed_epoch_loop_resumes_to_the_same_weights(in_place):
    whole, whole_batches, whole_loss = _fit(LocalContext(), in_place=in_place)
    ctx = KilledAtEpoch(2)
    with pytest.raises(Killed):
        _fit(ctx, in_place=in_place)
    torch.manual_seed(123)  # a restarted worker's RNG is anything
    resumed, resumed_batches, resumed_loss = _fit(ctx, in_place=in_place)
    assert [h["step"] for h in ctx.history] == [1, 2, 2, 3, 4]  # epoch 2 again, from epoch 1's checkpoint
    assert resumed_loss == whole_loss
    assert torch.equal(resumed_batches.order, whole_batches.order)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    # killed after its last epoch: nothing left to train, the last loss comes from the checkpoint
    assert _fit(ctx, in_place=in_place)[2] == whole_loss


def test_batches_orders_and_last_batch():
    torch.manual_seed(0)
    fresh = Batches(10, 4, keep_last=True)
    assert [len(b) for b in fresh.next_epoch()] == [4, 4, 2]
    torch.manual_seed(0)
    in_place = Batches(10, 4, keep_last=False, in_place=True)
    first = in_place.next_epoch()
    assert [len(b) for b in first] == [4, 4]
    assert torch.equal(torch.cat(first), fresh.order[:8])  # one epoch: in place = fresh
    previous = in_place.order.clone()
    torch.manual_seed(7)
    in_place.next_epoch()
    torch.manual_seed(7)
    assert torch.equal(in_place.order, previous[torch.randperm(10)])  # later epochs permute the last order
    gen = Batches(10, 5, keep_last=True, generator=torch.Generator().manual_seed(1))
    again = Batches(10, 5, keep_last=True, generator=torch.Generator().manual_seed(1))
    gen.next_epoch(), again.next_epoch()
    assert torch.equal(gen.order, again.order)
    again.load_state_dict(gen.state_dict())
    assert torch.equal(torch.cat(gen.next_epoch()), torch.cat(again.next_epoch()))


def test_step_loop_reports_and_stops_on_a_non_finite_loss():
    w = nn.Parameter(torch.tensor([1.0]))
    ctx = LocalContext()
    last = train_steps(torch.optim.SGD([w], lr=0.1), 7, lambda step: (w ** 2).sum(), ctx=ctx, phase="float",
                       report_every=3, report_last=True)
    assert [h["step"] for h in ctx.history] == [3, 6, 7] and last == pytest.approx(ctx.history[-1]["loss"])
    with pytest.raises(Diverged) as e:
        train_steps(torch.optim.SGD([w], lr=0.1), 5, lambda step: w.sum() * (float("nan") if step == 2 else 1.0),
                    ctx=ctx, phase="correction")
    assert e.value.metrics == {"diverged_step": 2} and "correction_loss" in str(e.value)


def test_staged_without_the_cache_keeps_the_backbone_in_the_checkpoint():
    ctx = LocalContext()
    ckpt = Checkpointer(ctx, {"k": 1})
    built = []

    def build():
        ckpt.put("float_progress", "epoch state")
        built.append(1)
        return "weights"

    assert staged(False, ctx, ckpt, {"stage": "s"}, build) == "weights"
    assert ctx.load_checkpoint() == {"key": {"k": 1}, "float": "weights"}  # progress dropped
    assert staged(False, ctx, Checkpointer(ctx, {"k": 1}), {"stage": "s"}, build) == "weights"
    assert staged(True, ctx, ckpt, {"stage": "s"}, build) == "weights"
    assert staged(True, ctx, ckpt, {"stage": "s"}, build) == "weights"
    assert len(built) == 2  # once for the checkpoint, once for the stage cache


def test_result_row_skip_rule_and_divergence():
    p = {"guard": "hydra", "reliable_gap_rel": 0.005}
    clock = PhaseClock()
    clock.mark("float")
    row = result_row(0.9, 0.5, 0.5, p=p, higher_is_better=True, n_correctors=0, n_points=4, final_loss=float("nan"),
                     data_source="spirals", clock=clock, acc_float=0.9)
    assert row["recovery_pct"] == 0.0 and row["num_correction_layers"] == 0 and row["acc_float"] == 0.9
    assert {"float_phase_s", "float_phase_cpu_s", "total_s", "total_cpu_s"} <= set(row)
    with pytest.raises(Diverged) as e:
        result_row(2.0, float("nan"), 2.5, p=p, higher_is_better=False, n_correctors=1, n_points=4, final_loss=1.0,
                   data_source="x", clock=clock)
    assert math.isnan(e.value.metrics["q"]) and e.value.metrics["num_quant_points"] == 4
