"""Study files -> trials: validation errors, grid counts, trial-id stability."""
from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.study import loader
from orchestrator.errors import UserError
from orchestrator.study.grid import expand, trial_id
from tests.conftest import ROOT
from tests.processes import overnight_subprocess

BASE = {
    "name": "t",
    "workload": "synthetic",
    "fixed": {"steps": 2},
    "grid": {"lr": [0.1, 0.2], "seed": [0, 1, 2]},
}


def study(**changes):
    return loader.validate({**BASE, **changes}, "t.yaml")


# ---------------------------------------------------------------- grid counts
def test_cartesian_count_and_configs():
    trials = expand(study(), "1")
    assert len(trials) == 6
    assert trials[0].config == {"steps": 2, "lr": 0.1, "seed": 0}
    assert {(t.config["lr"], t.config["seed"]) for t in trials} == {(a, b) for a in (0.1, 0.2) for b in (0, 1, 2)}


def test_zip_groups_vary_together():
    arch = [{"d_model": 64, "n_layers": 2}, {"d_model": 128, "n_layers": 4}, {"d_model": 256, "n_layers": 6}]
    trials = expand(study(zip={"arch": arch}), "1")
    assert len(trials) == 18
    pairs = {(t.config["d_model"], t.config["n_layers"]) for t in trials}
    assert pairs == {(64, 2), (128, 4), (256, 6)}


def test_variants_union_like_the_hydra_sweep():
    s = study(grid={"width": [32, 64, 128], "depth": [4, 6, 8], "bits": [2, 4]},
              variants=[{"grid": {"every": [1, 2, 4], "h": [0, 32]}},
                        {"fixed": {"every": 999, "h": 0}}])
    trials = expand(s, "1")
    assert len(trials) == 126
    assert sum(t.config["every"] == 999 for t in trials) == 18


def test_duplicate_configs_are_merged():
    s = study(grid={"lr": [0.1, 0.1, 0.2]})
    assert len(expand(s, "1")) == 2


def test_scale_override_replaces_axes_and_merges_fixed():
    raw = {**BASE, "scales": {"smoke": {"fixed": {"steps": 1}, "grid": {"seed": [0]}},
                              "full": {"resources": {"gpu": 0.25}}}}
    smoke = loader.resolve(raw, "t.yaml", "smoke")
    assert [t.config for t in expand(smoke, "1")] == [{"steps": 1, "lr": 0.1, "seed": 0}, {"steps": 1, "lr": 0.2, "seed": 0}]
    assert loader.resolve(raw, "t.yaml", "full").resources.gpu == 0.25


def test_set_overrides_fixed_axis_and_study_field():
    s = loader.resolve(BASE, "t.yaml", "fast", ["steps=7", "seed=[5, 6]", "lr=0.3", "resources.cpu=2", "new_key=abc"])
    trials = expand(s, "1")
    assert [t.config["seed"] for t in trials] == [5, 6]
    assert {t.config["lr"] for t in trials} == {0.3}
    assert all(t.config["steps"] == 7 and t.config["new_key"] == "abc" for t in trials)
    assert s.resources.cpu == 2


def test_set_pins_a_value_the_variants_fix_themselves():
    # a variant's fixed value would otherwise win over --set, and the user's value be ignored
    raw = {**BASE, "variants": [{"name": "new", "fixed": {"flavour": "a", "steps": 3}},
                                {"name": "old", "fixed": {"flavour": "b"}}]}
    s = loader.resolve(raw, "t.yaml", "fast", ["flavour=a"])
    trials = expand(s, "1")
    assert {t.config["flavour"] for t in trials} == {"a"}
    assert sorted({t.config["steps"] for t in trials}) == [2, 3]   # the rest of each variant stays


# ---------------------------------------------------------------- ids
def test_trial_id_is_stable_and_order_independent():
    a = trial_id("synthetic", "1", {"lr": 0.1, "seed": 0})
    assert a == trial_id("synthetic", "1", {"seed": 0, "lr": 0.1})
    # pinned value: an id must not change between releases, machines or Python processes
    assert a == "442d2ec9d689db43"
    assert a != trial_id("synthetic", "2", {"lr": 0.1, "seed": 0})       # version bump
    assert a != trial_id("quantcorr", "1", {"lr": 0.1, "seed": 0})       # other workload
    assert a != trial_id("synthetic", "1", {"lr": 0.1, "seed": 1})       # other config


