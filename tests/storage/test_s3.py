"""A study whose results live in an S3-compatible object store (the moto server on loopback),
end to end through pyarrow's S3 filesystem, as docs/cluster.md recommends for clusters:

- rows, history, artifacts, checkpoints and the stage cache all go to s3://bucket/prefix;
- the driver is SIGKILLed mid-sweep several times, each time followed by the same command: every
  trial appears exactly once, no finished trial runs again, interrupted ones resume from their
  checkpoints in the store, and the dead driver's lock does not hold the next run up;
- a second driver on the same study is refused while the first runs;
- `overnight status`, `report` and `export` work against the URI.

The expensive part (one sweep, several driver starts) is one module fixture; the tests check it.
Figures (kills, trials, appear once, re-ran) are printed; see them with `pytest -s`.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator.results.dataset import StudyStore
from tests.conftest import wait_until
from tests.processes import alive, kill_driver, kill_when, overnight_subprocess, ray_env, start_overnight
KILLS = 2   # two SIGKILLs mid-sweep are what the tests below need; each costs a driver start (CI time)
STEPS = 4
LRS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
SEEDS = [0, 1]
TRIALS = len(LRS) * len(SEEDS)


def counts(markers: Path, kind: str) -> Counter:
    return Counter(p.name.split(".")[0] for p in markers.glob(f"*.{kind}")) if markers.exists() else Counter()


@pytest.fixture(scope="module")
def sweep(object_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3sweep")
    markers = tmp / "markers"
    doc = {"name": "s3probe", "workload": "tests.probe_workloads:StoreProbe", "metric": "loss", "mode": "min",
           "max_failures": 1, "fixed": {"steps": STEPS, "work_units": 1, "sleep_s": 0.3, "marker_dir": str(markers)},
           "grid": {"lr": LRS, "seed": SEEDS},
           "report": [{"title": "Loss by lr", "by": ["lr"], "values": ["loss"], "stats": ["mean", "n"]}]}
    path = tmp / "s3probe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    root = object_store.uri("sweep")
    store = StudyStore(f"{root}/s3probe/fast")
    cmd = ["run", str(path), "--results", root, "--no-report"]
    env = ray_env()
    t0 = time.monotonic()
    kills, refused, logs, ends_at_kill = [], None, [], []
    for k in range(KILLS):
        before = store.finished_ids()
        log = tmp / f"run{k}.log"
        logs.append(log)
        proc = start_overnight(*cmd, log=log, env=env)
        family: set[int] = set()
        try:
            if k == 0:
                # a second driver on the same study while this one runs trials: refused (the remote lock)
                wait_until("the first trial to start", lambda: counts(markers, "start"), proc, family=family)
                refused = overnight_subprocess(*cmd, env=env, timeout=300)

            def mid_sweep(before: set = before) -> bool:
                """A new row in this run, and a trial without a row has a checkpoint in the store."""
                done = store.finished_ids()
                if len(done - before) < 1:
                    return False
                return any((store.load_checkpoint(t) or {}).get("state", {}).get("step", 0) >= 1
                           for t in store.in_flight())

            def checkpoints() -> dict[str, int]:
                """The step of every trial without a row that has a checkpoint."""
                out = {}
                for t in store.in_flight():
                    ck = store.load_checkpoint(t)
                    if ck:
                        out[t] = ck["state"]["step"]
                return out

            # the driver, and right after it the Ray it had started
            checkpointed = kill_when(proc, f"a row and a checkpoint of run {k}", mid_sweep, log, timeout=300,
                                     family=family, take=checkpoints)
        finally:
            kill_driver(proc, family)                # anything of it still there
        wait_until("the killed driver's processes to go", lambda family=family: not any(map(alive, family)),
                   timeout=60)
        ends_at_kill.append(counts(markers, "end"))
        kills.append({"done": store.finished_ids(), "starts": counts(markers, "start"),
                      "checkpointed": {t: s for t, s in checkpointed.items() if t not in store.finished_ids()}})

    final_log = tmp / "final.log"
    logs.append(final_log)
    final = overnight_subprocess(*cmd, env=env, timeout=600)
    final_log.write_text(final.stdout + final.stderr)
    assert final.returncode == 0, final.stderr[-3000:]
    wall = time.monotonic() - t0

    rows = store.rows()
    appear = Counter(rows["trial_id"])
    final_starts = counts(markers, "start")
    reran = {t for snap in kills for t in snap["done"] if final_starts[t] != snap["starts"][t]}
    figures = {"kills": KILLS, "trials": TRIALS, "rows": len(rows),
               "appear_once": sum(1 for n in appear.values() if n == 1), "re_ran": len(reran),
               "resumed_from_checkpoint": int((rows["resumed_from"] > 0).sum()), "wall_s": round(wall, 1)}
    print("\nS3 kill test:", json.dumps(figures))
    return {"store": store, "root": root, "path": path, "markers": markers, "rows": rows, "kills": kills,
            "refused": refused, "logs": logs, "ends_at_kill": ends_at_kill, "final": final, "figures": figures, "reran": reran, "tmp": tmp,
            "object_store": object_store}


def test_every_trial_appears_exactly_once_and_none_ran_twice(sweep):
    f, rows = sweep["figures"], sweep["rows"]
    assert f["trials"] == TRIALS and f["rows"] == TRIALS and f["appear_once"] == TRIALS
    assert set(rows["status"]) == {"completed"} and (rows["final_step"] == STEPS).all()
    assert not sweep["reran"], f"finished trials started again: {sweep['reran']}"
    # every trial ran to its end; one killed between its last step and its row may end twice (the
    # second time resuming at its last step), but never one that had its row
    ends = counts(sweep["markers"], "end")
    assert set(ends) == set(rows["trial_id"]), ends
    for snap, ended in zip(sweep["kills"], sweep["ends_at_kill"]):
        assert all(ends[t] == ended[t] for t in snap["done"]), "a finished trial ran to its end again"
    # each kill landed mid-sweep: rows before it, more rows after it
    done = [len(k["done"]) for k in sweep["kills"]]
    assert 0 < done[0] and done == sorted(done) and done[-1] < TRIALS, done


def test_interrupted_trials_resume_from_checkpoints_in_the_store(sweep):
    rows = sweep["rows"].set_index("trial_id")
    interrupted = {t: s for k in sweep["kills"] for t, s in k["checkpointed"].items()}
    assert interrupted, "no kill caught a trial with a checkpoint"
    for tid, step in interrupted.items():
        assert rows.loc[tid, "resumed_from"] >= step, (tid, step, rows.loc[tid, "resumed_from"])
        assert rows.loc[tid, "attempts"] >= 2
    assert not sweep["store"].in_flight()       # finished trials' checkpoints are cleaned up


def test_a_dead_drivers_lock_does_not_hold_up_the_next_run(sweep):
    # every run after a SIGKILL started at once (the heartbeat was seconds old) by taking the lock over
    for log in sweep["logs"][1:]:
        text = log.read_text()
        assert "taking over the lock of a driver that is gone" in text, text[-2000:]
        assert "another overnight driver is running" not in text
    assert not sweep["store"].exists(".lock.json")   # released by the last, clean run


def test_a_second_driver_is_refused_while_the_first_runs(sweep):
    refused = sweep["refused"]
    assert refused.returncode == 2, refused.stderr
    err = [line for line in refused.stderr.splitlines() if line.startswith("overnight: error:")]
    assert len(err) == 1 and "another overnight driver is running on this results location" in err[0], refused.stderr
    assert "last heartbeat" in err[0] and sweep["store"].location in err[0]


def test_rows_history_artifacts_and_stage_cache_are_in_the_store(sweep, object_store):
    keys = object_store.keys(sweep["root"])
    ids = set(sweep["rows"]["trial_id"])
    assert {k.split("/")[-1][:-8] for k in keys if k.startswith("s3probe/fast/trials/")} == ids
    assert {k.split("/")[-1][:-8] for k in keys if k.startswith("s3probe/fast/history/")} == ids
    assert {k.split("/")[-1][:-8] for k in keys if k.startswith("s3probe/fast/artifacts/curve/")} == ids
    assert "s3probe/fast/study.json" in keys
    # one stage-cache entry per lr, shared by that lr's trials
    stages = [k for k in keys if k.startswith("_cache/stages/") and not k.endswith(".key.json")]
    assert len(stages) == len(LRS), stages
    hist = sweep["store"].history()
    assert set(hist.groupby("trial_id")["step"].nunique()) == {STEPS}    # whole, across the kills
    curve = sweep["store"].artifact("curve")
    assert len(curve) == TRIALS * STEPS and set(curve["trial_id"]) == ids
    # a reader that knows nothing of overnight: pandas through pyarrow's S3 filesystem
    assert len(pd.read_parquet(f"{sweep['root']}/s3probe/fast/trials")) == TRIALS


def test_status_report_and_export_against_the_uri(sweep, tmp_path):
    root = sweep["root"]
    status = overnight_subprocess("status", root, timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"s3probe/fast: {TRIALS} trials | {TRIALS} completed | 0 failed" in status.stdout, status.stdout
    assert "no driver running" in status.stdout

    out = tmp_path / "report.md"
    rep = overnight_subprocess("report", f"{root}/s3probe/fast", "--out", out, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert f"Trials: {TRIALS} completed, 0 failed" in rep.stdout and "## Loss by lr" in rep.stdout
    assert out.read_text() == rep.stdout
    assert sweep["store"].read_bytes("report.md").decode() == rep.stdout   # written into the store too

    for dest in (str(tmp_path / "rows.parquet"), f"{root}/exports/rows.parquet"):
        exp = overnight_subprocess("export", f"{root}/s3probe/fast", "--out", dest, timeout=120)
        assert exp.returncode == 0, exp.stderr
        table = pq.read_table(dest) if "://" not in dest else pq.read_table(dest.removeprefix("s3://"),
                                                                            filesystem=_s3fs(dest))
        assert table.num_rows == TRIALS and len(set(table.column("trial_id").to_pylist())) == TRIALS


def _s3fs(uri: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)[0]
