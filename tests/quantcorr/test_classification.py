"""Spirals data, the MLP classifier and a short end-to-end trial."""
import numpy as np
import pytest
import torch

from orchestrator.study.params import ParamError, validate
from orchestrator.study.contract import LocalContext
from workloads.quantcorr import Classification
from workloads.quantcorr.classification import MLPClassifier, make_spirals

torch.set_num_threads(1)


def test_spirals_shapes_split_and_determinism():
    Xtr, ytr, Xte, yte = make_spirals(n=200, dim=64, seed=3)
    assert Xtr.shape == (160, 64) and Xte.shape == (40, 64)
    assert Xtr.dtype == torch.float32
    assert int(ytr.sum() + yte.sum()) == 100  # n/2 per class
    again = make_spirals(n=200, dim=64, seed=3)
    assert torch.equal(Xtr, again[0]) and torch.equal(yte, again[3])
    assert not torch.equal(Xtr, make_spirals(n=200, dim=64, seed=4)[0])


def test_spirals_geometry_before_embedding():
    # With dim=2 the embedding is an invertible affine map; undo it and check the two arms.
    Xtr, ytr, Xte, yte = make_spirals(n=400, noise=0.0, dim=2, seed=1)
    emb = np.random.RandomState(1)
    W, b = emb.randn(2, 2) / np.sqrt(2.0), 0.1 * emb.randn(2)
    X = np.concatenate([Xtr.numpy(), Xte.numpy()]).astype(np.float64)
    y = np.concatenate([ytr.numpy(), yte.numpy()])
    P = (X - b) @ np.linalg.inv(W)
    r = np.linalg.norm(P, axis=1)
    assert r.max() == pytest.approx(1.0, abs=1e-4) and r.min() == pytest.approx(0.0, abs=1e-4)
    # class 1 is class 0 rotated by pi: the sorted radii of the two classes coincide
    assert np.allclose(np.sort(r[y == 0]), np.sort(r[y == 1]), atol=1e-4)


@pytest.mark.parametrize("depth", [4, 6, 8])
def test_classifier_has_one_quant_point_per_hidden_layer(depth):
    m = MLPClassifier(10, 16, depth)
    seen = []
    m(torch.randn(3, 10), lambda k, g, x: seen.append(k) or x)
    assert seen == [str(i) for i in range(depth)] and len(m.points) == depth


def test_short_spirals_trial_rows_and_directions():
    cfg = dict(protocol="hydra", seed=0, width=64, depth=4, bits=4,
               correct_every=1, correction_hidden=0, float_steps=300, correction_steps=150,
               correction_lr=1e-3)
    ctx = LocalContext()
    row = Classification().run(Classification.Params.model_validate(cfg), ctx)
    for k in ("f", "q", "c", "gap", "gap_abs", "recovery_pct", "recovery_reliable", "acc_float",
              "acc_quant", "acc_corrected", "acc_oracle", "num_correction_layers", "data_source"):
        assert k in row, k
    assert not set(row) & set(cfg)  # metric names never repeat config keys
    assert row["num_correction_layers"] == 4
    assert row["acc_float"] > 0.9
    assert row["q"] < row["f"] - 0.1           # 4-bit quantization hurts
    assert row["c"] > row["q"] + 0.05          # correction recovers part of it
    assert row["recovery_pct"] == pytest.approx(100 * (row["c"] - row["q"]) / (row["f"] - row["q"]))
    assert row["acc_oracle"] == pytest.approx(row["f"])  # every=1 oracle = the float path
    assert any(h["phase"] == "correction" for h in ctx.history)


def test_baseline_trial_skips_correction():
    cfg = dict(seed=0, width=32, depth=4, bits=2, correct_every=999,
               correction_hidden=0, float_steps=20, correction_steps=10)
    row = Classification().run(Classification.Params.model_validate(cfg), LocalContext())
    assert row["num_correction_layers"] == 0
    assert row["c"] == row["q"] and row["recovery_pct"] == 0.0 and row["acc_oracle"] == row["q"]


def test_stage_cache_on_and_off_give_identical_rows():
    base = dict(seed=5, width=32, depth=4, bits=4, correct_every=2,
                correction_hidden=32, float_steps=40, correction_steps=20)
    ctx = LocalContext()
    a = Classification().run(Classification.Params.model_validate({**base, "stage_cache": True}), ctx)
    b = Classification().run(Classification.Params.model_validate({**base, "stage_cache": False}), LocalContext())
    c = Classification().run(Classification.Params.model_validate({**base, "bits": 2, "stage_cache": True}), ctx)  # reuses the staged backbone
    assert len(ctx._stages) == 1
    keys = ("f", "q", "c", "recovery_pct")
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert c["f"] == a["f"]


def test_resume_from_float_checkpoint_without_stage_cache():
    cfg = dict(seed=1, width=32, depth=4, bits=4, correct_every=1,
               correction_hidden=0, float_steps=30, correction_steps=10, stage_cache=False)
    ctx = LocalContext()
    first = Classification().run(Classification.Params.model_validate(cfg), ctx)
    assert ctx.load_checkpoint()["float"] is not None
    n_hist = len(ctx.history)
    second = Classification().run(Classification.Params.model_validate(cfg), ctx)  # same ctx = a restarted attempt: float phase is skipped
    assert not [h for h in ctx.history[n_hist:] if h["phase"] == "float"]
    assert second["c"] == first["c"]


def test_classification_has_no_grid_protocol():
    # the task is the workload now: its own protocols only, checked before anything runs
    with pytest.raises(ParamError) as e:
        validate(Classification.Params, {"protocol": "grid"})
    assert e.value.key == "protocol"
