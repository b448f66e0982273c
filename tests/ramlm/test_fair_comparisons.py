"""Fair comparisons in RAM-LM: before/after deltas on the split the optimiser did
not select on, legacy per-tier metrics bucketed by frequency rank, the original's PC group sizes."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.study import params
from workloads.ramlm import RamLM
from workloads.ramlm.optimise import opt_windows
from workloads.ramlm.per_cluster import PCConfig, group_size_of, per_cluster_optimise
from workloads.ramlm.surrogate import SurrogateProblem
from workloads.ramlm.tiers import ClusterMap, parse_tiers, uniform_tiers

from tests.conftest import require_native
from tests.ramlm.test_workload import run

native = require_native()  # fails (never skips) without the extension

OPT = dict(optimize=True, strategy="GA,TS")


# ----------------------------------------------------------------------------- which split selects
@pytest.mark.parametrize("split, lo, hi", [("validation", 1000, 2000), ("test", 2000, 3000)])
def test_optimiser_windows_come_from_the_selection_split_only(split, lo, hi):
    """Token ids tell the splits apart: train 0..999, validation 1000..1999, test 2000..2999."""
    rng = np.random.default_rng(0)
    splits = SimpleNamespace(train=rng.integers(0, 1000, 5000), val=rng.integers(1000, 2000, 3000),
                             test=rng.integers(2000, 3000, 3000))
    cfg = RamLM.Params.model_validate(params.validate(RamLM.Params, {
        "opt_eval_split": split, "opt_window": 50, "opt_train_windows": 6, "opt_eval_windows": 4}))
    train, eval_, dev = opt_windows(cfg, splits)
    assert train.min() >= 0 and train.max() < 1000
    for stream in (eval_, dev):      # fitness and overfitting check: both on the selection split
        assert len(stream) == 4 * 50 and stream.min() >= lo and stream.max() < hi


# ----------------------------------------------------------------------------- deltas
def test_initial_test_metrics_are_those_of_the_model_before_optimisation():
    plain = run()                                    # no optimisation: the final model is the initial one
    optimised = run(**OPT)
    # the initial numbers come from the fused native evaluation, the final ones from [B, V] scores
    assert optimised["init_test_ppl"] == pytest.approx(plain["test_ppl"], rel=1e-6)
    assert optimised["init_test_acc_pct"] == pytest.approx(plain["test_acc_pct"], rel=1e-6)
    assert optimised["init_test_ce"] == pytest.approx(plain["test_ce"], rel=1e-6)
    assert optimised["init_val_ppl"] == pytest.approx(plain["val_ppl"], rel=1e-6)
    # without optimisation there is no before/after on test, and nothing is held out
    assert not {"init_test_ppl", "test_ppl_delta_pct", "heldout_split", "heldout_ppl_delta_pct"} & set(plain)


def relative(after: float, before: float) -> float:
    return (after - before) / before * 100


@pytest.mark.parametrize("split, heldout, key", [("validation", "test", "test"), ("test", "validation", "val")])
def test_heldout_deltas_are_on_the_split_the_optimiser_did_not_select_on(split, heldout, key):
    m = run(**OPT, opt_eval_split=split)
    assert m["heldout_split"] == heldout
    assert m["test_ppl_delta_pct"] == pytest.approx(relative(m["test_ppl"], m["init_test_ppl"]))
    assert m["test_acc_delta_pct"] == pytest.approx(relative(m["test_acc_pct"], m["init_test_acc_pct"]))
    assert m["val_ppl_delta_pct"] == pytest.approx(relative(m["val_ppl"], m["init_val_ppl"]))
    assert m["heldout_ppl_delta_pct"] == m[f"{key}_ppl_delta_pct"]
    assert m["heldout_acc_delta_pct"] == m[f"{key}_acc_delta_pct"] or (
        math.isnan(m["heldout_acc_delta_pct"]) and math.isnan(m[f"{key}_acc_delta_pct"]))


def test_new_delta_columns_are_declared():
    fields = RamLM.Metrics.model_fields
    for name in ("init_test_ppl", "init_test_acc_pct", "init_test_ce", "test_ppl_delta_pct", "test_acc_delta_pct",
                 "heldout_split", "heldout_ppl_delta_pct", "heldout_acc_delta_pct"):
        assert name in fields and fields[name].description


# ----------------------------------------------------------------------------- per-tier buckets
def test_metric_tiers_follow_frequency_rank_whatever_the_storage_order():
    train = np.array([3, 3, 3, 1, 1, 0])                 # ranks: 3, 1, 0, then unseen 2, 4
    tiers = parse_tiers("1,2,4;2,1,4;rest,1,2", 5)
    freq = ClusterMap.build(tiers, train, "frequency")
    legacy = ClusterMap.build(tiers, train, "token_id")
    assert freq.tier_of_token.tolist() == [1, 1, 2, 0, 2]          # stored by rank
    assert legacy.tier_of_token.tolist() == [0, 1, 1, 2, 2]        # stored by raw id (the legacy bug)
    assert freq.metric_tier_of_token.tolist() == [1, 1, 2, 0, 2]   # reported by rank, both
    assert legacy.metric_tier_of_token.tolist() == [1, 1, 2, 0, 2]


# ----------------------------------------------------------------------------- PC group sizes
def test_group_size_default_is_the_originals_ten():
    assert params.validate(RamLM.Params, {})["pc_group_size"] == 10
    assert PCConfig().group_size == 10


@pytest.mark.parametrize("spec, group, expected", [
    ("100,15,16;400,10,10;rest,5,8", 10, [10, 5, 1]),     # tier 0 the group, tier 1 half, the rest alone
    ("100,15,16;400,10,10;rest,5,8", 3, [3, 2, 1]),       # tier 1: half, at least 2
    ("100,15,16;400,10,10;rest,5,8", 1, [1, 1, 1]),       # 1: no groups (the original's 0)
    ("500,15,16;rest,4,6", 10, [10, 1]),                  # the rest tier has 49,757 clusters: never grouped
    ("600,15,16;rest,4,6", 10, [1, 1]),                   # a tier over 500 clusters is not grouped
    ("50,37,22;50,31,20;400,11,12;20000,7,10;rest,3,11", 10, [10, 5, 1, 1, 1]),
])
def test_group_sizes_per_tier_follow_the_original(spec, group, expected):
    tiers = parse_tiers(spec, 50257)
    assert [group_size_of(t, len(tiers), group) for t in tiers] == expected


def test_uniform_model_is_grouped_like_tier_0():
    (t,) = uniform_tiers(50257, 3, 8)
    assert group_size_of(t, 1, 50) == 50 and group_size_of(t, 1, 1) == 1


def test_per_cluster_search_runs_tier_0_in_groups_and_tier_1_in_half_groups(monkeypatch):
    import workloads.ramlm.per_cluster as pc
    units = []
    real = pc.optimise_unit

    def recording(fit_fns, start, *args, **kwargs):
        units.append(len(fit_fns))
        return real(fit_fns, start, *args, **kwargs)

    monkeypatch.setattr(pc, "optimise_unit", recording)
    rng = np.random.default_rng(2)
    v, t = 24, 16
    bits = rng.integers(0, 2, size=(600, t)).astype(np.uint8)
    tg = (bits[:, :5] @ np.array([1, 2, 4, 8, 16])) % v
    tiers = parse_tiers("8,2,4;8,2,3;rest,1,3", v)
    conn = [rng.integers(0, t, size=(tr.total_neurons, tr.bits)) for tr in tiers]
    prob = SurrogateProblem(bits[:450], tg[:450], bits[450:], tg[450:], v)
    active = [sum(1 for c in range(tr.start, tr.end) if c in prob.positives) for tr in tiers]
    assert active == [8, 8, 8]                            # every cluster has train examples here
    new_conn, stats = per_cluster_optimise(tiers, conn, prob, t, PCConfig(
        generations=2, population=3, ts_iterations=1, ts_neighbors=2, group_size=8))
    assert units == [8] + [4, 4] + [1] * 8                # tier 0: one group of 8; tier 1: 4s; tier 2 alone
    assert stats["clusters_optimised"] == 24
    assert [c.shape for c in new_conn] == [c.shape for c in conn]
