"""Plain functions as workloads and the Python API, each from a fresh interpreter in a
user's own repository: `workload: mypkg.train:run`, `import orchestrator as overnight`."""
from __future__ import annotations

import doctest
import importlib
import json
import re
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT
from tests.processes import overnight_subprocess, ray_env

TRAIN = '''
"""A user's own training code: a plain function, declared with @overnight.workload."""
import math
from pathlib import Path
from typing import Literal

import orchestrator as overnight


class Params(overnight.Params):
    lr: float = overnight.param(0.1, "step size", gt=0)
    steps: int = overnight.param(4, "steps", ge=1)
    behaviour: Literal["ok", "fail"] = overnight.param("ok", "fail raises")
    calls_dir: str = overnight.knob("", "a file per call, for the test")


class Metrics(overnight.Metrics):
    loss: float | None = overnight.metric("final loss")


@overnight.workload(params=Params, metrics=Metrics, version="1", name="mypkg.train")
def run(config: Params, ctx):
    if config.calls_dir:
        Path(config.calls_dir).mkdir(exist_ok=True)
        (Path(config.calls_dir) / f"{ctx.trial_id}.{ctx.attempt}").touch()
    if config.behaviour == "fail":
        raise ValueError("user code failed")
    loss = 1.0
    for step in range(config.steps):
        loss *= 1 - config.lr
        ctx.report(step, loss=loss)
    return {"loss": loss}


def plain(config: overnight.AnyParams, ctx):
    """Undecorated: any key accepted (as attributes of an AnyParams), metrics kept in extra_metrics."""
    return {"score": getattr(config, "x", 0) * 2}
'''


@pytest.fixture
def user_repo(tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "train.py").write_text(TRAIN)
    (tmp_path / "study.yaml").write_text(textwrap.dedent(f"""\
        name: mine
        workload: mypkg.train:run
        metric: loss
        mode: min
        max_failures: 0
        fixed: {{calls_dir: {tmp_path / 'calls'}}}
        grid: {{lr: [0.1, 0.2], steps: [2, 4]}}
        """))
    return tmp_path


def python(repo, code: str) -> subprocess.CompletedProcess:
    env = ray_env(PYTHONPATH="")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=repo, capture_output=True, text=True,
                          env=env, timeout=300)


def test_api_runs_a_function_workload_from_the_users_repository(user_repo):
    p = python(user_repo, """
        import json, orchestrator as overnight
        result = overnight.run("study.yaml", scale="smoke", results="res", num_cpus=2, verbose=False)
        again = overnight.run("study.yaml", scale="smoke", results="res", num_cpus=2, verbose=False)
        plain = overnight.run({"name": "plain", "workload": "mypkg.train:plain", "grid": {"x": [1, 2.5]}},
                              scale="smoke", results="res", num_cpus=2, verbose=False)
        one = overnight.load("res/mine/smoke")
        both = overnight.load("res")
        try:
            both.best()
        except ValueError as e:
            best_error = str(e)
        text = overnight.report_markdown("res/mine/smoke")
        print(json.dumps({"rows": result.rows[["lr", "steps", "loss", "status"]].to_dict("records"),
                          "again": len(again), "same": again.rows.sort_values("trial_id").reset_index(drop=True)
                                                        .equals(one.rows.sort_values("trial_id").reset_index(drop=True)),
                          "plain": sorted(json.loads(m)["score"] for m in plain.rows["extra_metrics"]),
                          "both": [repr(both), len(both), [repr(s) for s in both.studies], both.location],
                          "best_error": best_error, "report": text.splitlines()[0],
                          "result_report": result.report().splitlines()[0]}))
    """)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(out["rows"]) == 4 and {r["status"] for r in out["rows"]} == {"completed"}
    for r in out["rows"]:
        assert r["loss"] == pytest.approx((1 - r["lr"]) ** r["steps"])
    assert out["again"] == 4 and out["same"] is True
    # an undecorated function keeps what it returns in extra_metrics; a study given as a dict
    assert out["plain"] == [2.0, 5.0]
    # a folder of two studies loads as one combined result, one result per study in .studies
    mine = "StudyResult(mine/smoke: 4 trials, 4 completed, 0 failed, 0 diverged, 0 pending)"
    plain = "StudyResult(plain/smoke: 2 trials, 2 completed, 0 failed, 0 diverged, 0 pending)"
    assert out["both"] == ["StudyResult(mine/smoke, plain/smoke: 6 trials, 6 completed, 0 failed, 0 diverged, "
                           "0 pending)", 6, [mine, plain], "res"]
    assert out["best_error"] == "give metric=: the studies' metric is not one value (found: None, loss)"
    assert out["report"] == out["result_report"] == "# mine — smoke scale"
    # the second call found every row and ran nothing again
    calls = sorted(f.name for f in (user_repo / "calls").iterdir())
    assert len(calls) == 4 and all(c.endswith(".1") for c in calls)