def test_trial_id_same_in_a_fresh_process():
    code = "from orchestrator.study.grid import trial_id; print(trial_id('synthetic','1',{'seed':0,'lr':0.1}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == trial_id("synthetic", "1", {"lr": 0.1, "seed": 0})


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("changes, field, words", [
    ({"grid": {"lr": 0.1}}, "grid", "non-empty list"),
    ({"grid": {"lr": []}}, "grid", "non-empty list"),
    ({"gird": {"lr": [1]}}, "gird", "unknown field"),
    ({"name": "bad name!"}, "name", "pattern"),
    ({"mode": "maximize"}, "mode", "'min' or 'max'"),
    ({"resources": {"cpu": 0}}, "resources.cpu", "greater than 0"),
    ({"resources": {"gpu": 1.5}}, "resources.gpu", "whole number"),
    ({"max_failures": -1}, "max_failures", "greater than or equal"),
    ({"fixed": {"lr": 1}}, "fixed.lr", "also an axis"),
    ({"zip": {"arch": [{"a": 1}, {"b": 2}]}}, "zip", "every entry needs the keys"),
    ({"scales": {"huge": {}}}, "scales.huge", "smoke"),
    ({"report": [{"title": "x", "values": ["loss"], "stats": ["avg"]}]}, "report.0.stats", "unknown stat"),
    ({"report": [{"title": "x"}]}, "report.0", "values"),
])
def test_validation_errors_name_the_field(changes, field, words):
    doc = {**BASE, **changes}
    doc = {k: v for k, v in doc.items() if not (k == "grid" and "gird" in changes)}
    with pytest.raises(UserError) as e:
        loader.validate(doc, "t.yaml")
    assert e.value.source == "t.yaml"
    assert e.value.field.startswith(field), e.value
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_required_field():
    with pytest.raises(UserError, match="workload: required field is missing"):
        loader.validate({"name": "x"}, "t.yaml")


def test_scale_grid_override_must_name_an_axis():
    raw = {**BASE, "scales": {"smoke": {"grid": {"nope": [1]}}}}
    with pytest.raises(UserError, match="scales.smoke.grid.nope"):
        loader.resolve(raw, "t.yaml", "smoke")


def test_bad_set_values_are_validated_like_the_file():
    with pytest.raises(UserError, match="resources.cpu"):
        loader.resolve(BASE, "t.yaml", "fast", ["resources.cpu=-1"])
    with pytest.raises(UserError, match="key=value"):
        loader.resolve(BASE, "t.yaml", "fast", ["steps"])
    zipped = {**BASE, "zip": {"arch": [{"d": 1}, {"d": 2}]}}
    with pytest.raises(UserError, match="zipped in group 'arch'"):
        loader.resolve(zipped, "t.yaml", "fast", ["d=3"])


@pytest.mark.parametrize("text, expect", [
    ("name: x\nworkload: synthetic\ngrid: {lr: [1, 2]\n", "invalid YAML"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("name: x\nworkload: no_such_workload\n", "unknown workload 'no_such_workload'"),
    ("name: x\nworkload: synthetic\ngrid: {lr: 3}\n", "grid: axis 'lr' must be a non-empty list (got 3)"),
])
def test_cli_bad_study_exit_2_one_line(tmp_path, text, expect):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = overnight_subprocess("run", path, "--results", tmp_path / "res", "--scale", "smoke")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and expect in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "res").exists()  # nothing written for a bad study


def test_cli_bad_flags_exit_2_one_line(tmp_path):
    for args in (["run", "configs/studies/synthetic.yaml", "--scale", "huge"],
                 ["run", "configs/studies/synthetic.yaml", "--max-concurrent", "x"],
                 ["run", "no/such/file.yaml"],
                 ["status", tmp_path]):
        proc = overnight_subprocess(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr


def test_dry_run_prints_count_and_runs_nothing(tmp_path):
    proc = overnight_subprocess("run", "synthetic", "--scale", "smoke", "--dry-run", "--results", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "12 trials"
    assert not any(tmp_path.iterdir())


def test_workload_rejects_a_config_before_anything_runs(tmp_path):
    proc = overnight_subprocess("run", "synthetic", "--scale", "smoke", "--set", "steps=many", "--results", tmp_path)
    assert proc.returncode == 2
    # the error names where the bad value came from (--set), the key and the value
    line = proc.stderr.strip()
    assert line.startswith("overnight: error: --set: steps: ") and "'many'" in line and "\n" not in line, line
    assert not any(tmp_path.iterdir())
