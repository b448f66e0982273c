"""kill -9 of the driver in the middle of a sweep, then the same command again: every trial exactly
once in the dataset, no finished trial executed twice, in-flight trials resume from checkpoints.

The kill waits for events, not for time: a row written, and a trial without a row that has
checkpointed step 2 to 5 of 8. Then the driver is SIGKILLed, and right after it the Ray it started
(which would otherwise finish that trial on its own)."""
from __future__ import annotations

from collections import Counter

import yaml

from orchestrator.results.dataset import StudyStore
from tests.processes import kill_when, overnight_subprocess, ray_env, start_overnight


def test_sigkill_driver_then_rerun(tmp_path):
    marker_dir = tmp_path / "markers"
    study = {
        "name": "killed", "workload": "synthetic", "metric": "loss", "mode": "min",
        "fixed": {"steps": 8, "work_units": 1, "sleep_s": 0.3, "marker_dir": str(marker_dir)},
        "grid": {"lr": [0.1, 0.2, 0.3, 0.4], "seed": [0, 1]},
    }
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(study))
    res = tmp_path / "res"
    store = StudyStore(str(res / "killed" / "fast"))
    args = ["run", path, "--results", res, "--no-report"]

    def mid_trial() -> dict[str, int]:
        """Trials without a row whose checkpoint is at step 2 to 5 of 8 (once some row exists)."""
        if not (store.exists("trials") and store.finished_ids()):
            return {}
        steps = {t: (store.load_checkpoint(t) or {}).get("state", {}).get("step", 0) for t in store.in_flight()}
        return {t: s for t, s in steps.items() if 2 <= s <= 5}

    first = start_overnight(*args, log=tmp_path / "run1.log")
    caught = kill_when(first, "a row and a trial mid-way", mid_trial, tmp_path / "run1.log")
    done_at_kill = store.finished_ids()
    starts_at_kill = Counter(p.name.split(".")[0] for p in marker_dir.glob("*.start"))
    caught = {t: s for t, s in caught.items() if t not in done_at_kill}
    assert caught and len(done_at_kill) < 8

    second = overnight_subprocess(*args, timeout=600, env=ray_env())
    assert second.returncode == 0, second.stderr

    rows = store.rows()
    assert len(rows) == 8 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    assert (rows["final_step"] == 8).all()
    # a trial that had finished before the kill was never started again
    starts = Counter(p.name.split(".")[0] for p in marker_dir.glob("*.start"))
    assert all(starts[t] == starts_at_kill[t] == 1 for t in done_at_kill)
    # the trials caught mid-way continued from their checkpoints, not from step 0
    by_id = rows.set_index("trial_id")
    for tid, step in caught.items():
        assert by_id.loc[tid, "resumed_from"] >= step, (tid, step, by_id.loc[tid, "resumed_from"])
        assert by_id.loc[tid, "attempts"] >= 2
    ends = Counter(p.name.split(".")[0] for p in marker_dir.glob("*.end"))
    assert set(ends) == set(rows["trial_id"]) and all(ends[t] == 1 for t in done_at_kill)
