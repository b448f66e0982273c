"""RamLM's typed parameters and metrics: bad configs are rejected naming the key, the defaults are
the values version 1 of the workload used (but for the one version 3 changed on purpose), every
study validates, and every metric a run returns
is declared with a type its value fits."""
import math
import typing
from pathlib import Path

import pytest

from orchestrator.study import grid, params, loader
from orchestrator.results import rows
from orchestrator.study.contract import Diverged, LocalContext, check_finite
from workloads.ramlm import RamLM
from workloads.ramlm.surrogate import FITNESS_MODES
from workloads.ramlm.search import GAConfig, TSConfig

P = RamLM.Params

# version 1 read these defaults from its RamLMConfig dataclass; version 2 behaved the same; version 3
# changed pc_group_size from 1 to the original's 10 (docs/studies/ramlm.md, 'Per-cluster optimisation')
V1_DEFAULTS = {
    "experiment": "", "semantics": "", "data": "auto", "tokenizer": "auto", "word_vocab": 8192,
    "synthetic_vocab": 50257, "synthetic_exponent": 0.95, "data_seed": 0, "train_tokens": 0, "val_tokens": 0,
    "test_tokens": 0, "context": 4, "tiers": "", "neurons": 3, "bits": 8, "tier_order": "frequency",
    "top_k": 1000, "empty_value": 0.0, "seed": 0, "backend": "native", "memory_backends": "auto",
    "optimize": False, "strategy": "GA,TS", "ga_population": 20, "ga_generations": 50, "ga_mutation": 0.01,
    "ga_crossover": 0.7, "ga_elitism": 0, "ga_tournament": 3, "ga_threshold_pct": 0.05, "ts_iterations": 10,
    "ts_neighbors": 30, "ts_tabu": 5, "ts_mutation": 0.001, "ts_threshold_pct": 0.5, "patience": 1,
    "check_every": 5, "opt_seed": 42, "opt_window": 200, "opt_train_windows": 50, "opt_eval_windows": 20,
    "opt_eval_split": "validation", "overfit_monitor": True, "grace_checks": 1, "windowed_pretrain": False,
    "pc_fitness": "SIMPLE", "pc_group_size": 10, "pc_iterative_passes": 1, "calibration": "temperature_prior",
    "calibration_examples": 2000,
}

STUDY_DIR = Path(__file__).resolve().parents[2] / "configs" / "studies"
STUDIES = sorted(str(p) for p in STUDY_DIR.glob("ramlm_*.yaml"))


def rejected(config: dict) -> params.ParamError:
    with pytest.raises(params.ParamError) as info:
        params.validate(P, config)
    return info.value


# ----------------------------------------------------------------------------- rejection
@pytest.mark.parametrize("key, value", [
    ("context", "4"),                  # strict: a string is not an int
    ("optimize", 1),                   # nor is an int a bool
    ("empty_value", True),             # nor a bool a number
    ("tiers", [[100, 15, 20]]),        # the tier spec is one string
    ("ga_population", 20.0),
])
def test_wrong_type_names_the_key(key, value):
    err = rejected({key: value})
    assert err.key == key and err.value == value


@pytest.mark.parametrize("key, value", [
    ("empty_value", 1.5), ("empty_value", -0.1), ("context", 0), ("check_every", 0), ("bits", 61),
    ("ga_mutation", 1.1), ("ga_tournament", 0), ("train_tokens", -1), ("opt_eval_windows", 0), ("seed", -1),
])
def test_out_of_range_names_the_key(key, value):
    err = rejected({key: value})
    assert err.key == key and str(value) in str(err)


@pytest.mark.parametrize("key, value", [
    ("pc_fitness", "simple"), ("calibration", "platt"), ("tier_order", "alphabetical"), ("data", "wikitext"),
    ("semantics", "legacey"),
])
def test_value_outside_the_choices_names_the_key(key, value):
    assert rejected({key: value}).key == key


