"""Training behaviour: determinism, checkpoint/resume (DFA matrices included), credit learners."""
from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest
import torch

from orchestrator.study.contract import LocalContext
from workloads.creditbridge import CreditBridge
from workloads.creditbridge.params import resolve
from workloads.creditbridge.train import Trainer, load_task

TIMING = {"step_ms", "train_s", "eval_s", "resumed_from_epoch"}

TINY = dict(task="synthetic", width=16, depth=2, n_classes=4, n_train=256, n_test=128, n_eval=64,
            rho_directions=8, vnet_hidden=32, epochs=3, batch_size=64, track_every=1)


class Interrupted(Exception):
    pass


@dataclass
class StopAfterSaves(LocalContext):
    """Dies (raises) right after its n-th checkpoint, like a trial killed between epochs."""

    stop_after: int = 1
    saves: int = 0

    def save_checkpoint(self, state):
        super().save_checkpoint(state)
        self.saves += 1
        if self.saves >= self.stop_after:
            raise Interrupted


def run(config: dict, ctx=None) -> tuple[dict, LocalContext]:
    ctx = ctx or LocalContext()
    return CreditBridge().run(CreditBridge.Params.model_validate(config), ctx), ctx


def same(a: dict, b: dict) -> bool:
    keys = set(a) - TIMING
    assert keys == set(b) - TIMING
    return all((a[k] == b[k]) or (a[k] != a[k] and b[k] != b[k]) for k in keys)  # NaN == NaN here


@pytest.mark.parametrize("method", ["dfa", "cb"])
def test_fixed_seed_gives_identical_results(method):
    cfg = dict(TINY, method=method, seed=3)
    a, ctx_a = run(cfg)
    b, ctx_b = run(cfg)
    assert same(a, b)
    assert ctx_a.history == ctx_b.history
    c, _ = run(dict(cfg, seed=4))
    assert c["gamma"] != a["gamma"]              # and the seed matters


@pytest.mark.parametrize("method", ["dfa", "fa", "sb", "cb"])
def test_resume_after_interruption_continues_exactly(method):
    cfg = dict(TINY, method=method, seed=1)
    straight, _ = run(cfg)
    dying = StopAfterSaves(stop_after=1)
    with pytest.raises(Interrupted):
        run(cfg, dying)
    resumed, ctx = run(cfg, LocalContext(_checkpoint=dying._checkpoint))
    assert resumed["resumed_from_epoch"] == 1
    assert same(straight, resumed)
    assert [h["step"] for h in ctx.history] == [2, 3]


def test_dfa_matrices_are_saved_and_loaded_not_redrawn():
    cfg = dict(TINY, method="dfa", seed=5)
    dying = StopAfterSaves(stop_after=1)
    with pytest.raises(Interrupted):
        run(cfg, dying)
    state = pickle.loads(dying._checkpoint)
    settings = resolve(cfg)
    fresh = Trainer(settings, 5, load_task(settings, LocalContext(), 5), "cpu")
    assert torch.equal(state["source"]["B"], fresh.source.B)     # drawn from the trial seed

    # Put different matrices into the checkpoint: the resumed trial must train with those.
    tampered = -3.0 * state["source"]["B"]
    state["source"]["B"] = tampered
    restored = Trainer(settings, 5, load_task(settings, LocalContext(), 5), "cpu")
    restored.restore(state)
    assert torch.equal(restored.source.B, tampered)
    ctx = LocalContext(_checkpoint=pickle.dumps(state))
    out, ctx = run(cfg, ctx)
    assert torch.equal(pickle.loads(ctx._checkpoint)["source"]["B"], tampered)
    honest, _ = run(cfg)
    assert out["gamma"] != honest["gamma"]


def test_cb_warmup_matrices_and_value_net_travel_with_the_checkpoint():
    cfg = dict(TINY, method="cb", seed=2)
    dying = StopAfterSaves(stop_after=1)
    with pytest.raises(Interrupted):
        run(cfg, dying)
    state = pickle.loads(dying._checkpoint)
    assert set(state["source"]) == {"net", "opt", "proj", "target"}
    assert state["warm"]["B"].shape == (3, 16, 4)


SMALL_LINEAR = dict(task="synthetic", alpha=0.0, width=32, depth=2, n_classes=4, n_train=1024, n_test=512,
                    n_eval=256, vnet_hidden=64, epochs=30, track_every=0, rho_reference=False, seed=0)


def test_state_bridge_learns_good_credit_on_a_linear_net_quickly():
    out, _ = run(dict(SMALL_LINEAR, method="sb"))           # 240 steps
    assert out["gamma"] > 0.5 and out["rho"] > 0.4


def test_credit_bridge_learns_the_terminal_gradient_on_a_linear_net_quickly():
    """At alpha = 0 the value net's gradient at h_L (supervised by terminal gradient matching)
    aligns with the true gradient within a few hundred steps. Below h_L only the bridge's values
    reach V, and on a linear net its credit stays weak (as in the seed: SB beats CB 3-7x at
    alpha = 0), so the mean over layers is only required to be clearly positive."""
    out, _ = run(dict(SMALL_LINEAR, method="cb"))
    assert out["gamma_top"] > 0.5
    assert out["gamma"] > 0.2 and out["rho"] > 0.2


def test_dfa_credit_is_far_from_the_gradient_before_training():
    out, _ = run(dict(TINY, method="dfa", epochs=1, n_train=64, seed=0))
    assert abs(out["gamma"]) < 0.3


def test_bp_trains_end_to_end_and_reports_exact_credit():
    out, _ = run(dict(TINY, method="bp", epochs=5, seed=0))
    assert out["gamma"] == pytest.approx(1.0, abs=1e-5)
    assert out["rho"] > 0.99 and out["rho_bp_ref"] > 0.99
    assert out["test_acc"] > 0.4                 # 4 classes: chance is 0.25


def test_unknown_config_keys_are_rejected():
    # before a trial: by the orchestrator (prepare), or by resolve for a direct caller
    with pytest.raises(ValueError, match="learning_rate: unknown parameter"):
        resolve(dict(TINY, method="dfa", learning_rate=0.1))
    with pytest.raises(ValueError, match="method"):
        resolve(dict(TINY, method="hebbian"))


def test_credit_bridge_trains_without_terminal_gradient_matching():
    """tgw = 0 (an ablation of credit_ablations) leaves out the double backward: the value net is
    still trained by the bridge and terminal losses, and its gradient-matching loss stays 0."""
    out, _ = run(dict(TINY, method="cb", tgw=0.0, wr=0.0, seed=0))
    with_gm, _ = run(dict(TINY, method="cb", tgw=1.0, wr=0.0, seed=0))
    assert out["gradmatch_loss"] == 0.0 and with_gm["gradmatch_loss"] > 0.0
    assert out["terminal_loss"] == out["terminal_loss"] and out["bridge_loss"] == out["bridge_loss"]   # finite
    assert out["gamma"] != with_gm["gamma"]
