"""The char-transformer backbone is one stage for quantcorr.transformer and geometry: one key,
holding only what determines the trained weights."""
import pytest
import torch

from orchestrator.study.contract import LocalContext
from workloads.geometry import Geometry
from workloads.quantcorr import Transformer
from workloads.substrate.char_transformer import BackboneRecipe, CharData

torch.set_num_threads(1)

# 1320 characters = 40 chunks of 33: 36 train sequences (a multiple of the batch), 4 test sequences
SHARED = dict(seed=3, d_model=32, n_heads=4, n_layers=1, d_ff=64, dropout=0.1, max_seq_len=64, seq_len=32,
              data="standin", max_chars=1320, batch_size=12, float_epochs=1, float_lr=3e-4,
              weight_decay=0.01, grad_clip=1.0)
GEOMETRY = dict(train_limit=0, test_limit=0, trace_train_sequences=8, trace_test_sequences=4, trace_max_rows=100,
                report_sequences=2, q2_elements=400, q2_epochs=1, q2_batch=128, calib_sequences=8)
TRANSFORMER = dict(protocol="hydra", bits=4, correct_every=1, float_optimizer="adamw", correction_epochs=1)


def _recipe(**changes) -> BackboneRecipe:
    base = dict(d_model=32, n_heads=4, n_layers=1, d_ff=64, max_seq_len=64, dropout=0.1, seed=0, epochs=1, lr=3e-4,
                optimizer="adamw", weight_decay=0.01, batch_size=12, grad_clip=1.0, reshuffle="in_place",
                last_batch="drop")
    return BackboneRecipe(**{**base, **changes})


def _data(n_train: int) -> CharData:
    x = torch.zeros(n_train, 32, dtype=torch.long)
    return CharData(x, x, x[:2], x[:2], 10, "standin:corpus", "sha")


def test_one_trained_backbone_serves_both_studies(monkeypatch):
    monkeypatch.setenv("OVERNIGHT_OFFLINE", "1")
    ctx = LocalContext(seed=0)
    quantcorr = Transformer().run(Transformer.Params.model_validate({**SHARED, **TRANSFORMER}), ctx)
    assert len(ctx._stages) == 1
    geometry = Geometry().run(Geometry.Params.model_validate({**SHARED, **GEOMETRY}), ctx)
    assert len(ctx._stages) == 1  # the backbone trained for quantcorr, loaded by geometry
    assert [h["phase"] for h in ctx.history].count("float") == 1
    assert geometry["loss_float"] == quantcorr["loss_float"]
    alone = Geometry().run(Geometry.Params.model_validate({**SHARED, **GEOMETRY}), LocalContext(seed=0))
    assert alone["loss_float"] == geometry["loss_float"] and alone["r_lin_q4_median"] == geometry["r_lin_q4_median"]


def test_the_key_leaves_out_what_cannot_change_the_weights():
    data = _data(36)
    key = _recipe().stage_key(data, "cpu")
    # one epoch: in place = fresh; 36 % 12 == 0: dropping the last batch = keeping it
    assert _recipe(reshuffle="fresh", last_batch="keep").stage_key(data, "cpu") == key
    assert _recipe(epochs=2).stage_key(data, "cpu") != _recipe(epochs=2, reshuffle="fresh").stage_key(data, "cpu")
    assert _recipe(batch_size=10).stage_key(data, "cpu") != _recipe(batch_size=10, last_batch="keep").stage_key(data, "cpu")
    assert _recipe(optimizer="adam", weight_decay=0.0).stage_key(data, "cpu") == \
        _recipe(optimizer="adam", weight_decay=0.1).stage_key(data, "cpu")
    assert _recipe(weight_decay=0.0).stage_key(data, "cpu") != key
    untrained = _recipe(epochs=0).stage_key(data, "cpu")
    assert _recipe(epochs=0, lr=1.0, dropout=0.3, batch_size=7).stage_key(data, "cpu") == untrained
    for change in (dict(seed=1), dict(d_ff=32), dict(max_seq_len=32), dict(lr=1e-3), dict(dropout=0.2)):
        assert _recipe(**change).stage_key(data, "cpu") != key, change
    assert _recipe().stage_key(_data(24), "cpu") != key
    assert _recipe().stage_key(data, "cuda") != key


@pytest.mark.parametrize("epochs", [1, 2])
def test_recipes_that_train_the_same_weights_give_the_same_backbone(epochs, tmp_path):
    # the cross-study key is only sound if leaving a setting out never merges different weights
    from workloads.substrate.char_transformer import trained_backbone
    from workloads.substrate.stages import Checkpointer

    torch.manual_seed(0)
    x = torch.randint(0, 10, (36, 8))
    data = CharData(x, x.roll(1, 1), x[:4], x[:4], 10, "t", "sha")
    weights = []
    for reshuffle, last_batch in (("in_place", "drop"), ("fresh", "keep")):
        ctx = LocalContext(cache_dir=tmp_path)
        recipe = _recipe(epochs=epochs, reshuffle=reshuffle, last_batch=last_batch, max_seq_len=8)
        model, order = trained_backbone(recipe, data, ctx, Checkpointer(ctx, {}), stage_cache=True)
        weights.append((list(model.state_dict().values()), order))
    same = all(torch.equal(a, b) for a, b in zip(weights[0][0], weights[1][0])) and torch.equal(weights[0][1], weights[1][1])
    assert same == (epochs == 1)