def test_unknown_key_names_it_and_suggests_the_close_one():
    err = rejected({"tierz": "100,15,20;rest,5,8"})
    assert err.key == "tierz" and err.unknown and "`tiers`" in str(err)


@pytest.mark.parametrize("spec_text, message", [
    ("100,15", "expected 3 fields"),
    ("rest,5,8;100,15,20", "only be the last tier"),
    ("100,0,8;rest,5,8", "neurons must be positive"),
    ("100,5,61;rest,5,8", "bits must be in 1..60"),
    ("abc,5,8;rest,5,8", "count must be an integer"),
])
def test_tier_spec_syntax_is_checked_before_the_data_is_loaded(spec_text, message):
    err = rejected({"tiers": spec_text})
    assert err.key == "tiers" and message in str(err)


def test_strategy_and_memory_backends_entries_are_checked():
    assert rejected({"strategy": "GA,SA"}).key == "strategy"
    assert "once" in str(rejected({"strategy": "GA,ga"}))   # a repeat would be skipped silently
    assert rejected({"memory_backends": "Dense"}).key == "memory_backends"


@pytest.mark.parametrize("config, names", [
    ({"memory_backends": "dense,lsh"}, "memory_backends"),                         # two names, one tier
    ({"tiers": "10,2,8;rest,2,8", "memory_backends": "dense,dense,dense"}, "memory_backends"),
    ({"tiers": "10,2,40;rest,2,8", "memory_backends": "sparse"}, "memory_backends"),   # 40 bits need lsh
    ({"bits": 31, "memory_backends": "dense"}, "memory_backends"),
    ({"tiers": "10,2,8;rest,2,8", "neurons": 5}, "neurons"),     # ignored by a tiered model
])
def test_cross_field_rules_name_the_fields(config, names):
    err = rejected(config)
    assert err.message.startswith(names)


def test_equivalent_spellings_normalise_to_one_config():
    full = params.validate(P, {"tiers": " 100, 15,20; REST,5,8;", "strategy": " ga , ts", "empty_value": 0,
                               "memory_backends": "sparse, dense"})
    assert full["tiers"] == "100,15,20;rest,5,8"
    assert full["strategy"] == "GA,TS"
    assert full["memory_backends"] == "sparse,dense"
    assert full["empty_value"] == 0.0 and isinstance(full["empty_value"], float)
    assert params.id_config(P, full) == params.id_config(P, params.validate(
        P, {"tiers": "100,15,20;rest,5,8", "memory_backends": "sparse,dense"}))


def test_accepted_values_that_look_unusual():
    full = params.validate(P, {"tiers": "", "strategy": "", "memory_backends": "lsh", "bits": 40})
    assert (full["tiers"], full["strategy"]) == ("", "")
    params.validate(P, {"tiers": "10,2,40;rest,2,8", "memory_backends": "lsh,dense"})


# ----------------------------------------------------------------------------- defaults
def test_defaults_are_version_1s():
    full = params.validate(P, {})
    assert full == V1_DEFAULTS
    assert {k: type(v) for k, v in full.items()} == {k: type(v) for k, v in V1_DEFAULTS.items()}


def test_defaults_agree_with_the_optimiser_configs_they_feed():
    ga, ts = GAConfig(), TSConfig()
    d = params.validate(P, {})
    assert (d["ga_population"], d["ga_generations"], d["ga_mutation"], d["ga_crossover"], d["ga_tournament"],
            d["ga_threshold_pct"], d["patience"], d["check_every"], d["opt_seed"]) == (
        ga.population, ga.generations, ga.mutation_rate, ga.crossover_rate, ga.tournament, ga.threshold_pct,
        ga.patience, ga.check_every, ga.seed)
    assert (d["ts_iterations"], d["ts_neighbors"], d["ts_tabu"], d["ts_mutation"], d["ts_threshold_pct"]) == (
        ts.iterations, ts.neighbors, ts.tabu_size, ts.mutation_rate, ts.threshold_pct)
    assert typing.get_args(P.model_fields["pc_fitness"].annotation) == FITNESS_MODES