def test_failed_trials_are_in_the_result_and_raise_only_when_asked(user_repo):
    p = python(user_repo, """
        import json, orchestrator as overnight
        out = {}
        try:
            overnight.run("study.yaml", scale="smoke", results="res", set={"lrr": 0.3})
        except overnight.StudyError as e:
            out["study_error"] = str(e)
        try:
            overnight.run("study.yaml", scale="smoke", results="res", lr=0.3)
        except TypeError as e:
            out["type_error"] = str(e)
        grid = {"grid.behaviour": ["ok", "fail"], "lr": [0.1, 0.5], "steps": 2}
        result = overnight.run("study.yaml", scale="smoke", results="res", num_cpus=2, verbose=False, set=grid)
        best, worst = result.best(), result.best(mode="max")
        out["result"] = {
            "type": type(result).__name__, "repr": repr(result), "len": len(result),
            "rows": sorted(map(tuple, result.rows[["behaviour", "lr", "status"]].values.tolist())),
            "failed": sorted(map(tuple, result.failed[["lr", "status", "error"]].values.tolist())),
            "errors": sorted(e.split(" [")[0] for e in result.errors.values()),
            "error_ids": sorted(result.errors) == sorted(result.failed["trial_id"]),
            "best": [best["lr"], best["loss"], best["behaviour"]], "worst": [worst["lr"], worst["loss"]],
            "history": [sorted(map(int, steps)) for _, steps in result.history().groupby("trial_id")["step"]],
        }
        try:
            overnight.run("study.yaml", scale="smoke", results="res", verbose=False, set=grid, raise_on_failure=True)
        except overnight.TrialsFailed as e:
            out["raised"] = [str(e), repr(e.result), len(e.rows), len(e.result.failed)]
        print(json.dumps(out))
    """)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["study_error"].startswith("--set: lrr: unknown parameter (did you mean `lr`?)")
    assert out["type_error"] == "run() got an unexpected keyword argument 'lr'"
    counts = "4 trials, 2 completed, 2 failed, 0 diverged, 0 pending"
    r = out["result"]
    assert r["type"] == "StudyResult" and r["repr"] == f"StudyResult(mine/smoke: {counts})" and r["len"] == 4
    assert r["rows"] == [["fail", 0.1, "failed"], ["fail", 0.5, "failed"],
                         ["ok", 0.1, "completed"], ["ok", 0.5, "completed"]]
    assert [f[:2] for f in r["failed"]] == [[0.1, "failed"], [0.5, "failed"]]
    assert all("ValueError: user code failed" in f[2] for f in r["failed"])
    assert r["errors"] == ["ValueError: user code failed"] * 2 and r["error_ids"] is True
    # loss = (1 - lr) ** steps: lowest at lr 0.5 (0.25), highest at lr 0.1 (0.81); failed rows have none
    assert r["best"] == [0.5, pytest.approx(0.25), "ok"] and r["worst"] == [0.1, pytest.approx(0.81)]
    # the completed trials reported steps 0 and 1; the failing ones raised before reporting
    assert r["history"] == [[0, 1], [0, 1]]
    # asked to raise: the same result, carried by the exception (the second call runs nothing)
    assert out["raised"] == ["mine/smoke: 2 failed, 0 not finished", f"StudyResult(mine/smoke: {counts})", 4, 2]


