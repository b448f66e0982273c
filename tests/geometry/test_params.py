"""Typed parameters and metrics of the geometry workload: bad configs are rejected naming the key,
the declared defaults are the values the code runs with (and the seed-002 settings), every
study config validates, and every row / artifact column a trial produces is declared with a type
that holds its value."""
import math
from pathlib import Path

import pytest
from pydantic import ValidationError
import torch

from orchestrator.study import grid, params, loader
from orchestrator.results import rows
from orchestrator.study.contract import Diverged, LocalContext
from workloads.geometry import Geometry
from workloads.substrate import char_transformer

torch.set_num_threads(1)

STUDY = Path(__file__).resolve().parents[2] / "configs" / "studies" / "geometry.yaml"
P = Geometry.Params
TIMINGS = {"float_phase_s", "q1_phase_s", "q2_phase_s", "total_s"}


def _study_configs(scale: str) -> list[dict]:
    return list(grid.configs(loader.resolve(loader.load_raw(STUDY), str(STUDY), scale)))


def _smallest_smoke_config() -> dict:
    """The cheapest setting of the study's smoke scale, offline (the stand-in corpus)."""
    cfg = min(_study_configs("smoke"), key=lambda c: (c["d_model"] * c["n_layers"], c["seed"]))
    return {**cfg, "data": "standin", "download": False}


def _error(cfg: dict) -> params.ParamError:
    with pytest.raises(params.ParamError) as e:
        params.validate(P, cfg)
    return e.value


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [
    ("d_model", "64"),          # a string is not an int
    ("float_epochs", 2.0),      # nor is a float
    ("legacy_prenorm_residual_bug", 1),  # nor an int a bool
    ("seed", True),
    ("float_lr", "3e-4"),
    ("data", "tinyshakespeare"),  # not one of auto | real | standin
    ("bits", 3),                  # not one of 2 | 4 | 8
])
def test_wrong_type_or_value_names_the_key(key, value):
    err = _error({key: value})
    assert err.key == key and not err.unknown
    assert str(err).startswith(f"{key}: ") and repr(value) in str(err)


@pytest.mark.parametrize("key, value", [
    ("d_model", 0), ("n_layers", 0), ("seed", -1), ("seed", 2 ** 32), ("dropout", 1.0), ("float_lr", 0.0),
    ("ridge_lambda", -1e-4), ("q2_test_frac", 1.0), ("q2_val_frac", 0.0), ("trace_max_rows", 0),
    ("train_limit", -1), ("d_ff", 0), ("q2_epochs", 0),
])
def test_out_of_range_names_the_key(key, value):
    err = _error({key: value})
    assert err.key == key and err.value == value


def test_unknown_key_is_rejected_with_a_suggestion():
    err = _error({"q2_epoch": 3})
    assert err.unknown and err.key == "q2_epoch" and "q2_epochs" in str(err)


@pytest.mark.parametrize("cfg, field", [
    ({"d_model": 64, "n_heads": 3}, "n_heads"),   # heads must split the width
    ({"seq_len": 300}, "seq_len"),                # longer than the positional embedding (256)
])
def test_cross_field_rules_name_the_field(cfg, field):
    # a model-level rule has no single key (ParamError.key is ""): its message names the field
    assert _error(cfg).message.startswith(f"{field}: ")


def test_a_typo_never_reaches_run():
    # run receives a GeometryParams instance: a config with a typo cannot be built into one
    with pytest.raises(ValidationError, match="trace_max_row"):
        Geometry.Params.model_validate({"trace_max_row": 10})


def test_limits_that_mean_everything_stay_valid():
    full = params.validate(P, {"train_limit": 0, "test_limit": 0, "max_chars": 0, "float_epochs": 0,
                               "ridge_lambda": 0, "seed": None, "d_ff": None})
    assert full["train_limit"] == 0 and full["seed"] is None and full["d_ff"] is None


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["smoke", "fast", "full"])
def test_every_study_config_validates(scale):
    cfgs = _study_configs(scale)
    assert len(cfgs) == 18
    for cfg in cfgs:
        full = params.validate(P, cfg)
        assert {k: full[k] for k in cfg} == cfg  # nothing renamed or coerced to another value