def test_only_the_memory_implementation_is_left_out_of_the_trial_id():
    knobs = {name for name in P.model_fields if params.is_knob(P, name)}
    assert knobs == {"backend"}


# ----------------------------------------------------------------------------- studies
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: Path(p).stem)
def test_every_study_validates_at_every_scale_unchanged(path):
    raw = loader.load_raw(path)
    assert len(STUDIES) == 5
    n = 0
    for scale in raw.get("scales", {}) or ["fast"]:
        for cfg in grid.configs(loader.resolve(raw, path, scale)):
            full = params.validate(P, cfg)
            assert {k: full[k] for k in cfg} == cfg       # the study's values pass through as written
            assert params.validate(P, full) == full      # and run() may validate the full config again
            n += 1
    assert n > 0


# ----------------------------------------------------------------------------- metrics
def smoke_config(name: str) -> dict:
    path = str(STUDY_DIR / f"{name}.yaml")
    raw = loader.load_raw(path)
    return next(iter(grid.configs(loader.resolve(raw, path, "smoke"))))


def check_declared(metrics: dict) -> None:
    declared = RamLM.Metrics.model_fields
    assert set(metrics) <= set(declared), sorted(set(metrics) - set(declared))
    for name, value in metrics.items():
        typ = rows.arrow_type(declared[name].annotation)
        if not (isinstance(value, float) and math.isnan(value)):
            rows.cell(value, typ)       # raises TypeError when the value does not fit the declared type


@pytest.fixture(scope="module")
def smoke_rows() -> dict[str, dict]:
    """One smoke-size run per kind of trial: GA then TS on three tiers (ramlm_quick), PC on the
    uniform model (ramlm_pc_fitness), and a tiny five-tier model without calibration."""
    five_tiers = dict(data="synthetic", synthetic_vocab=300, train_tokens=800, val_tokens=200, test_tokens=200,
                      tiers="5,3,10;5,3,8;20,2,8;50,2,6;rest,2,6", calibration="none")
    return {
        "ga_ts": RamLM().run(RamLM.Params.model_validate(smoke_config("ramlm_quick")), LocalContext()),
        "pc": RamLM().run(RamLM.Params.model_validate(smoke_config("ramlm_pc_fitness")), LocalContext()),
        "five_tiers_uncalibrated": RamLM().run(RamLM.Params.model_validate(five_tiers), LocalContext()),
        "five_tiers": RamLM().run(RamLM.Params.model_validate({**five_tiers, "calibration": "temperature", "calibration_examples": 100}),
                                  LocalContext()),
    }


def test_every_returned_metric_is_declared_with_its_type(smoke_rows):
    for row in smoke_rows.values():
        check_declared(row)


def test_declared_metrics_are_all_produced_by_some_run(smoke_rows):
    produced = set().union(*map(set, smoke_rows.values()))
    # only a Diverged trial carries diverged_step
    assert set(RamLM.Metrics.model_fields) - produced == {"diverged_step"}


def test_metrics_of_a_diverged_trial_are_declared():
    with pytest.raises(Diverged) as info:
        check_finite(0, ce=float("nan"))
    assert info.value.metrics and set(info.value.metrics) <= set(RamLM.Metrics.model_fields)


def test_omitted_and_explicit_defaults_give_the_same_row():
    config = dict(data="synthetic", synthetic_vocab=300, train_tokens=800, val_tokens=200, test_tokens=200,
                  tiers="10,4,12;rest,2,6", calibration_examples=100)
    explicit = {**V1_DEFAULTS, **config}
    a, b = RamLM().run(RamLM.Params.model_validate(config), LocalContext()), RamLM().run(RamLM.Params.model_validate(explicit), LocalContext())
    timing = {k for k in a if k.endswith("_s")}
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    assert a["vocab_size"] == 300 and a["tier_spec"] == "10,4,12;290,2,6"
