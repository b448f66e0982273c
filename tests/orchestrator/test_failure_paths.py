"""Every failure path of a sweep, executed: the row (or exit code) each one must produce.

- a trial process that dies on every attempt: the driver writes its `failed` row;
- a metric that comes back NaN without raising: a `diverged` row, not retried;
- a metric named like a config key: a `failed` row that says which key;
- Ctrl-C (SIGINT to the driver): exit 130, the resume hint, and the next run resumes;
- a finished trial's files are never rewritten by a later run (same command, --retry-failed, a
  grown grid): compared byte for byte, and by inode (a rewrite with equal bytes is a new file).
(A results location that fills up or turns read-only mid-sweep: tests/reliability/test_storage.py.)
"""
from __future__ import annotations

import hashlib
import signal
from collections import Counter
from pathlib import Path

import pytest
import yaml

from orchestrator.results.dataset import StudyStore
from tests.conftest import wait_until
from tests.processes import kill_family, overnight_subprocess, ray_env, start_overnight


def markers(folder: Path, kind: str) -> Counter:
    return Counter(p.name.split(".")[0] for p in folder.glob(f"*.{kind}")) if folder.exists() else Counter()


def study(tmp_path: Path, name: str, workload: str, grid: dict, **top) -> Path:
    doc = {"name": name, "workload": workload, "metric": "loss", "mode": "min", "max_failures": 1,
           "fixed": {"marker_dir": str(tmp_path / "markers")}, "grid": grid, **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.usefixtures("ray_local")
def test_a_trial_process_that_dies_on_every_attempt_gets_a_failed_row_from_the_driver(tmp_path, cli):
    path = study(tmp_path, "crashing", "tests.probe_workloads:AlwaysCrash", {"lr": [0.1]}, max_failures=0)
    res = tmp_path / "res"
    code, _, err = cli("run", path, "--results", res, "--no-report")
    assert code == 1, err
    store = StudyStore(str(res / "crashing" / "fast"))
    rows = store.rows()
    assert len(rows) == 1, err
    row = rows.iloc[0]
    assert row["status"] == "failed" and str(row["error"]).strip(), row.to_dict()
    # Ray restarted the dead process max_failures + 2 times, then the driver wrote the row
    starts = markers(tmp_path / "markers", "start")[row["trial_id"]]
    assert starts == 3 and row["attempts"] == starts, (starts, row["attempts"])
    assert f"failed {row['trial_id']}" in err and "1 failed" in err


@pytest.mark.usefixtures("ray_local")
def test_a_nan_metric_returned_without_raising_gives_a_diverged_row(tmp_path, cli):
    path = study(tmp_path, "nanny", "tests.probe_workloads:NanMetric", {"lr": [0.1, 0.2]})
    res = tmp_path / "res"
    code, _, err = cli("run", path, "--results", res, "--no-report")
    assert code == 0, err            # diverged is a result, not a failure of the sweep
    rows = StudyStore(str(res / "nanny" / "fast")).rows()
    assert len(rows) == 2 and set(rows["status"]) == {"diverged"}, rows
    assert rows["error"].str.contains("loss is nan").all(), rows["error"].tolist()
    assert (rows["attempts"] == 1).all()                                   # not retried
    assert set(markers(tmp_path / "markers", "start").values()) == {1}
    assert "2 diverged" in err


@pytest.mark.usefixtures("ray_local")
def test_a_metric_that_repeats_a_config_key_fails_clearly(tmp_path, cli):
    path = study(tmp_path, "clash", "tests.probe_workloads:ConfigClash", {"lr": [0.1]})
    res = tmp_path / "res"
    code, _, err = cli("run", path, "--results", res, "--no-report")
    assert code == 1, err
    rows = StudyStore(str(res / "clash" / "fast")).rows()
    assert len(rows) == 1 and rows.iloc[0]["status"] == "failed"
    error = rows.iloc[0]["error"]
    assert "metrics that repeat config keys" in error and "'lr'" in error, error
    assert rows.iloc[0]["lr"] == 0.1                  # the config value, not the metric's 99.0
    assert "repeat config keys" in err               # and the driver says so


def test_ctrl_c_exits_130_with_the_resume_hint_and_the_next_run_resumes(tmp_path):
    path = study(tmp_path, "ctrlc", "synthetic", {"lr": [0.1, 0.2, 0.3, 0.4], "seed": [0, 1]},
                 fixed={"steps": 6, "work_units": 1, "sleep_s": 0.3, "marker_dir": str(tmp_path / "markers")})
    res = tmp_path / "res"
    store = StudyStore(str(res / "ctrlc" / "fast"))
    cmd = ["run", str(path), "--results", str(res), "--no-report"]
    env = ray_env()
    log = tmp_path / "run1.log"
    driver = start_overnight(*cmd, log=log, env=env)
    try:
        # a row, and a trial under way that has none: the sweep is in the middle
        wait_until("a row and a running trial",
                   lambda: store.exists("trials") and store.finished_ids()
                   and set(markers(tmp_path / "markers", "start")) - store.finished_ids(), driver)
        assert driver.poll() is None, log.read_text()[-3000:]
        driver.send_signal(signal.SIGINT)
        assert driver.wait(120) == 130, log.read_text()[-3000:]
    finally:
        kill_family((), driver.pid)   # whatever of its Ray is left
    text = log.read_text()
    assert "interrupted: run the same command again to resume" in text, text[-3000:]
    assert "Traceback" not in text
    done = store.finished_ids()
    starts = markers(tmp_path / "markers", "start")
    assert 0 < len(done) < 8
    assert set(store.statuses().values()) == {"completed"}     # an interrupted trial is not "failed"

    again = overnight_subprocess(*cmd, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(done)} already finished, {8 - len(done)} to run" in again.stderr
    rows = store.rows()
    assert len(rows) == 8 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    after = markers(tmp_path / "markers", "start")
    assert all(after[t] == starts[t] for t in done), "a trial finished before Ctrl-C ran again"


def files_of(root: Path, trial_ids: set[str]) -> dict[str, tuple[str, int, int]]:
    """Every file of these trials (row, history, artifacts): content hash, inode, mtime."""
    out = {}
    for p in sorted(root.rglob("*.parquet")):
        if p.stem in trial_ids and not p.name.startswith("."):
            st = p.stat()
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_ino, st.st_mtime_ns)
    return out


