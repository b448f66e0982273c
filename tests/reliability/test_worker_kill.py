"""A trial's worker process is SIGKILLed mid-trial (OOM killer, preempted process): Ray retries the
trial and it continues from its last checkpoint; the other trials are untouched."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.results.dataset import StudyStore

pytestmark = pytest.mark.usefixtures("ray_local")


def test_worker_killed_mid_trial_resumes_from_checkpoint(tmp_path, capsys):
    steps = 8
    markers = tmp_path / "markers"
    doc = {"name": "workerkill", "workload": "synthetic", "metric": "loss", "mode": "min", "max_failures": 1,
           "fixed": {"steps": steps, "work_units": 1, "sleep_s": 0.3, "placement": True, "marker_dir": str(markers)},
           "grid": {"lr": [0.1, 0.2, 0.3], "seed": [0]}}
    path = tmp_path / "workerkill.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = tmp_path / "res"
    store = StudyStore(str(res / "workerkill" / "fast"))
    result: dict[str, int] = {}
    driver = threading.Thread(target=lambda: result.setdefault("code", main(
        ["run", str(path), "--results", str(res), "--no-report"])))
    driver.start()

    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and driver.is_alive():
        for marker in markers.glob("*.start") if markers.exists() else []:
            text = marker.read_text()
            tid = marker.name.split(".")[0]
            ck = store.load_checkpoint(tid) if text else None
            if ck and 2 <= ck["state"]["step"] < steps - 2:
                victim = (tid, json.loads(text)["pid"], ck["state"]["step"])
                break
        time.sleep(0.05)
    assert victim, "no trial reached step 2"
    tid, pid, step = victim
    os.kill(pid, signal.SIGKILL)
    driver.join(240)
    assert not driver.is_alive() and result["code"] == 0, capsys.readouterr().err[-3000:]

    rows = store.rows().set_index("trial_id")
    assert len(rows) == 3 and set(rows["status"]) == {"completed"} and (rows["final_step"] == steps).all()
    killed = rows.loc[tid]
    assert killed["attempts"] == 2
    assert killed["resumed_from"] >= step            # continued, not restarted
    assert killed["pid"] != pid                      # in a new worker process
    others = rows.drop(index=tid)
    assert (others["attempts"] == 1).all() and (others["resumed_from"] == 0).all()
    # two executions of the killed trial started, one finished; the others ran once
    starts = Counter(p.name.split(".")[0] for p in markers.glob("*.start"))
    ends = Counter(p.name.split(".")[0] for p in markers.glob("*.end"))
    assert starts[tid] == 2 and ends[tid] == 1
    assert all(starts[t] == 1 and ends[t] == 1 for t in others.index)
    # the per-step history is whole: the steps before the kill came back with the checkpoint
    hist = store.history()
    assert sorted(hist[hist["trial_id"] == tid]["step"]) == list(range(steps))
