"""Generated wrong-parameter cases for every registered workload: unknown keys (in fixed, grid,
zip, variants and --set), wrong types and out-of-range values. Each must be one line on stderr,
exit code 2, naming where the mistake was written, before anything runs or is written."""
from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from orchestrator.run import registry
from orchestrator.study.params import declared, is_knob

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = sorted(registry.registered())


def _model(name):
    params, _, _ = declared(registry.load(name))
    assert params is not None, f"workload {name} declares no Params"
    return params


def _typo(key: str) -> str:
    return key[:-2] + key[-1] + key[-2] if len(key) > 3 else key + "x"


def _numeric_with_bound(model):
    """(name, a value below its lower bound) of the first numeric parameter with one."""
    for name, f in model.model_fields.items():
        for m in f.metadata:
            for attr in ("ge", "gt"):
                bound = getattr(m, attr, None)
                if bound is not None and isinstance(bound, (int, float)) and not is_knob(model, name):
                    value = bound - 1 if attr == "ge" else bound
                    ann = f.annotation
                    if ann is int or (typing.get_origin(ann) is None and ann is int):
                        return name, int(value)
                    return name, float(value)
    return None


def _numeric(model):
    for name, f in model.model_fields.items():
        if f.annotation in (int, float) and not is_knob(model, name):
            return name
    return None


def cases():
    out = []
    for w in WORKLOADS:
        model = _model(w)
        first = next(n for n in model.model_fields if not is_knob(model, n))
        typo = _typo(first)
        out.append((w, "fixed", {"fixed": {typo: 1}}, [], f"fixed.{typo}", "unknown parameter"))
        out.append((w, "grid", {"grid": {typo: [1, 2]}}, [], f"grid.{typo}", "unknown parameter"))
        out.append((w, "variants", {"variants": [{"fixed": {}}, {"grid": {typo: [1]}}]}, [],
                    f"variants.1.grid.{typo}", "unknown parameter"))
        out.append((w, "--set", {}, [f"{typo}=3"], f"--set: {typo}", "unknown parameter"))
        num = _numeric(model)
        if num:
            out.append((w, "wrong type", {"grid": {num: [model.model_fields[num].default, "lots"]}}, [],
                        f"grid.{num}", "'lots'"))
        bound = _numeric_with_bound(model)
        if bound:
            name, bad = bound
            out.append((w, "out of range", {"zip": {"pair": [{name: bad}]}}, [], f"zip.pair.{name}", repr(bad)))
    return out


CASES = cases()


def test_enough_cases_over_every_workload():
    assert len(CASES) >= 30
    assert {c[0] for c in CASES} == set(WORKLOADS)
    assert {"fixed", "grid", "variants", "--set", "wrong type", "out of range"} <= {c[1] for c in CASES}


@pytest.mark.parametrize("workload,kind,doc,sets,where,what", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_wrong_parameter_is_one_line_exit_2(tmp_path, cli, workload, kind, doc, sets, where, what):
    study = {"name": "bad", "workload": workload, **doc}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    results = tmp_path / "results"
    code, out, err = cli("run", path, "--scale", "smoke", "--results", results, *[x for s in sets for x in ("--set", s)])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("overnight: error: "), err
    assert where in lines[0] and what in lines[0], lines[0]
    if "unknown" in what:
        assert "did you mean `" in lines[0], lines[0]
    assert not results.exists(), "nothing may be written for bad input"


def test_real_study_with_a_typo_in_set_as_a_subprocess():
    from tests.processes import overnight_subprocess

    p = overnight_subprocess("run", "hydra_classification", "--set", "bitz=4", "--dry-run")
    assert p.returncode == 2
    assert p.stderr.strip() == ("overnight: error: --set: bitz: unknown parameter (did you mean `bits`?) of workload "
                                "quantcorr.classification (see `overnight describe quantcorr.classification`)"), p.stderr
