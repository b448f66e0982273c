"""`workload: command`: an external training script run once per trial through Ray,
with its parameters declared in the study, its checkpoint folder kept in the results location and
handed back after a kill, its metrics file read into the row and the history."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.results.dataset import StudyStore
from tests.conftest import ROOT
from tests.processes import kill_family, overnight_subprocess, ray_env, start_overnight

EXAMPLE = ROOT / "examples" / "quadratic" / "study.yaml"


def expected(lr: float, target: float, steps: int) -> tuple[float, float]:
    """(w, loss) after `steps` gradient steps on (w - target)^2 from w = 0."""
    w = target * (1 - (1 - 2 * lr) ** steps)
    return w, (w - target) ** 2


def study(tmp_path, **fixed) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["command"]["cwd"] = str(EXAMPLE.parent)
    doc["fixed"] = {**doc.get("fixed", {}), **fixed}
    doc.pop("scales")  # the fixed values above hold at every scale
    path = tmp_path / "quadratic.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_example_study_rows_history_and_output(tmp_path, ray_local, capsys):
    res = tmp_path / "res"
    assert main(["run", str(EXAMPLE), "--scale", "smoke", "--results", str(res), "--no-report"]) == 0
    st = StudyStore(str(res / "quadratic" / "smoke"))
    rows = st.rows()
    assert len(rows) == 6 and set(rows["status"]) == {"completed"}
    for r in rows.itertuples():
        w, loss = expected(r.lr, r.target, 5)
        assert r.w == pytest.approx(w, rel=1e-9) and r.loss == pytest.approx(loss, rel=1e-9, abs=1e-15)
        assert r.resumed_from == 0 and r.steps == 5
    hist = st.history()
    # 5 step records + the final record, each with loss and w; the final one also resumed_from
    assert len(hist) == 6 * (6 * 2 + 1)
    one = hist[(hist.trial_id == rows.trial_id[0]) & (hist.metric == "loss")].sort_values("step")
    assert one["step"].tolist() == [0, 1, 2, 3, 4, 5]
    out = st.artifact("output")
    lines = out[(out.trial_id == rows.trial_id[0]) & (out.stream == "stdout")]["text"].tolist()
    assert lines[0].startswith("step 0 loss") and len(lines) == 5


def test_exit_code_nan_and_timeout(tmp_path, ray_local, capsys):
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["command"]["cwd"] = str(EXAMPLE.parent)
    doc.update(max_failures=0, grid={"lr": [0.1]},
               variants=[{"fixed": {"fail": "crash"}}, {"fixed": {"fail": "nan"}},
                         {"fixed": {"sleep_s": 5.0, "steps": 3}}, {"fixed": {"fail": "none"}}])
    doc["command"]["timeout_s"] = 2
    path = tmp_path / "modes.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = tmp_path / "res"
    assert main(["run", str(path), "--scale", "smoke", "--results", str(res), "--no-report"]) == 1
    rows = StudyStore(str(res / "quadratic" / "smoke")).rows()
    by = {(r.fail, r.sleep_s): r for r in rows.itertuples()}
    crashed = by[("crash", 0.0)]
    assert crashed.status == "failed" and "exited with code 3" in crashed.error and "exploding at step 2" in crashed.error
    assert by[("nan", 0.0)].status == "diverged"
    slow = by[("none", 5.0)]
    assert slow.status == "failed" and "timed out after 2 s" in slow.error
    assert by[("none", 0.0)].status == "completed"


def test_retry_hands_the_checkpoint_back(tmp_path, ray_local, capsys):
    """fail: crash exits half-way on the first attempt; the retry finds the script's own
    checkpoint again and continues from it, and the result equals an uninterrupted run's."""
    path = study(tmp_path, fail="crash", steps=6)
    res = tmp_path / "res"
    assert main(["run", str(path), "--scale", "smoke", "--results", str(res), "--no-report",
                 "--set", "lr=[0.1]", "--set", "target=[2.0]"]) == 0
    row = StudyStore(str(res / "quadratic" / "smoke")).rows().iloc[0]
    assert row["steps"] == 6
    assert row["status"] == "completed" and row["attempts"] == 2
    assert row["resumed_from"] == 3  # steps 0..2 were checkpointed before the crash at step 3
    w, loss = expected(0.1, 2.0, 6)
    assert row["w"] == pytest.approx(w, rel=1e-9)


