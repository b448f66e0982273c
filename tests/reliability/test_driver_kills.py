"""20 SIGKILLs of the driver at random moments of one sweep (during start-up, while trials run,
while rows are written, while the report is made), each followed by the same command: in the end
every trial is in the dataset exactly once, and no trial that had its row ever started again.

Long (every driver start brings up a Ray, ~5 s; about 8 minutes in all): marked `reliability`,
left out of `make test` and run by `make test-reliability` (and so by CI):
    .venv/bin/python -m pytest tests/reliability -m reliability
OVERNIGHT_KILL_SEED=<n> replays a sequence of kill moments.
"""
from __future__ import annotations

import os
import random
import time
from collections import Counter

import pandas as pd
import pytest
import yaml

from orchestrator.results.dataset import StudyStore
from tests.processes import alive, descendants, kill_driver, overnight_subprocess, ray_env, start_overnight

KILLS = 20


@pytest.mark.reliability
def test_twenty_driver_sigkills_then_the_same_command(tmp_path):
    seed = int(os.environ.get("OVERNIGHT_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    print(f"OVERNIGHT_KILL_SEED={seed}")
    markers = tmp_path / "markers"
    doc = {"name": "killed20", "workload": "synthetic", "metric": "loss", "mode": "min", "max_failures": 1,
           "fixed": {"steps": 4, "work_units": 1, "sleep_s": 0.25, "marker_dir": str(markers)},
           "grid": {"lr": [round(0.05 * i, 2) for i in range(1, 11)], "seed": list(range(8))}}
    path = tmp_path / "killed20.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = tmp_path / "res"
    store = StudyStore(str(res / "killed20" / "smoke"))
    cmd = ["run", str(path), "--scale", "smoke", "--results", str(res)]
    env = ray_env()

    def starts() -> Counter:
        return Counter(p.name.split(".")[0] for p in markers.glob("*.start")) if markers.exists() else Counter()

    snapshots: list[tuple[set[str], Counter]] = []
    log = []
    # Kill moments are drawn from [0.3 s, time to the first row + 8 s] so that they cover start-up
    # (Ray coming up), trials running and rows being written on a fast or a loaded machine alike.
    # The first run calibrates that span. It, and every third run after it, waits for an event
    # instead: a row of its own, then dies within 2 s; so the sweep progresses however slow the
    # machine is.
    first_row_s = None
    for i in range(KILLS):
        before = len(store.finished_ids()) if store.exists("trials") else 0
        proc = start_overnight(*cmd, stderr=(tmp_path / f"run{i}.log").open("w"), env=env)
        t_start = time.monotonic()
        wait_for_row = first_row_s is None or i % 3 == 0
        delay = 600.0 if wait_for_row else rng.uniform(0.3, first_row_s + 8.0)
        family: set[int] = set()
        while time.monotonic() - t_start < delay and proc.poll() is None:
            family.update(descendants(proc.pid))   # Ray daemons and workers, to clean up after the kill
            if wait_for_row and len(store.finished_ids()) > before:
                first_row_s = first_row_s or time.monotonic() - t_start
                delay = time.monotonic() - t_start + rng.uniform(0.0, 2.0)
                wait_for_row = False
            time.sleep(0.1)
        finished_itself = proc.poll() is not None
        killed_at = time.monotonic() - t_start
        # the driver alone: its Ray processes live on a moment, and may still write a row meanwhile
        kill_driver(proc, family, linger=rng.uniform(0.0, 1.0))
        t0 = time.monotonic()
        while any(alive(p) for p in family) and time.monotonic() - t0 < 20:
            time.sleep(0.05)
        done = store.finished_ids() if store.exists("trials") else set()
        snapshots.append((done, starts()))
        log.append(f"kill {i + 1}: after {killed_at:.1f}s, "
                   f"{'exited by itself, ' if finished_itself else ''}finished {before} -> {len(done)}")
    print("\n".join(log))

    final = overnight_subprocess(*cmd, timeout=600, env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    rows = store.rows()
    assert len(rows) == 80 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    assert len(pd.read_parquet(res / "killed20" / "smoke" / "trials")) == 80   # no half-written part file
    assert (rows["final_step"] == 4).all()
    # no trial started again once its row existed
    final_starts = starts()
    for k, (done, counted) in enumerate(snapshots):
        again = [t for t in done if final_starts[t] != counted[t]]
        assert not again, f"after kill {k + 1}: finished trials started again: {again}"
    assert set(final_starts) == set(rows["trial_id"])
    # the kills landed in different phases: some before any trial of that run finished, some after
    progressed = sum(1 for a, b in zip([set()] + [s[0] for s in snapshots], [s[0] for s in snapshots]) if len(b) > len(a))
    assert progressed >= 2, log
