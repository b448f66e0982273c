"""Declared parameters and metrics of the three quantcorr workloads (one per task)."""
import importlib
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError
import torch

from orchestrator.study import grid, loader
from orchestrator.study.params import ParamError, id_config, is_knob, validate
from orchestrator.study.contract import Diverged, LocalContext, check_finite
from workloads.quantcorr import Autoencoder, Classification, Transformer
from workloads.quantcorr.params import TRANSFORMER_PROTOCOL_DEFAULTS, QuantCorrParams, with_protocol_defaults

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = [Classification, Autoencoder, Transformer]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("OVERNIGHT_OFFLINE", "1")


def error_of(workload, config) -> ParamError:
    with pytest.raises(ParamError) as e:
        validate(workload.Params, config)
    return e.value


# ------------------------------------------------------------------------- registration
def test_pyproject_registers_each_task_under_its_own_name():
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["overnight.workloads"]
    for workload in WORKLOADS:
        assert eps[workload.name] == f"workloads.quantcorr.workload:{workload.__name__}"
        assert workload.version == "2"
    assert "quantcorr" not in eps  # the old dispatcher on `task` is gone


def test_shared_parameters_are_declared_once_in_the_base():
    shared = set(QuantCorrParams.model_fields)
    assert {"bits", "correct_every", "correction_hidden", "correction_init", "protocol", "lam", "guard",
            "legacy_h0_unquantized", "reliable_gap_rel", "seed", "stage_cache"} <= shared
    for workload in WORKLOADS:
        assert issubclass(workload.Params, QuantCorrParams)
        assert shared <= set(workload.Params.model_fields)
    assert "task" not in Transformer.Params.model_fields


# ------------------------------------------------------------------------- rejected configs
@pytest.mark.parametrize("workload", WORKLOADS)
def test_task_key_is_unknown_now(workload):
    err = error_of(workload, {"task": "classification"})
    assert err.key == "task" and err.unknown


@pytest.mark.parametrize("workload,config,key", [
    (Classification, {"bits": "4"}, "bits"),                       # a string is not an int
    (Classification, {"width": 64.0}, "width"),                    # nor is a float
    (Classification, {"stage_cache": 1}, "stage_cache"),           # 1 is not a bool
    (Autoencoder, {"hidden": 128}, "hidden"),                      # a list is expected
    (Autoencoder, {"hidden": [128, "64"]}, "hidden.1"),
    (Transformer, {"lam": "0.5"}, "lam"),
    (Transformer, {"legacy_prenorm_residual_bug": "yes"}, "legacy_prenorm_residual_bug"),
])
def test_wrong_type_names_the_key(workload, config, key):
    assert error_of(workload, config).key == key


@pytest.mark.parametrize("workload,config,key", [
    (Classification, {"bits": 1}, "bits"),
    (Classification, {"correct_every": 0}, "correct_every"),
    (Classification, {"correction_lr": 0.0}, "correction_lr"),
    (Classification, {"protocol": "grid"}, "protocol"),            # the grid protocol is the transformer's
    (Autoencoder, {"guard": "none"}, "guard"),
    (Autoencoder, {"hidden": [64, 0]}, "hidden.1"),
    (Autoencoder, {"data": "mnist"}, "data"),
    (Transformer, {"dropout": 1.0}, "dropout"),
    (Transformer, {"correction_init": "ones"}, "correction_init"),
    (Transformer, {"float_optimizer": "sgd"}, "float_optimizer"),
    (Transformer, {"correction_lr": -1e-3}, "correction_lr"),
])
def test_out_of_range_names_the_key(workload, config, key):
    err = error_of(workload, config)
    assert err.key == key and not err.unknown


@pytest.mark.parametrize("workload", WORKLOADS)
def test_unknown_key_names_it_and_suggests(workload):
    err = error_of(workload, {"correction_step": 10})
    assert err.key == "correction_step" and err.unknown
    assert "correction_steps" in str(err)


def test_transformer_shape_rules():
    assert "n_heads" in str(error_of(Transformer, {"d_model": 66, "n_heads": 4}))
    # max_seq_len None is the protocol's: 256 for hydra, 128 for grid and lambda
    validate(Transformer.Params, {"protocol": "hydra", "seq_len": 200})
    err = error_of(Transformer, {"protocol": "grid", "seq_len": 200})
    assert "seq_len" in str(err) and "128" in str(err)
    validate(Transformer.Params, {"protocol": "grid", "seq_len": 200, "max_seq_len": 200})


def test_a_task_protocol_check_happens_before_running():
    # run receives an AutoencoderParams instance: the grid protocol cannot be built into one
    with pytest.raises(ValidationError, match="protocol"):
        Autoencoder.Params.model_validate({"protocol": "grid"})


