"""kill -9 of the driver in the middle of a sweep, then the same command again: every trial exactly
once in the dataset, no finished trial executed twice, in-flight trials resume from checkpoints."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from orchestrator.store import StudyStore
from tests.conftest import ROOT


def _overnight(args, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("overnight")
    # own session: the driver and the Ray processes it starts form one group we can clean up
    return subprocess.Popen([str(exe), *map(str, args)], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_sigkill_driver_then_rerun(tmp_path):
    marker_dir = tmp_path / "markers"
    study = {
        "name": "killed", "workload": "synthetic", "metric": "loss", "mode": "min",
        # 8 steps x 0.4 s: long enough that a trial is mid-way when the driver dies
        "fixed": {"steps": 8, "work_units": 1, "sleep_s": 0.4, "marker_dir": str(marker_dir)},
        "grid": {"lr": [0.1, 0.2, 0.3, 0.4], "seed": [0, 1]},
    }
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(study))
    res = tmp_path / "res"
    store = StudyStore(str(res / "killed" / "fast"))
    args = ["run", path, "--results", res, "--no-report"]

    first = _overnight(args, tmp_path / "run1.log")
    try:
        deadline = time.time() + 120
        while len(store.finished_ids()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert len(store.finished_ids()) >= 2, (tmp_path / "run1.log").read_text()
        time.sleep(0.6)  # the next trials are now mid-way
        in_flight = {t: store.load_checkpoint(t) for t in store.in_flight()}
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        done_at_kill = store.finished_ids()
        assert len(done_at_kill) < 8
        assert any(s and s["state"]["step"] > 0 for s in in_flight.values())

        second = subprocess.run([str(Path(sys.executable).with_name("overnight")), *map(str, args)], cwd=ROOT,
                                capture_output=True, text=True, timeout=240,
                                env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        assert second.returncode == 0, second.stderr
    finally:
        _kill_group(first.pid)  # Ray helpers the killed driver left behind

    rows = store.rows()
    assert len(rows) == 8 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    ends = Counter(p.name.split(".")[0] for p in marker_dir.glob("*.end"))
    assert set(ends) == set(rows["trial_id"]) and set(ends.values()) == {1}, ends
    # a trial that had finished before the kill was never started again
    starts = Counter(p.name.split(".")[0] for p in marker_dir.glob("*.start"))
    assert all(starts[t] == 1 for t in done_at_kill)
    # at least one trial interrupted by the kill continued from its checkpoint, not from step 0
    resumed = rows[rows["resumed_from"] > 0]
    assert len(resumed) >= 1, rows[["trial_id", "resumed_from", "attempts"]]
    assert (resumed["attempts"] >= 2).all()
    assert (rows["final_step"] == 8).all()
