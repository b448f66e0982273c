"""50 generated malformed study files: each is refused with exit 2 and one line on stderr that names
the file and what is wrong, before anything is written or Ray starts."""
from __future__ import annotations

import copy

import pytest
import yaml

from orchestrator.cli import main

BASE = {
    "name": "base", "workload": "synthetic", "description": "valid starting point", "metric": "loss", "mode": "min",
    "max_failures": 1, "fixed": {"steps": 2, "work_units": 1},
    "grid": {"lr": [0.1, 0.2], "seed": [0, 1]},
    "zip": {"shape": [{"width": 8, "depth": 2}, {"width": 16, "depth": 3}]},
    "resources": {"cpu": 1, "gpu": 0},
    "scales": {"smoke": {"fixed": {"steps": 1}}, "fast": {"fixed": {"steps": 2}}},
    "report": [{"title": "Loss by lr", "by": ["lr"], "values": ["loss"], "stats": ["mean", "n"]}],
}


def doc(**changes):
    """BASE with top-level keys replaced (None deletes a key)."""
    d = copy.deepcopy(BASE)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def nested(path: str, value):
    d = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[last] = value
    return d


# (case id, file content: text or a document to dump, words the error line must contain, extra CLI args)
CASES = [
    # --- not YAML / not a mapping
    ("unclosed_list", "name: x\nworkload: [synthetic\n", ["invalid YAML", "line"], []),
    ("tab_indent", "name: x\n\tworkload: synthetic\n", ["invalid YAML"], []),
    ("empty_file", "", ["mapping", "NoneType"], []),
    ("top_level_list", "- name: x\n- workload: y\n", ["mapping", "list"], []),
    ("top_level_scalar", "42\n", ["mapping", "int"], []),
    ("nested_colon", "name: a: b\nworkload: synthetic\n", ["invalid YAML"], []),
    ("binary_garbage", b"\xff\xfe\x00\x81name", ["cannot read"], []),
    ("unterminated_quote", 'name: "base\nworkload: synthetic\n', ["invalid YAML"], []),
    ("missing_colon", "name: base\nworkload synthetic\ngrid: {lr: [1]}\n", ["invalid YAML"], []),
    ("bad_flow_mapping", "name: base\nworkload: synthetic\ngrid: {lr: [1, 2}\n", ["invalid YAML"], []),
    # --- required fields, names, types
    ("no_name", doc(name=None), ["name", "required"], []),
    ("no_workload", doc(workload=None), ["workload", "required"], []),
    ("name_with_slash", doc(name="a/b"), ["name", "a/b"], []),
    ("name_empty", doc(name=""), ["name"], []),
    ("name_not_string", doc(name=123), ["name", "123"], []),
    ("unknown_top_field", doc(grdi={"lr": [1]}), ["grdi", "unknown field"], []),
    ("unknown_workload", doc(workload="nosuch"), ["workload", "nosuch"], []),
    ("empty_workload", doc(workload=""), ["workload"], []),
    ("bad_mode", doc(mode="maximize"), ["mode", "maximize"], []),
    ("negative_max_failures", doc(max_failures=-1), ["max_failures", "-1"], []),
    ("word_max_failures", doc(max_failures="two"), ["max_failures", "two"], []),
    ("zero_max_concurrent", doc(max_concurrent=0), ["max_concurrent", "0"], []),
    ("description_list", doc(description=["a", "b"]), ["description"], []),
    ("metric_mapping", doc(metric={"name": "loss"}), ["metric"], []),
    # --- grid / zip / fixed / variants
    ("axis_scalar", nested("grid.lr", 0.1), ["grid", "lr", "non-empty list"], []),
    ("axis_empty", nested("grid.lr", []), ["grid", "lr", "non-empty list"], []),
    ("grid_list", doc(grid=[0.1, 0.2]), ["grid"], []),
    ("fixed_scalar", doc(fixed=3), ["fixed"], []),
    ("zip_group_mapping", nested("zip.shape", {"width": 8}), ["zip", "shape"], []),
    ("zip_keys_differ", nested("zip.shape", [{"width": 8, "depth": 2}, {"width": 16}]), ["zip", "shape", "depth"], []),
    ("zip_group_empty", nested("zip.shape", []), ["zip", "shape"], []),
    ("fixed_and_axis", nested("fixed.lr", 0.5), ["fixed.lr", "axis"], []),
    ("reserved_key", nested("fixed.status", "ok"), ["status", "reserved"], []),
    ("grid_and_zip_same_key", nested("grid.width", [4, 8]), ["width"], []),
    ("variants_not_list", doc(variants={"grid": {"bits": [2]}}), ["variants"], []),
    ("variant_unknown_field", doc(variants=[{"grid": {"bits": [2]}, "fixd": {}}]), ["variants", "fixd"], []),
    ("variant_redefines_axis", doc(variants=[{"grid": {"lr": [0.3]}}]), ["variants", "lr", "axis"], []),
    # --- resources
    ("zero_cpu", nested("resources.cpu", 0), ["resources", "cpu"], []),
    ("negative_gpu", nested("resources.gpu", -1), ["resources", "gpu", "-1"], []),
    ("fractional_gpu_above_one", nested("resources.gpu", 1.5), ["resources", "gpu", "1.5"], []),
    ("resources_typo", nested("resources.gpus", 1), ["resources", "gpus", "unknown field"], []),
    ("custom_resource_word", nested("resources.custom", {"slot": "many"}), ["resources", "custom", "many"], []),
    # --- scales
    ("unknown_scale_name", nested("scales.huge", {"fixed": {"steps": 9}}), ["scales", "huge"], []),
    ("scale_unknown_field", nested("scales.smoke", {"fixd": {"steps": 1}}), ["scales", "smoke", "fixd"], []),
    ("scale_grid_unknown_axis", nested("scales.smoke", {"grid": {"nosuch": [1]}}), ["scales.smoke.grid.nosuch"],
     ["--scale", "smoke"]),
    ("scale_not_defined", doc(scales={"smoke": {"fixed": {"steps": 1}}}), ["scales", "fast"], ["--scale", "fast"]),
    # --- report tables
    ("report_table_empty", doc(report=[{"title": "Nothing"}]), ["report", "values"], []),
    ("report_unknown_stat", nested("report.0.stats", ["mean", "avg"]), ["report", "stats", "avg"], []),
    ("report_best_mode", doc(report=[{"title": "Best", "best": {"metric": "loss", "mode": "up"}}]),
     ["report", "best", "mode", "up"], []),
    # --- rejected by the workload itself (check_config)
    ("workload_rejects_value", nested("fixed.fail", "explode"), ["fail", "explode"], []),
]


