"""Q2: features, element dataset, the three corrector variants, split, training and verdicts."""
import numpy as np
import pytest
import torch

from workloads.geometry import q2 as Q2

torch.set_num_threads(1)


def test_features_shape_and_values():
    zq = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    zpre = torch.tensor([[0.45, -1.2], [2.6, 0.01]])
    mask = torch.tensor([[False, False], [True, False]])
    f = Q2.features(zq, zpre, mask, 0.25)
    assert f.shape == (2, 2, Q2.N_FEATURES)
    assert torch.allclose(f[..., 0], zq)
    assert torch.allclose(f[..., 1], zq - zpre)
    assert torch.equal(f[..., 2], mask.float())
    assert torch.all(f[..., 3] == 0.25)
    assert torch.allclose(f[..., 4], zq.abs())


def _points(P=3, rows=40, d=8, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(P):
        zpre = rng.normal(size=(rows, d)).astype(np.float32)
        zq = np.round(zpre * 4) / 4
        out.append({"z_quant": zq, "z_pre": zpre, "sat_mask": np.abs(zpre) > 2,
                    "true_error": (zpre - zq + 0.01 * k).astype(np.float32), "scale": 0.25 * (k + 1)})
    return out


def test_element_dataset_shapes_and_per_point_budget():
    pts = _points(P=3, rows=40, d=8)
    ds = Q2.element_dataset(pts, total_elements=300, rng=np.random.default_rng(1))
    assert ds["features"].shape == (300, 5) and ds["features"].dtype == np.float32
    assert ds["target"].shape == (300,) and ds["layer"].shape == (300,)
    assert np.bincount(ds["layer"]).tolist() == [100, 100, 100]
    # the scale feature is the point's constant scale
    for k in range(3):
        assert np.all(ds["features"][ds["layer"] == k, 3] == pytest.approx(0.25 * (k + 1)))
    # features and target belong to the same element: residual == target here (by construction)
    sel = ds["layer"] == 0
    assert np.allclose(-ds["features"][sel, 1], ds["target"][sel], atol=1e-6)
    # small points give all their elements, drawn without replacement
    ds2 = Q2.element_dataset(_points(P=2, rows=5, d=4), total_elements=10_000, rng=np.random.default_rng(0))
    assert len(ds2["target"]) == 2 * 5 * 4
    assert len(np.unique(ds2["features"][ds2["layer"] == 0, 0] + 1000 * ds2["target"][ds2["layer"] == 0])) > 1


def test_split_matches_sklearn_and_is_a_partition():
    from sklearn.model_selection import train_test_split

    for n, seed in ((10, 0), (997, 42), (5000, 123)):
        s = Q2.split_indices(n, seed)
        rest, test = train_test_split(np.arange(n), test_size=0.2, random_state=seed)
        train, val = train_test_split(rest, test_size=0.2, random_state=seed)
        assert np.array_equal(s["test"], test) and np.array_equal(s["train"], train) and np.array_equal(s["val"], val)
        assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(n))


@pytest.mark.parametrize("variant,n_in", [("embedding_only", 8), ("features_only", 5), ("features_plus_embedding", 13)])
def test_variant_input_sizes_and_shapes(variant, n_in):
    m = Q2.ElementCorrector(variant, n_points=6)
    assert m.in_features == n_in
    feats = torch.randn(2, 3, 4, 5)
    assert m(feats, torch.tensor(2)).shape == (2, 3, 4)  # one point index broadcast over elements
    assert m(torch.randn(7, 5), torch.randint(0, 6, (7,))).shape == (7,)


def test_embedding_only_ignores_the_features():
    m = Q2.ElementCorrector("embedding_only", n_points=4)
    layer = torch.tensor([1, 1, 3])
    a, b = m(torch.randn(3, 5), layer), m(torch.randn(3, 5), layer)
    assert torch.equal(a, b) and torch.allclose(a[0], a[1])


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError):
        Q2.ElementCorrector("features", 3)


def test_features_beat_embedding_when_the_error_depends_on_the_element():
    # Target = -quant_residual (the element's own rounding error): only the features can see it.
    pts = _points(P=3, rows=200, d=16, seed=3)
    ds = Q2.element_dataset(pts, total_elements=6000, rng=np.random.default_rng(0))
    split = Q2.split_indices(len(ds["target"]), 0)
    res = {v: Q2.train_variant(v, ds, split, 3, seed=0, epochs=15, batch=256, lr=3e-3)[1] for v in Q2.VARIANTS}
    for m in res.values():
        assert m["n_train"] + m["n_val"] + m["n_test"] == 6000
        assert 1 <= m["best_epoch"] <= 15
    assert res["features_only"]["test_mse"] < 0.3 * res["embedding_only"]["test_mse"]
    assert res["features_plus_embedding"]["test_mse"] < 0.3 * res["embedding_only"]["test_mse"]
    # embedding_only can at best learn the per-point mean: about the zero predictor's MSE
    assert res["embedding_only"]["test_mse"] == pytest.approx(res["embedding_only"]["zero_test_mse"], rel=0.2)


def test_training_keeps_the_best_validation_state():
    pts = _points(P=2, rows=50, d=8, seed=4)
    ds = Q2.element_dataset(pts, total_elements=800, rng=np.random.default_rng(0))
    split = Q2.split_indices(800, 1)
    model, m = Q2.train_variant("features_only", ds, split, 2, seed=1, epochs=6, batch=64, lr=1e-2)
    X, L, y = (torch.from_numpy(ds[k]) for k in ("features", "layer", "target"))
    v = torch.from_numpy(split["val"])
    assert Q2.mse_of(model, X[v], L[v], y[v]) == pytest.approx(m["val_mse"])
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("emb,feat,g_feat,g_plus,expected", [
    (1.0, 0.85, 0.01, -1.0, "supported"),     # exactly 15% better and 0.01 nats
    (1.0, 0.70, -0.2, 0.05, "supported"),     # best of the two feature variants counts
    (1.0, 0.86, 0.5, 0.5, "unclear"),         # only 14% better
    (1.0, 0.50, 0.009, 0.0, "unclear"),       # gain too small downstream
    (1.0, 1.10, 0.0, -0.1, "refuted"),        # features worse and no gain (best <= 0)
    (1.0, 1.10, 0.001, -0.1, "unclear"),      # features worse but a positive gain
    (1.0, 1.00, -0.3, -0.3, "unclear"),       # equal MSE is not "worse"
])
def test_q2_verdict_rules(emb, feat, g_feat, g_plus, expected):
    assert Q2.q2_verdict(emb, feat, g_feat, g_plus) == expected


def test_mse_gain():
    assert Q2.mse_gain(2.0, 1.5) == pytest.approx(0.25)
    assert Q2.mse_gain(0.0, 1.0) == 0.0