def test_defaults_are_the_seed_settings():
    # At full scale the study only sets the setting (seed, architecture) and the real corpus: every
    # other value it writes out (the seed-002 budget) is the declared default.
    varied = set().union(*(params.id_config(P, params.validate(P, c)) for c in _study_configs("full")))
    assert varied == {"seed", "d_model", "n_layers", "data"}
    d = {name: f.get_default() for name, f in P.model_fields.items()}
    assert (d["d_model"], d["n_layers"], d["n_heads"], d["d_ff"], d["d_ff_mult"]) == (64, 2, 4, None, 4)
    assert (d["max_seq_len"], d["weight_decay"], d["grad_clip"], d["q2_hidden"], d["q2_embed_dim"]) == \
        (256, 0.01, 1.0, 64, 8)
    assert (d["q2_test_frac"], d["q2_val_frac"], d["max_chars"], d["seed"]) == (0.2, 0.2, 0, None)
    assert (d["data"], d["download"], d["stage_cache"], d["legacy_prenorm_residual_bug"]) == \
        ("auto", True, True, False)


def test_knobs_do_not_enter_the_trial_id():
    base = params.validate(P, {"seed": 1})
    off = params.validate(P, {"seed": 1, "stage_cache": False, "download": False})
    assert params.id_config(P, base) == params.id_config(P, off) == {"seed": 1}
    assert params.is_knob(P, "stage_cache") and params.is_knob(P, "download")
    assert not params.is_knob(P, "data")


def test_omitted_and_explicit_defaults_give_the_same_trial():
    cfg = _smallest_smoke_config()
    seed = cfg.pop("seed")
    # omitted: only the study's smoke values, the seed from the context (as the orchestrator
    # derives it when the config has none); explicit: every declared default written out
    explicit = {**{n: f.get_default() for n, f in P.model_fields.items()}, **cfg, "seed": seed}
    rows, arts = [], []
    for config in (cfg, explicit):
        ctx = LocalContext(seed=seed)  # a fresh context each: the backbone is trained again
        rows.append(Geometry().run(Geometry.Params.model_validate(config), ctx))
        arts.append(ctx.artifacts)
    a, b = ({k: v for k, v in r.items() if k not in TIMINGS} for r in rows)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])), k
    assert arts[0]["q2_variants"] == arts[1]["q2_variants"]
    assert [p["R_lin_q4"] for p in arts[0]["q1_points"]] == [p["R_lin_q4"] for p in arts[1]["q1_points"]]


# --------------------------------------------------------------------------------------------
def _assert_declared(values: dict, model) -> None:
    undeclared = set(values) - set(model.model_fields)
    assert not undeclared, f"undeclared columns: {sorted(undeclared)}"
    for name, value in values.items():
        # raises TypeError when the value does not fit the declared column type
        rows.cell(rows.finite_or_none(value), rows.arrow_type(model.model_fields[name].annotation))


def test_every_smoke_metric_and_artifact_column_is_declared():
    ctx = LocalContext(seed=0)
    row = Geometry().run(Geometry.Params.model_validate(_smallest_smoke_config()), ctx)
    _assert_declared(row, Geometry.Metrics)
    # only the divergence-only column is never in a completed row
    assert set(Geometry.Metrics.model_fields) - set(row) == {"diverged_step"}
    assert set(ctx.artifacts) == set(Geometry.artifacts)
    for name, table in ctx.artifacts.items():
        model = Geometry.artifacts[name]
        assert table, name
        for r in table:
            _assert_declared(r, model)
            assert set(r) == set(model.model_fields), name
    assert "trial_id" not in Geometry.artifacts["q1_points"].model_fields


def test_diverged_metrics_are_declared(monkeypatch):
    cfg = {**_smallest_smoke_config(), "stage_cache": False}

    # a non-finite backbone loss: Diverged from the epoch check
    monkeypatch.setattr(char_transformer, "lm_loss", lambda logits, y: logits.sum() * float("nan"))
    with pytest.raises(Diverged) as e:
        Geometry().run(Geometry.Params.model_validate(cfg), LocalContext(seed=0))
    assert e.value.metrics == {"diverged_step": 1}
    _assert_declared(e.value.metrics, Geometry.Metrics)
    monkeypatch.undo()

    # a non-finite evaluation loss: Diverged with the float loss
    monkeypatch.setattr(char_transformer, "mean_ce", lambda *a, **k: float("nan"))
    with pytest.raises(Diverged) as e:
        Geometry().run(Geometry.Params.model_validate(cfg), LocalContext(seed=0))
    assert set(e.value.metrics) == {"loss_float"}
    _assert_declared(e.value.metrics, Geometry.Metrics)