# ------------------------------------------------------------------------- defaults and ids
def test_knobs_are_not_in_the_trial_id():
    full = validate(Transformer.Params, {"stage_cache": False, "download": False, "bits": 2})
    assert is_knob(Transformer.Params, "stage_cache") and is_knob(Transformer.Params, "download")
    assert id_config(Transformer.Params, full) == {"bits": 2}
    # an explicit default is the same trial as an omitted one
    assert id_config(Autoencoder.Params, validate(Autoencoder.Params, {"hidden": [256, 128], "lam": 0.0})) == {}


def test_protocol_dependent_defaults_are_documented():
    doc = lambda workload, key: workload.Params.model_fields[key].description  # noqa: E731
    assert "hydra 15, lambda 30" in doc(Autoencoder, "float_epochs")
    assert "hydra 0.001, lambda 0.0001" in doc(Autoencoder, "correction_lr")
    assert "hydra 256, grid 128, lambda 128" in doc(Transformer, "max_seq_len")
    assert "hydra all, grid all, lambda 256" in doc(Transformer, "correction_sequences")


@pytest.mark.parametrize("task", ["classification", "autoencoder", "transformer"])
def test_task_code_has_no_defaults_of_its_own(task):
    # A task's run reads the validated config only (the workload validates first), so the declared
    # defaults are the only ones: a partial config is a KeyError, not a silently different trial.
    module = importlib.import_module(f"workloads.quantcorr.{task}")
    with pytest.raises(KeyError):
        module.run({"protocol": "hydra", "bits": 4}, LocalContext())


def test_protocol_defaults_fill_only_the_parameters_left_none():
    cfg = validate(Transformer.Params, {"protocol": "grid", "correction_lr": 0.01})
    p = with_protocol_defaults(TRANSFORMER_PROTOCOL_DEFAULTS["grid"], cfg)
    assert p["correction_lr"] == 0.01 and p["max_seq_len"] == 128 and p["float_optimizer"] == "adamw"
    assert p["float_epochs"] == cfg["float_epochs"] and p["correction_sequences"] is None  # grid: all
    lam = with_protocol_defaults(TRANSFORMER_PROTOCOL_DEFAULTS["lambda"], validate(Transformer.Params, {"protocol": "lambda"}))
    assert lam["correction_sequences"] == 256 and lam["float_optimizer"] == "adam"
    assert set(p) == set(cfg)


def test_no_seed_means_the_trial_seed():
    cfg = dict(width=16, depth=4, bits=4, correct_every=1, float_steps=20, correction_steps=10)
    derived = Classification().run(Classification.Params.model_validate(cfg), LocalContext(seed=7))
    explicit = Classification().run(Classification.Params.model_validate({**cfg, "seed": 7}), LocalContext(seed=0))
    other = Classification().run(Classification.Params.model_validate({**cfg, "seed": 8}), LocalContext(seed=7))
    assert derived["f"] == explicit["f"] and derived["c"] == explicit["c"]
    assert other["c"] != derived["c"]


# ------------------------------------------------------------------------- metrics
SMOKE = [("hydra_classification", Classification), ("lambda_classification", Classification),
         ("hydra_autoencoder", Autoencoder), ("lambda_autoencoder", Autoencoder),
         ("hydra_transformer", Transformer), ("lambda_transformer", Transformer),
         ("transformer_grid", Transformer)]


def smoke_trials(name: str) -> list[dict]:
    """The smallest corrected trial of a study's smoke scale, and its smallest baseline if it has one."""
    path = ROOT / "configs" / "studies" / f"{name}.yaml"
    configs = list(grid.configs(loader.resolve(loader.load_raw(path), str(path), "smoke")))
    size = lambda c: (c.get("width") or c.get("d_model") or sum(c.get("hidden", [])), c.get("correction_hidden"))  # noqa: E731
    corrected = min((c for c in configs if c["correct_every"] != 999), key=size)
    baselines = [c for c in configs if c["correct_every"] == 999]
    return [corrected] + ([min(baselines, key=size)] if baselines else [])


@pytest.mark.parametrize("name,workload", SMOKE)
def test_every_returned_metric_is_declared(tmp_path, name, workload):
    declared = set(workload.Metrics.model_fields)
    for cfg in smoke_trials(name):
        row = workload().run(workload.Params.model_validate(cfg), LocalContext(data_root=tmp_path, cache_dir=tmp_path / "c"))
        assert set(row) == declared - {"diverged_step"}, name  # diverged_step: only on divergence
        for key, value in row.items():  # the declared type holds the value
            workload.Metrics.model_validate({key: value})
        assert not set(row) & set(workload.Params.model_fields)


@pytest.mark.parametrize("workload", WORKLOADS)
def test_divergence_metrics_are_declared(workload):
    with pytest.raises(Diverged) as e:
        check_finite(12, correction_loss=float("nan"))
    assert set(e.value.metrics) <= set(workload.Metrics.model_fields)
    assert workload.Metrics.model_validate(e.value.metrics).diverged_step == 12