@pytest.mark.usefixtures("ray_local")
def test_a_finished_trials_files_are_never_rewritten_by_a_later_run(tmp_path, cli):
    fixed = {"steps": 2, "work_units": 1, "marker_dir": str(tmp_path / "markers")}
    path = study(tmp_path, "frozen", "tests.probe_workloads:StoreProbe",
                 {"lr": [0.1, 0.2], "fail": ["none", "nan", "raise"]}, max_failures=0, fixed=fixed)
    res = tmp_path / "res"
    root = res / "frozen" / "fast"
    store = StudyStore(str(root))
    code, _, err = cli("run", path, "--results", res)
    assert code == 1, err
    assert "add --retry-failed to run them again" in err   # the way out is in the summary
    statuses = store.statuses()
    assert sorted(Counter(statuses.values()).items()) == [("completed", 2), ("diverged", 2), ("failed", 2)]
    finished = {t for t, s in statuses.items() if s in ("completed", "diverged")}
    before = files_of(root, finished)
    kinds = {k.split("/")[0] for k in before}
    assert kinds == {"trials", "history", "artifacts"}, before   # rows, histories, artifact tables

    def unchanged() -> None:
        assert files_of(root, finished) == before

    # the same command: nothing runs
    code, _, err = cli("run", path, "--results", res)
    assert code == 1 and "6 already finished, 0 to run" in err
    unchanged()
    # --retry-failed: only the failed ones run (and fail) again
    code, _, err = cli("run", path, "--results", res, "--retry-failed")
    assert code == 1 and "2 to run" in err
    unchanged()
    # a grown grid: only the new trials run
    grown = study(tmp_path, "frozen", "tests.probe_workloads:StoreProbe",
                  {"lr": [0.1, 0.2, 0.3], "fail": ["none", "nan", "raise"]}, max_failures=0, fixed=fixed)
    code, _, err = cli("run", grown, "--results", res)
    assert "6 already finished, 3 to run" in err, err
    unchanged()
    starts = markers(tmp_path / "markers", "start")
    assert all(starts[t] == 1 for t in finished)