def test_function_workload_through_the_cli(user_repo):
    env = ray_env(PYTHONPATH="")
    p = overnight_subprocess("run", "study.yaml", "--scale", "smoke", "--results", "res", "--num-cpus", "2",
                             cwd=user_repo, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "4 completed, 0 failed" in p.stderr
    p = overnight_subprocess("describe", "mypkg.train:run", cwd=user_repo, env=env)
    assert p.returncode == 0 and "lr: float = 0.1" in p.stdout and "loss: float | None" in p.stdout, p.stderr


# ---- the package's public names ------------------------------------------------------------------
HEAVY = ("ray", "torch", "pandas", "pyarrow")
# the names a workload's own code imports (README "Writing a workload"); beside their own examples,
# the workloads in workloads/ and the contract tests (tests/orchestrator/test_contract.py) use them
WORKLOAD_FACING = {"workload", "Diverged", "LocalContext", "Params", "Metrics", "param", "knob", "metric",
                   "sha256_file", "BaseContext", "DataMissing", "Grouped", "Preflight", "TrialContext", "Workload",
                   "check_finite", "params_of", "KNOBS", "NotBitIdentical", "AnyParams", "ParamError", "is_knob",
                   "validate"}


def test_import_orchestrator_stays_light():
    """Ray workers and the CLI import the package: its public names are there, typed, and none of
    the heavy libraries is imported until a function needs it."""
    code = ("import json, sys, orchestrator as o; "
            "print(json.dumps({'heavy': [m for m in %r if m in sys.modules], 'all': o.__all__, "
            "'missing': [n for n in o.__all__ if not hasattr(o, n)], 'run': o.run.__module__}))" % (HEAVY,))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["heavy"] == [] and out["missing"] == [] and out["run"] == "orchestrator.api"
    assert {"run", "load", "report_markdown", "describe", "StudyResult", "TrialsFailed", "StudyError"} | \
        WORKLOAD_FACING <= set(out["all"])
    init = (ROOT / "orchestrator" / "__init__.py").read_text()
    assert "__getattr__" not in init


def test_run_stays_the_function_when_the_run_room_is_imported():
    """`orchestrator.run` is both the API function and the room orchestrator/run/: importing the
    room's modules must not rebind the package's name to the room."""
    code = ("import orchestrator as o; from orchestrator.run import execute, prepare, launch; "
            "import orchestrator.api; print(callable(o.run), o.run is orchestrator.api.run)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["True", "True"]


# public names that are plain values (a tuple) and so carry no docstring of their own, with the
# module that defines them: such a constant is covered when an example in its module names it
CONSTANTS = {"KNOBS": "orchestrator.study.determinism"}


def examples_naming(module_name: str, name: str) -> list[str]:
    """The doctests (by name) of a module, its own docstring's included, whose examples name ``name``."""
    module = importlib.import_module(module_name)
    return [t.name for t in doctest.DocTestFinder().find(module)
            if any(re.search(rf"\b{name}\b", e.source) for e in t.examples)]


def api_objects() -> dict[str, object]:
    """Every public name of the package (the constants aside: CONSTANTS), StudyResult's and
    TrialsFailed's members included, by the name their doctest runs under."""
    import orchestrator as overnight
    from orchestrator.report.result import StudyResult

    names: dict[str, object] = {}
    for name in sorted(set(overnight.__all__) - set(CONSTANTS) - {"__version__"}):
        obj = getattr(overnight, name)
        names[f"{obj.__module__}.{obj.__qualname__}"] = obj
    for cls in (StudyResult, overnight.TrialsFailed):
        for member, obj in vars(cls).items():
            if not member.startswith("_") or member in ("__len__", "__repr__"):
                names[f"{cls.__module__}.{cls.__qualname__}.{member}"] = obj
    return names


def test_every_api_name_has_an_example():
    objects = api_objects()
    assert "orchestrator.report.result.StudyResult.best" in objects and "orchestrator.errors.UserError" in objects
    without = []
    for name, obj in objects.items():
        doc = (obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)).__doc__ or ""
        if ">>> " not in doc:
            without.append(name)
    assert not without, f"public names without an example in their docstring: {without}"
    import orchestrator as overnight
    for name, module in CONSTANTS.items():
        assert getattr(importlib.import_module(module), name) is getattr(overnight, name)
        assert examples_naming(module, name), f"{name}: no example in {module} names it"


DOCTESTS = """
    import doctest, json
    import orchestrator.api, orchestrator.errors, orchestrator.report.result
    import orchestrator.results.provenance, orchestrator.study.contract, orchestrator.study.determinism
    import orchestrator.study.params
    from orchestrator.run import launch

    finder = doctest.DocTestFinder()
    modules = (orchestrator.api, orchestrator.report.result, orchestrator.errors, launch,
               orchestrator.study.contract, orchestrator.study.params, orchestrator.study.determinism,
               orchestrator.results.provenance)
    tests = [t for m in modules for t in finder.find(m) if t.examples]
    # run's example runs the tiny study the other examples read
    tests.sort(key=lambda t: t.name != "orchestrator.api.run")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    print(json.dumps({"names": [t.name for t in tests], "failed": runner.failures, "tried": runner.tries}))
"""


def test_the_api_examples_run(tmp_path):
    """Every example in the package's docstrings (the API's and the workload-facing names'), run as
    a doctest from a fresh interpreter in an empty folder: run's example runs a 4-trial study of the
    synthetic workload into ./results."""
    env = ray_env()
    env.pop("OVERNIGHT_RESULTS", None)
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(DOCTESTS)], cwd=tmp_path, capture_output=True,
                       text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["failed"] == 0, p.stdout[-6000:]
    assert set(api_objects()) <= set(out["names"])
    for name, module in CONSTANTS.items():
        assert set(examples_naming(module, name)) <= set(out["names"])
    assert out["tried"] >= 2 * len(out["names"])
    assert (tmp_path / "results" / "demo" / "smoke" / "report.md").is_file()