def test_declared_parameters_are_checked(tmp_path, cli):
    path = study(tmp_path)
    code, _, err = cli("run", path, "--set", "lrr=0.2", "--dry-run")
    assert code == 2 and "--set: lrr: unknown parameter (did you mean `lr`?)" in err
    code, _, err = cli("run", path, "--set", "fail=explode", "--dry-run")
    assert code == 2 and "--set: fail:" in err and "'explode'" in err
    code, _, err = cli("run", path, "--set", "lr=2", "--dry-run")
    assert code == 2 and "less than or equal to 1" in err
    code, out, _ = cli("run", path, "--scale", "smoke", "--dry-run")
    assert code == 0 and out.startswith("6 trials")


def test_worker_killed_mid_trial_resumes_from_the_scripts_checkpoint(tmp_path, ray_local, capsys):
    markers = tmp_path / "markers"
    path = study(tmp_path, steps=10, sleep_s=0.3, marker_dir=str(markers))
    res = tmp_path / "res"
    result = {}
    driver = threading.Thread(target=lambda: result.setdefault("code", main(
        ["run", str(path), "--scale", "fast", "--results", str(res), "--no-report",
         "--set", "lr=[0.1, 0.3]", "--set", "target=[2.0]"])))
    driver.start()
    store = StudyStore(str(res / "quadratic" / "fast"))
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and driver.is_alive():
        for m in markers.glob("*.start") if markers.exists() else []:
            tid = m.name.split(".")[0]
            ck = store.load_checkpoint(tid)
            files = (ck or {}).get("state", {}).get("files", {})
            step = json.loads(files["state.json"])["step"] if "state.json" in files else 0
            if 3 <= step <= 7:
                victim = (tid, json.loads(m.read_text()), step)
                break
        time.sleep(0.05)
    assert victim, "no trial checkpointed step 3"
    tid, proc, step = victim
    os.kill(proc["ppid"], signal.SIGKILL)  # the Ray worker running the trial; the script dies with it
    driver.join(240)
    assert not driver.is_alive() and result["code"] == 0, capsys.readouterr().err[-3000:]
    rows = store.rows().set_index("trial_id")
    killed = rows.loc[tid]
    assert killed["attempts"] == 2 and killed["resumed_from"] >= step
    for r in rows.itertuples():
        assert r.w == pytest.approx(expected(r.lr, r.target, 10)[0], rel=1e-9)
    starts = Counter(p.name.split(".")[0] for p in markers.glob("*.start"))
    assert starts[tid] == 2 and sum(starts.values()) == 3


def test_driver_sigkill_then_resume(tmp_path):
    markers = tmp_path / "markers"
    path = study(tmp_path, steps=8, sleep_s=0.25, marker_dir=str(markers))
    res = tmp_path / "res"
    store = StudyStore(str(res / "quadratic" / "fast"))
    args = ["run", str(path), "--results", str(res), "--no-report"]
    env = ray_env()
    first = start_overnight(*args, env=env)
    try:
        deadline = time.time() + 120
        while len(store.finished_ids()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        done_at_kill = store.finished_ids()
        assert len(done_at_kill) >= 2
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        second = overnight_subprocess(*args, timeout=300, env=env)
        assert second.returncode == 0, second.stderr[-3000:]
    finally:
        kill_family((), first.pid)
    rows = store.rows()
    assert len(rows) == 6 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    starts = Counter(p.name.split(".")[0] for p in markers.glob("*.start"))
    assert all(starts[t] == 1 for t in done_at_kill)  # nothing finished ran again
    for r in rows.itertuples():
        assert r.w == pytest.approx(expected(r.lr, r.target, 8)[0], rel=1e-9)
    assert isinstance(rows, pd.DataFrame)
