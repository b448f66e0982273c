"""Plain functions as workloads and the Python API, each from a fresh interpreter in a
user's own repository: `workload: mypkg.train:run`, `import orchestrator as overnight`."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

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
        rows = overnight.run("study.yaml", scale="smoke", results="res", num_cpus=2, verbose=False)
        again = overnight.run("study.yaml", scale="smoke", results="res", num_cpus=2, verbose=False)
        loaded = overnight.load("res")
        text = overnight.report_markdown("res/mine/smoke")
        print(json.dumps({"rows": rows[["lr", "steps", "loss", "status"]].to_dict("records"),
                          "again": len(again), "loaded": len(loaded), "report": text.splitlines()[0]}))
    """)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(out["rows"]) == 4 and {r["status"] for r in out["rows"]} == {"completed"}
    for r in out["rows"]:
        assert r["loss"] == pytest.approx((1 - r["lr"]) ** r["steps"])
    assert out["again"] == 4 and out["loaded"] == 4 and out["report"] == "# mine — smoke scale"
    # the second call found every row and ran nothing again
    calls = sorted(f.name for f in (user_repo / "calls").iterdir())
    assert len(calls) == 4 and all(c.endswith(".1") for c in calls)


def test_api_exit_statuses_are_exceptions(user_repo):
    p = python(user_repo, """
        import json, orchestrator as overnight
        out = {}
        try:
            overnight.run("study.yaml", scale="smoke", results="res", lrr=0.3)
        except overnight.StudyError as e:
            out["study_error"] = str(e)
        try:
            overnight.run("study.yaml", scale="smoke", results="res", num_cpus=2, verbose=False, behaviour="fail",
                          lr=[0.1], steps=[2])
        except overnight.TrialsFailed as e:
            out["failed"] = e.rows[["status", "error"]].to_dict("records")
        print(json.dumps(out))
    """)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["study_error"].startswith("--set: lrr: unknown parameter (did you mean `lr`?)")
    assert out["failed"][0]["status"] == "failed" and "user code failed" in out["failed"][0]["error"]


def test_undecorated_function_and_a_study_as_a_dict(user_repo):
    p = python(user_repo, """
        import json, orchestrator as overnight
        rows = overnight.run({"name": "plain", "workload": "mypkg.train:plain", "grid": {"x": [1, 2.5]}},
                             scale="smoke", results="res", num_cpus=2, verbose=False)
        print(json.dumps(sorted(json.loads(m)["score"] for m in rows["extra_metrics"])))
    """)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [2.0, 5.0]


def test_function_workload_through_the_cli(user_repo):
    env = ray_env(PYTHONPATH="")
    p = overnight_subprocess("run", "study.yaml", "--scale", "smoke", "--results", "res", "--num-cpus", "2",
                             cwd=user_repo, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "4 completed, 0 failed" in p.stderr
    p = overnight_subprocess("describe", "mypkg.train:run", cwd=user_repo, env=env)
    assert p.returncode == 0 and "lr: float = 0.1" in p.stdout and "loss: float | None" in p.stdout, p.stderr