def test_there_are_fifty_distinct_cases():
    assert len(CASES) == 50 and len({c[0] for c in CASES}) == 50


@pytest.mark.parametrize("case, content, words, extra", CASES, ids=[c[0] for c in CASES])
def test_malformed_study_is_one_line_exit_2(tmp_path, capsys, case, content, words, extra):
    path = tmp_path / f"{case}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(yaml.safe_dump(content, sort_keys=False))
    res = tmp_path / "res"

    code = main(["run", str(path), "--results", str(res), *extra])
    out = capsys.readouterr()

    assert code == 2, (out.out, out.err)
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    line = lines[0]
    assert line.startswith("overnight: error: ") and "Traceback" not in line
    assert str(path) in line, line          # names the file
    for w in words:                          # and the field / value
        assert w in line, (w, line)
    assert out.out == ""
    assert not res.exists()                  # nothing written, nothing started


def test_dry_run_refuses_the_same_way(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(nested("grid.lr", [])))
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grid: axis 'lr' must be a non-empty list" in err[0]


def test_relative_results_inside_a_ray_job_are_refused(tmp_path, capsys, monkeypatch):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(BASE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what `ray job submit` sets for its entrypoint
    assert main(["run", str(path), "--results", "results"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--results: results: inside a Ray job" in err[0] and "s3://" in err[0]
    assert not (tmp_path / "results").exists()
