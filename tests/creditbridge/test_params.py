"""The declared parameters, metrics and per-layer columns of the credit-bridge workload: bad configs
are refused naming the key, the defaults are the ones the code used before they were declared, and
every value a trial returns has a declared, correctly typed column."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.study import grid, params, loader
from orchestrator.results.rows import RESERVED, arrow_type, artifact_table, cell
from orchestrator.study.contract import Diverged, LocalContext
from workloads.creditbridge import CreditBridge
from workloads.creditbridge.params import NUDGE_ETAS, Settings, eta_name, resolve

STUDIES = Path(__file__).resolve().parents[2] / "configs" / "studies"
TIMING = {"step_ms", "train_s", "eval_s"}
# the smallest trial that exercises every part of the pipeline (about a second)
TINY = dict(task="synthetic", width=16, depth=2, n_classes=4, n_train=128, n_test=64, n_eval=32,
            rho_directions=4, vnet_hidden=16, epochs=1, batch_size=64, track_every=1)

# what the code used when a key was absent, before the keys were declared (the Settings dataclass
# of version 1); the task-dependent ones were filled in by task
PREVIOUS_DEFAULTS = {
    "task": "synthetic", "method": "cb", "seed": None, "depth": 4, "alpha": 1.0, "n_classes": 10,
    "teacher_seed": 0, "data": "auto", "standin_train": 10000, "standin_test": 2000, "epochs": 80,
    "batch_size": 128, "lr": 1e-3, "weight_decay": 0.01, "credit_eps": 1e-6, "cond": "eT", "tgw": 1.0,
    "gm_norm": "batch", "wr": 0.2, "sb_wr": 0.0, "bridge_k": 4, "bridge_sigma": 0.05, "softmin_tau": 0.1,
    "ema_decay": 0.99, "vnet_hidden": 256, "vnet_layers": 2, "vnet_lr": 1e-3, "time_dim": 32, "proj_dim": 32,
    "dfa_std": None, "n_eval": 1024, "rho_directions": 32, "rho_eps": 1e-3, "nudge_etas": [0.003, 0.01],
    "rho_reference": True, "track_every": 1, "checkpoint_every": 1,
}
# keys added since, with the default they were added with (version 3: the gradient floor of rho)
ADDED_DEFAULTS = {"grad_floor": 1e-7}
PREVIOUS_TASK_DEFAULTS = {
    "synthetic": {"width": 128, "n_train": 20000, "n_test": 5000, "lr_schedule": "constant"},
    "cifar10": {"width": 512, "n_train": 0, "n_test": 0, "lr_schedule": "cosine"},
}


def same_results(a: dict, b: dict) -> bool:
    """Equal metrics apart from timings, NaN equal to NaN."""
    assert set(a) == set(b)
    return all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in set(a) - TIMING)


def refused(config: dict) -> params.ParamError:
    with pytest.raises(params.ParamError) as e:
        params.validate(Settings, config)
    return e.value


# ---------------------------------------------------------------- refused configs
@pytest.mark.parametrize("key, value", [
    ("depth", "4"), ("epochs", 2.0), ("lr", "1e-3"), ("rho_reference", 1), ("alpha", True),
    ("nudge_etas", ["0.01"]), ("seed", 1.5), ("width", "wide"),
])
def test_a_wrong_type_names_the_key(key, value):
    e = refused({key: value})
    assert e.key.split(".")[0] == key and str(e).startswith(f"{key}")
    shown = value[0] if isinstance(value, list) else value     # a list names the bad entry
    assert f"(got {shown!r})" in str(e)


@pytest.mark.parametrize("key, value, words", [
    ("alpha", 1.5, "less than or equal to 1"), ("wr", -0.1, "greater than or equal to 0"),
    ("sb_wr", 1.01, "less than or equal to 1"), ("depth", 0, "greater than or equal to 1"),
    ("width", 0, "greater than or equal to 1"), ("epochs", 0, "greater than or equal to 1"),
    ("batch_size", 0, "greater than or equal to 1"), ("lr", 0.0, "greater than 0"),
    ("softmin_tau", 0.0, "greater than 0"), ("rho_directions", 0, "greater than or equal to 1"),
    ("track_every", -1, "greater than or equal to 0"), ("teacher_seed", -1, "greater than or equal to 0"),
])
def test_an_out_of_range_value_names_the_key(key, value, words):
    e = refused({key: value})
    assert e.key == key and words in str(e) and f"(got {value!r})" in str(e)


@pytest.mark.parametrize("key, value", [
    ("method", "hebbian"), ("task", "imagenet"), ("cond", "eT+delta"), ("gm_norm", "max"),
    ("lr_schedule", "step"), ("data", "download"),
])
def test_a_value_outside_the_allowed_ones_names_the_key(key, value):
    e = refused({key: value})
    assert e.key == key and repr(value) in str(e)


def test_an_unknown_key_is_refused_with_a_suggestion():
    e = refused({"learning_rate": 0.1})
    assert e.unknown and e.key == "learning_rate" and "unknown parameter" in str(e)
    e = refused({"rho_direction": 8})
    assert e.key == "rho_direction" and "did you mean `rho_directions`?" in str(e)


def test_a_bad_config_never_reaches_run():
    # run receives a Settings instance: these configs cannot be built into one
    with pytest.raises(ValidationError, match="learning_rate"):
        CreditBridge.Params.model_validate(dict(TINY, method="dfa", learning_rate=0.1))
    with pytest.raises(ValidationError, match="method"):
        CreditBridge.Params.model_validate(dict(TINY, method="hebbian"))


def test_cifar10_needs_its_ten_classes():
    e = refused({"task": "cifar10", "n_classes": 5})
    assert "n_classes" in str(e) and "10 classes" in str(e)
    assert params.validate(Settings, {"task": "cifar10", "n_classes": 10})["n_classes"] == 10
    assert params.validate(Settings, {"task": "synthetic", "n_classes": 5})["n_classes"] == 5


@pytest.mark.parametrize("key", ["n_train", "n_test"])
def test_the_synthetic_task_needs_samples_but_cifar10_zero_means_all(key):
    e = refused({"task": "synthetic", key: 0})
    assert key in str(e) and "at least one sample" in str(e)
    assert params.validate(Settings, {"task": "cifar10", key: 0})[key] == 0


# ---------------------------------------------------------------- defaults
def test_declared_defaults_are_the_previous_ones():
    declared = {name: f.get_default(call_default_factory=True) for name, f in Settings.model_fields.items()}
    task_keys = set(PREVIOUS_TASK_DEFAULTS["synthetic"])
    assert set(declared) == set(PREVIOUS_DEFAULTS) | set(ADDED_DEFAULTS) | task_keys
    assert {k: declared[k] for k in PREVIOUS_DEFAULTS} == PREVIOUS_DEFAULTS
    assert {k: declared[k] for k in ADDED_DEFAULTS} == ADDED_DEFAULTS
    assert all(declared[k] is None for k in task_keys)      # None: filled in by task


@pytest.mark.parametrize("task", ["synthetic", "cifar10"])
def test_task_dependent_defaults_are_filled_in_and_explicit_values_kept(task):
    full = params.validate(Settings, {"task": task})
    assert {k: full[k] for k in PREVIOUS_TASK_DEFAULTS[task]} == PREVIOUS_TASK_DEFAULTS[task]
    nulls = params.validate(Settings, {"task": task, "width": None, "lr_schedule": None})
    assert nulls == full
    mine = params.validate(Settings, {"task": task, "width": 64, "lr_schedule": "cosine", "n_test": 7})
    assert (mine["width"], mine["lr_schedule"], mine["n_test"]) == (64, "cosine", 7)
    assert mine["n_train"] == PREVIOUS_TASK_DEFAULTS[task]["n_train"]


def test_one_nudging_step_is_a_list_of_one():
    assert params.validate(Settings, {"nudge_etas": 0.01})["nudge_etas"] == [0.01]
    assert resolve({"nudge_etas": 0.003}).nudge_etas == [0.003]
    assert params.validate(Settings, {"nudge_etas": []})["nudge_etas"] == []


@pytest.mark.parametrize("etas", [[0.03], [0.003, 0.02], 1])
def test_a_nudging_step_without_declared_columns_is_refused(etas):
    e = refused({"nudge_etas": etas})
    assert e.key == "nudge_etas" and "0.003, 0.01" in str(e)


def test_every_allowed_nudging_step_has_its_columns():
    for eta in NUDGE_ETAS:
        name = f"nudge_{eta_name(eta)}"
        assert name in CreditBridge.Metrics.model_fields and name in CreditBridge.artifacts["layers"].model_fields
    ctx = LocalContext()
    out = CreditBridge().run(CreditBridge.Params.model_validate(dict(TINY, method="dfa", nudge_etas=[0.01], seed=0)), ctx)
    assert "nudge_eta0p01" in out and "nudge_eta0p003" not in out
    assert all("nudge_eta0p003" not in r for r in ctx.artifacts["layers"])


def test_explicit_defaults_give_the_same_trial_as_omitted_ones():
    short = dict(TINY, method="cb", seed=3)
    full = params.validate(Settings, short)
    assert set(full) == set(Settings.model_fields) and len(full) > len(short)
    a_ctx, b_ctx = LocalContext(), LocalContext()
    a = CreditBridge().run(CreditBridge.Params.model_validate(short), a_ctx)
    b = CreditBridge().run(CreditBridge.Params.model_validate(full), b_ctx)
    assert same_results(a, b)
    assert a_ctx.history == b_ctx.history
    # and the trial id does not see the difference
    assert params.id_config(Settings, full) == params.id_config(Settings, params.validate(Settings, full))


def test_only_the_checkpoint_interval_is_left_out_of_the_trial_id():
    knobs = {n for n in Settings.model_fields if params.is_knob(Settings, n)}
    assert knobs == {"checkpoint_every"}
    base = params.validate(Settings, TINY)
    assert params.id_config(Settings, {**base, "checkpoint_every": 5}) == params.id_config(Settings, base)
    assert params.id_config(Settings, {**base, "track_every": 5}) != params.id_config(Settings, base)


def test_the_checkpoint_interval_changes_no_result():
    cfg = dict(TINY, method="dfa", seed=1, epochs=2)
    a = CreditBridge().run(CreditBridge.Params.model_validate(dict(cfg, checkpoint_every=1)), LocalContext())
    b = CreditBridge().run(CreditBridge.Params.model_validate(dict(cfg, checkpoint_every=0)), LocalContext())
    assert same_results(a, b)


@pytest.mark.parametrize("name", ["credit_ladder", "credit_ablations", "credit_cifar"])
def test_every_study_config_validates_at_every_scale(name):
    path = STUDIES / f"{name}.yaml"
    raw = loader.load_raw(path)
    for scale in raw.get("scales") or ["fast"]:
        configs = list(grid.configs(loader.resolve(raw, str(path), scale)))
        assert configs
        for cfg in configs:
            full = params.validate(Settings, cfg)
            assert all(full[k] == v for k, v in cfg.items() if k in full)   # nothing the study set is changed


# ---------------------------------------------------------------- metrics and the per-layer table
def column_type_ok(model, name: str, value) -> bool:
    """Whether ``value`` fits the column the model declares for ``name`` (raises if it does not)."""
    cell(value, arrow_type(model.model_fields[name].annotation))
    return True


@pytest.fixture(scope="module")
def smoke_outputs() -> dict[str, tuple[dict, LocalContext]]:
    """One tiny trial per method, plus one on the CIFAR-10 stand-in, plus one without rho_reference."""
    out = {}
    for method in ["bp", "dfa", "fa", "sb", "cb"]:
        ctx = LocalContext()
        out[method] = (CreditBridge().run(CreditBridge.Params.model_validate(dict(TINY, method=method, seed=0)), ctx), ctx)
    cifar = dict(task="cifar10", data="standin", standin_train=128, standin_test=64, width=16, depth=2,
                 n_eval=32, rho_directions=4, vnet_hidden=16, epochs=1, track_every=0, method="cb", seed=0)
    ctx = LocalContext()
    out["cifar_cb"] = (CreditBridge().run(CreditBridge.Params.model_validate(cifar), ctx), ctx)
    ctx = LocalContext()
    out["no_reference"] = (CreditBridge().run(CreditBridge.Params.model_validate(dict(TINY, method="dfa", rho_reference=False, seed=0)), ctx), ctx)
    return out


def test_every_returned_metric_is_declared_with_its_type(smoke_outputs):
    declared = CreditBridge.Metrics.model_fields
    for case, (metrics, _) in smoke_outputs.items():
        assert set(metrics) <= set(declared), (case, set(metrics) - set(declared))
        assert all(column_type_ok(CreditBridge.Metrics, k, v) for k, v in metrics.items())
    assert "rho_bp_ref" not in smoke_outputs["no_reference"][0]
    assert smoke_outputs["cifar_cb"][0]["data_source"] == "standin:blobs"


def test_the_metrics_of_a_diverged_trial_are_declared():
    with pytest.raises(Diverged) as e:
        CreditBridge().run(CreditBridge.Params.model_validate(dict(TINY, method="bp", lr=1e30, n_train=256, epochs=5, seed=0)), LocalContext())
    assert set(e.value.metrics) == {"diverged_epoch"} and 1 <= e.value.metrics["diverged_epoch"] <= 5
    assert set(e.value.metrics) <= set(CreditBridge.Metrics.model_fields)


def test_every_declared_metric_is_returned_by_some_trial(smoke_outputs):
    returned = set().union(*(m for m, _ in smoke_outputs.values())) | {"diverged_epoch"}
    assert set(CreditBridge.Metrics.model_fields) == returned


def test_the_layers_table_has_exactly_the_declared_columns(smoke_outputs):
    declared = CreditBridge.artifacts["layers"].model_fields
    seen = set()
    for case, (_, ctx) in smoke_outputs.items():
        rows = ctx.artifacts["layers"]
        assert rows and all(set(r) <= set(declared) for r in rows), case
        for r in rows:
            assert all(column_type_ok(CreditBridge.artifacts["layers"], k, v) for k, v in r.items())
            seen |= set(r)
    assert seen == set(declared)
    assert "trial_id" not in declared        # the store adds it
    for _, ctx in smoke_outputs.values():     # as the store writes it: declared columns, in order
        table = artifact_table("t", ctx.artifacts["layers"], CreditBridge.artifacts["layers"])
        assert table.column_names == ["trial_id", *declared] and table.num_rows == len(ctx.artifacts["layers"])
    cifar_rows = smoke_outputs["cifar_cb"][1].artifacts["layers"]
    assert all(math.isnan(r["alpha"]) for r in cifar_rows)


def test_no_metric_or_column_repeats_a_parameter_or_reserved_column():
    names = set(CreditBridge.Params.model_fields)
    assert not names & set(CreditBridge.Metrics.model_fields)
    assert not (names | set(CreditBridge.Metrics.model_fields)) & RESERVED
    params.declared(CreditBridge)            # the orchestrator's own check
