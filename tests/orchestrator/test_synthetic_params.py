"""The synthetic workload's declared parameters and metrics: every key the orchestrator's own tests
pass to it is accepted, bad values are refused naming the key, the defaults are the ones the code
used before they were declared, and every metric it returns has a declared, correctly typed column.
No Ray: trials run in-process through LocalContext."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from orchestrator.study import grid, params, loader
from orchestrator.results import rows
from orchestrator.study.contract import Diverged, LocalContext
from workloads.synthetic import Synthetic, SyntheticParams

ROOT = Path(__file__).resolve().parents[2]
# what the code used when a key was absent, before the keys were declared (version 1)
PREVIOUS_DEFAULTS = {"steps": 5, "work_units": 10, "sleep_s": 0.0, "fail": "none", "lr": 0.1, "placement": False,
                     "marker_dir": None, "barrier_dir": None, "barrier_n": 1, "barrier_timeout_s": 120.0}


def refused(config: dict) -> params.ParamError:
    with pytest.raises(params.ParamError) as e:
        params.validate(SyntheticParams, config)
    return e.value


def run(config: dict, **ctx) -> tuple[dict, LocalContext]:
    context = LocalContext(**ctx)
    return Synthetic().run(Synthetic.Params.model_validate(config), context), context


# ---------------------------------------------------------------- what the orchestrator's tests pass
@pytest.mark.parametrize("config", [
    # tests/orchestrator: end-to-end, kill/resume, failure kinds
    {"steps": 3, "work_units": 1, "marker_dir": "/tmp/m", "lr": 0.1, "seed": 0},
    {"steps": 8, "work_units": 1, "sleep_s": 0.4, "marker_dir": "/tmp/m", "lr": 0.4, "seed": 1},
    {"steps": 4, "work_units": 1, "fail": "crash", "lr": 0.2, "seed": 2},
    # tests/reliability: the bad-input study's base (its zipped shape group) and the worker kill
    {"steps": 2, "work_units": 1, "lr": 0.1, "seed": 0, "width": 8, "depth": 2},
    {"steps": 8, "work_units": 1, "sleep_s": 0.3, "placement": True, "marker_dir": "/tmp/m", "lr": 0.3, "seed": 0},
    # tests/cluster: placement and barriers
    {"steps": 3, "work_units": 1, "sleep_s": 0.2, "placement": True, "barrier_dir": "/tmp/b", "barrier_n": 4,
     "barrier_timeout_s": 60, "lr": 0.1, "seed": 1},
    {"steps": 1, "work_units": 1, "placement": True, "marker_dir": "/tmp/m", "lr": 0.2},
])
def test_every_key_the_orchestrator_tests_use_is_accepted(config):
    full = params.validate(SyntheticParams, config)
    assert set(full) == set(SyntheticParams.model_fields)
    assert all(full[k] == v for k, v in config.items())


def test_the_study_file_validates_at_every_scale():
    path = ROOT / "configs" / "studies" / "synthetic.yaml"
    raw = loader.load_raw(path)
    for scale in raw["scales"]:
        configs = list(grid.configs(loader.resolve(raw, str(path), scale)))
        assert len(configs) == 12
        for cfg in configs:
            params.validate(SyntheticParams, cfg)


# ---------------------------------------------------------------- refused configs
def test_a_word_for_steps_keeps_its_one_line_message():
    e = refused({"steps": "many"})
    assert str(e) == "steps: must be a whole number >= 0 (got 'many')" and e.key == "steps"


@pytest.mark.parametrize("key, value", [
    ("steps", -1), ("steps", 2.0), ("steps", True), ("work_units", -3), ("work_units", "10"),
])
def test_steps_and_work_units_are_whole_numbers_from_zero(key, value):
    e = refused({key: value})
    assert e.key == key and str(e) == f"{key}: must be a whole number >= 0 (got {value!r})"


@pytest.mark.parametrize("key, value", [
    ("lr", "0.1"), ("sleep_s", "1"), ("placement", "yes"), ("placement", 1), ("seed", 1.0),
    ("marker_dir", 3), ("barrier_n", 2.5), ("width", "8"),
])
def test_a_wrong_type_names_the_key(key, value):
    e = refused({key: value})
    assert e.key == key and f"(got {value!r})" in str(e)


@pytest.mark.parametrize("key, value", [
    ("sleep_s", -0.1), ("barrier_n", 0), ("barrier_timeout_s", -1.0), ("seed", -1),
])
def test_an_out_of_range_value_names_the_key(key, value):
    e = refused({key: value})
    assert e.key == key and "greater than or equal to" in str(e) and f"(got {value!r})" in str(e)


def test_an_unknown_failure_kind_is_refused():
    e = refused({"fail": "explode"})
    assert e.key == "fail" and "'explode'" in str(e) and "'crash'" in str(e)


def test_an_unknown_key_is_refused_with_a_suggestion():
    e = refused({"stepz": 3})
    assert e.unknown and e.key == "stepz" and str(e) == "stepz: unknown parameter (did you mean `steps`?)"
    with pytest.raises(params.ParamError, match="stepz"):
        params.validate(SyntheticParams, {"steps": 3, "stepz": 3})


# ---------------------------------------------------------------- defaults and the trial id
def test_declared_defaults_are_the_previous_ones():
    declared = {n: f.get_default(call_default_factory=True) for n, f in SyntheticParams.model_fields.items()}
    assert {k: declared[k] for k in PREVIOUS_DEFAULTS} == PREVIOUS_DEFAULTS
    # seed: the trial's seed is derived from its id; width/depth: not read
    assert set(declared) - set(PREVIOUS_DEFAULTS) == {"seed", "width", "depth"}
    assert declared["seed"] is declared["width"] is declared["depth"] is None


def test_an_empty_config_runs_the_default_trial():
    out, ctx = run({}, seed=4)
    assert out["final_step"] == 5 and [h["step"] for h in ctx.history] == [0, 1, 2, 3, 4]
    # the loss recurrence with the default lr 0.1
    loss = 1.0
    for step in range(5):
        loss = loss * 0.9 + 0.01 * (1 + math.sin(4 + step))
    assert out["loss"] == pytest.approx(loss, rel=1e-12)


def test_explicit_defaults_give_the_same_trial_as_omitted_ones():
    short = {"steps": 3, "work_units": 1, "lr": 0.2, "seed": 1}
    full = params.validate(SyntheticParams, short)
    a, ctx_a = run(short, seed=1)
    b, ctx_b = run(full, seed=1)
    assert a == b and ctx_a.history == ctx_b.history
    assert params.id_config(SyntheticParams, full) == {"steps": 3, "work_units": 1, "lr": 0.2, "seed": 1}


def test_knobs_are_left_out_of_the_trial_id_and_parameters_are_not():
    knobs = {n for n in SyntheticParams.model_fields if params.is_knob(SyntheticParams, n)}
    assert knobs == {"marker_dir", "barrier_dir", "barrier_n", "barrier_timeout_s"}
    base = params.validate(SyntheticParams, {"steps": 2, "lr": 0.1, "seed": 0})

    def tid(**changes):
        return grid.trial_id("synthetic", Synthetic.version, params.id_config(SyntheticParams, {**base, **changes}))

    assert tid(marker_dir="/x", barrier_dir="/y", barrier_n=4, barrier_timeout_s=5.0) == tid()
    for change in ({"lr": 0.2}, {"seed": 1}, {"fail": "nan"}, {"placement": True}, {"sleep_s": 0.1}):
        assert tid(**change) != tid(), change
    # the zipped shape pairs of the bad-input study stay distinct trials
    assert tid(width=8, depth=2) != tid(width=16, depth=3) != tid()


def test_a_direct_call_validates_and_fills_defaults():
    out, _ = run({"steps": 1, "work_units": 1, "lr": 0.1, "seed": 3}, seed=3)     # as the benchmark calls it
    assert out["final_step"] == 1
    with pytest.raises(ValueError, match="steps"):
        run({"steps": "many"})


# ---------------------------------------------------------------- metrics
def column_type_ok(name: str, value) -> bool:
    rows.cell(value, rows.arrow_type(Synthetic.Metrics.model_fields[name].annotation))
    return True


def test_every_returned_metric_is_declared_with_its_type(tmp_path):
    plain, _ = run({"steps": 2, "work_units": 1})
    assert set(plain) == {"loss", "resumed_from", "final_step"}
    placed, _ = run({"steps": 2, "work_units": 1, "placement": True, "marker_dir": str(tmp_path)})
    assert set(placed) == set(plain) | {"node_id", "gpu_ids", "pid", "cuda_visible_devices"}
    assert isinstance(placed["node_id"], str) and isinstance(placed["pid"], int)  # "" outside Ray
    start = next(tmp_path.glob("*.start"))
    assert json.loads(start.read_text()) == {k: placed[k] for k in ("node_id", "gpu_ids", "pid", "cuda_visible_devices")}
    with pytest.raises(Diverged) as e:
        run({"steps": 4, "work_units": 1, "fail": "nan"})
    assert e.value.metrics == {"diverged_step": 2}

    returned = {**plain, **placed, **e.value.metrics}
    assert set(returned) == set(Synthetic.Metrics.model_fields)           # declared = returned, no more
    assert all(column_type_ok(k, v) for k, v in returned.items())


def test_no_metric_repeats_a_parameter_or_reserved_column():
    names = set(SyntheticParams.model_fields)
    assert not names & set(Synthetic.Metrics.model_fields)
    assert not (names | set(Synthetic.Metrics.model_fields)) & rows.RESERVED
    params.declared(Synthetic)
