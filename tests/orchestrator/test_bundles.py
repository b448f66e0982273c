"""Bundles (orchestrator/run/bundle.py): several trials sent to Ray Tune as one Tune trial, each still
with its own row, history, checkpoint, attempts and retries.

- the sizes: automatic (balanced over the slots, one by one for short grids, smaller at the end)
  or as asked, and --retry-failed trials alone;
- every member gets its own row and history, runs once, and the progress line counts members;
- a member that raises is retried in the bundle's process, then gets its failed row, and the
  members after it still run;
- a member whose process dies: Tune runs the bundle again, members with rows are skipped, the
  one that died resumes from its checkpoint; one that dies every time gets its failed row after
  as many starts as a lone trial, and the rest of the bundle runs;
- the driver killed mid-bundle, then the same command: no finished member runs again.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from orchestrator.run import bundle as B
from orchestrator.run.protocol import Member, Unit
from orchestrator.results.dataset import StudyStore
from tests.processes import kill_when, overnight_subprocess, ray_env, start_overnight


def markers(folder: Path, kind: str) -> Counter:
    return Counter(p.name.split(".")[0] for p in folder.glob(f"*.{kind}")) if folder.exists() else Counter()


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_record(store: StudyStore) -> dict:
    return store.read_json(f"runs/{store.list('runs', '.json')[-1]}")


# ---- sizes ---------------------------------------------------------------------------------
def test_auto_size_sends_short_grids_one_by_one_and_keeps_16_bundles_per_slot():
    assert B.auto_size(20, 2) == 1 and B.auto_size(32, 2) == 1
    assert B.auto_size(600, 2) == 19 and B.auto_size(200, 2) == 7
    assert B.auto_size(4000, 2) == 125 and B.auto_size(10_000, 2) == B.MAX_AUTO == 256
    assert B.auto_size(200, 100) == 1


def _ids(units: list[Unit]) -> list[list[str]]:
    return [[m.trial_id for m in u.members] for u in units]


def test_bundles_keep_order_cover_every_trial_and_get_smaller_at_the_end(tmp_path):
    members = [_member(f"t{i:03d}", tmp_path, _common(tmp_path)) for i in range(600)]
    bundles = B.split(members, 19, 2)
    assert [t for ids in _ids(bundles) for t in ids] == [m.trial_id for m in members]
    lens = [len(u.members) for u in bundles]
    assert max(lens) == 19 and lens[-1] == 1 and lens == sorted(lens, reverse=True)
    assert len(bundles) < 600 / 19 + 20
    assert not any(u.grouped for u in bundles)
    # a number asked for: bundles of that size, the last one what is left
    assert [len(u.members) for u in B.split(members[:10], 4, 2, taper=False)] == [4, 4, 2]
    assert [u.name for u in B.split(members[:5], 4, 2, taper=False)] == ["t000+3", "t004"]


def test_trials_sent_again_by_retry_failed_go_alone(tmp_path):
    a, b, c, d = (_member(t, tmp_path, _common(tmp_path)) for t in "abcd")
    bundles = B.split([a, replace(b, rerun=True), c, d], 4, 1, taper=False)
    assert _ids(bundles) == [["b"], ["a", "c", "d"]]


# ---- in one process, without Ray -------------------------------------------------------------
def _common(tmp_path: Path, max_failures: int = 1) -> dict:
    return {"study": "s", "scale": "fast", "workload": "synthetic", "results": str(tmp_path / "res"),
            "stage_cache": str(tmp_path / "cache"), "data_root": str(tmp_path), "metric": "loss",
            "max_failures": max_failures, "cpu": 1.0, "gpu": 0.0, "schema": None, "workload_spec": None}


def _member(tid: str, marker_dir: Path, common: dict, **cfg) -> Member:
    return Member(trial_id=tid, config={"steps": 4, "work_units": 0, "lr": 0.1, "seed": 1, "fail": "none",
                                        "marker_dir": str(marker_dir), **cfg}, **common)


def test_a_raising_member_is_retried_in_the_bundle_then_failed_and_the_others_run(tmp_path):
    marks, common = tmp_path / "markers", _common(tmp_path)
    members = (_member("a1", marks, common), _member("b2", marks, common, fail="raise"), _member("c3", marks, common))
    reports: list[dict] = []
    B.run_unit(Unit(members), report=reports.append)
    store = StudyStore(str(tmp_path / "res"))
    rows = store.rows().set_index("trial_id")
    assert sorted(rows.index) == ["a1", "b2", "c3"]
    assert rows.loc["b2", "status"] == "failed" and "synthetic failure" in rows.loc["b2", "error"]
    assert rows.loc["b2", "attempts"] == 2                     # max_failures=1: one retry
    assert (rows.loc[["a1", "c3"], "status"] == "completed").all()
    assert (rows.loc[["a1", "c3"], "attempts"] == 1).all()
    assert markers(marks, "start") == Counter({"a1": 1, "b2": 2, "c3": 1})
    assert set(store.history()["trial_id"]) == {"a1", "b2", "c3"}   # each its own history
    # the driver heard of the retry and of every member, each once, in order
    events = [e for r in reports for e in r["overnight_events"]]
    assert [e[:2] for e in events if e[0] == "done"] == [["done", "a1"], ["done", "b2"], ["done", "c3"]]
    assert [e[2] for e in events if e[0] == "done"] == ["completed", "failed", "completed"]
    assert all(type(e[2]) is str for e in events)   # plain strings in the Tune results
    assert any(e[0] == "retry" and e[1] == "b2" and "synthetic failure" in e[2] for e in events)


def test_a_bundle_run_again_skips_members_with_rows(tmp_path):
    marks, common = tmp_path / "markers", _common(tmp_path)
    unit = Unit((_member("a1", marks, common), _member("b2", marks, common)))
    B.run_unit(unit)
    reports: list[dict] = []
    B.run_unit(unit, report=reports.append)
    assert markers(marks, "start") == Counter({"a1": 1, "b2": 1})
    # skipped members are still reported, with the status of their row (the driver counts each once)
    assert [e for r in reports for e in r["overnight_events"]] == [["done", "a1", "completed"], ["done", "b2", "completed"]]


def test_a_member_that_died_too_often_in_this_run_gets_its_failed_row_without_running(tmp_path):
    marks = tmp_path / "markers"
    store = StudyStore(str(tmp_path / "res"))
    # b2 started 5 times without a row and without an error: its process died each time, once in
    # an earlier run (the driver passes those as "deaths"), so 4 = max_failures + 3 in this one.
    # a1 has its row: b2 is where the bundle died.
    for _ in range(5):
        store.bump("b2", "attempts")
    store.write_bytes("checkpoints/b2/died", b"RayActorError: The actor died unexpectedly")
    common = _common(tmp_path, max_failures=1)
    B.run_unit(Unit((_member("a1", marks, common),)))
    members = (_member("a1", marks, common), replace(_member("b2", marks, common), deaths=1),
               _member("c3", marks, common))
    B.run_unit(Unit(members))
    rows = store.rows().set_index("trial_id")
    assert rows.loc["b2", "status"] == "failed" and "process died" in rows.loc["b2", "error"]
    assert "actor died unexpectedly" in rows.loc["b2", "error"]
    assert markers(marks, "start")["b2"] == 0 and rows.loc["c3", "status"] == "completed"
    # with more deaths before this run, the same counters leave it a try
    store2 = StudyStore(str(tmp_path / "res2"))
    for _ in range(5):
        store2.bump("b2", "attempts")
    common = {**_common(tmp_path), "results": str(tmp_path / "res2")}
    B.run_unit(Unit((replace(_member("b2", marks, common), deaths=3),)))
    assert store2.rows().iloc[0]["status"] == "completed"


# ---- on Ray ----------------------------------------------------------------------------------
@pytest.mark.usefixtures("ray_local")
def test_every_member_gets_its_own_row_history_and_one_start(tmp_path, cli):
    marks = tmp_path / "markers"
    doc = {"name": "bundled", "workload": "synthetic", "metric": "loss", "mode": "min",
           "fixed": {"steps": 2, "work_units": 1, "marker_dir": str(marks)}, "grid": {"seed": list(range(12))}}
    res = tmp_path / "res"
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report", "--bundle", "4")
    assert code == 0, err
    store = StudyStore(str(res / "bundled" / "fast"))
    rows = store.rows()
    assert len(rows) == 12 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    assert (rows["attempts"] == 1).all() and (rows["final_step"] == 2).all()
    assert set(markers(marks, "start").values()) == {1} and len(markers(marks, "start")) == 12
    hist = store.history()
    assert len(hist) == 12 * 2 and set(hist["trial_id"]) == set(rows["trial_id"])
    assert run_record(store)["bundles"] == 3 and run_record(store)["bundle_size"] == 4
    assert "12 trials in 3 bundles of up to 4" in err and "12/12 finished" in err
    assert store.list_dirs("checkpoints") == []          # each member's checkpoint cleared after its row
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report", "--bundle", "4")
    assert code == 0 and "12 already finished, 0 to run" in err


@pytest.mark.usefixtures("ray_local")
def test_a_crash_mid_bundle_resumes_that_member_and_never_reruns_finished_ones(tmp_path, cli):
    marks = tmp_path / "markers"
    cases = [{"lr": 0.1, "fail": "none"}, {"lr": 0.2, "fail": "none"}, {"lr": 0.3, "fail": "crash"},
             {"lr": 0.4, "fail": "none"}]
    doc = {"name": "crashmid", "workload": "synthetic", "metric": "loss", "mode": "min", "max_failures": 1,
           "fixed": {"steps": 4, "work_units": 1, "marker_dir": str(marks)}, "zip": {"case": cases}}
    res = tmp_path / "res"
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report", "--bundle", "4")
    assert code == 0, err
    rows = StudyStore(str(res / "crashmid" / "fast")).rows().set_index("lr")
    assert set(rows["status"]) == {"completed"} and len(rows) == 4
    starts = markers(marks, "start")
    crashed = rows.loc[0.3, "trial_id"]
    assert starts[crashed] == 2 and rows.loc[0.3, "attempts"] == 2 and rows.loc[0.3, "resumed_from"] == 2
    assert all(starts[rows.loc[lr, "trial_id"]] == 1 for lr in (0.1, 0.2, 0.4))   # not run again
    assert (rows.loc[[0.1, 0.2, 0.4], "attempts"] == 1).all()
    assert f"trial {crashed} failed, retrying" in err


@pytest.mark.usefixtures("ray_local")
def test_a_member_that_kills_its_process_every_time_fails_alone(tmp_path, cli):
    marks = tmp_path / "markers"
    doc = {"name": "killer", "workload": "tests.orchestrator.bundle_workloads:Crashy", "metric": "loss",
           "mode": "min", "max_failures": 0, "fixed": {"marker_dir": str(marks)},
           "zip": {"case": [{"x": 1, "crash": False}, {"x": 2, "crash": True}, {"x": 3, "crash": False}]}}
    res = tmp_path / "res"
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report", "--bundle", "3")
    assert code == 1, err
    rows = StudyStore(str(res / "killer" / "fast")).rows().set_index("x")
    assert rows.loc[2, "status"] == "failed" and "process died" in rows.loc[2, "error"]
    assert (rows.loc[[1, 3], "status"] == "completed").all()
    starts = markers(marks, "start")
    # as many starts as a lone trial gets (1 + max_failures + 2), the others once
    assert starts[rows.loc[2, "trial_id"]] == 3 and rows.loc[2, "attempts"] == 3
    assert starts[rows.loc[1, "trial_id"]] == 1 and starts[rows.loc[3, "trial_id"]] == 1
    assert "2 completed, 1 failed" in err


def test_driver_killed_mid_bundle_then_rerun_runs_no_finished_member_again(tmp_path):
    marks = tmp_path / "markers"
    doc = {"name": "killedbundle", "workload": "synthetic", "metric": "loss", "mode": "min",
           "fixed": {"steps": 6, "work_units": 1, "sleep_s": 0.1, "marker_dir": str(marks)},
           "grid": {"seed": list(range(12))}}
    path = write(tmp_path, doc)
    res = tmp_path / "res"
    store = StudyStore(str(res / "killedbundle" / "fast"))
    args = ["run", path, "--results", res, "--no-report", "--bundle", "6"]
    log = tmp_path / "run1.log"
    first = start_overnight(*args, log=log)

    def mid_bundle() -> dict[str, int]:   # some rows, and a member without one that checkpointed step 2+
        if not (store.exists("trials") and len(store.finished_ids()) >= 3):
            return {}
        steps = {t: (store.load_checkpoint(t) or {}).get("state", {}).get("step", 0) for t in store.in_flight()}
        return {t: s for t, s in steps.items() if 2 <= s <= 4}

    caught = kill_when(first, "rows and a member in flight", mid_bundle, log)
    done_at_kill = store.finished_ids()
    starts_at_kill = markers(marks, "start")
    assert 0 < len(done_at_kill) < 12
    again = overnight_subprocess(*args, env=ray_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = store.rows()
    assert len(rows) == 12 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    starts = markers(marks, "start")
    assert all(starts[t] == starts_at_kill[t] == 1 for t in done_at_kill)   # never run again
    assert (rows["final_step"] == 6).all()
    # the members caught in flight continued from their checkpoints
    by_id = rows.set_index("trial_id")
    caught = {t: step for t, step in caught.items() if t not in done_at_kill}
    assert caught
    for tid, step in caught.items():
        assert by_id.loc[tid, "resumed_from"] >= step and by_id.loc[tid, "attempts"] >= 2


def test_a_bad_bundle_value_is_one_line_and_exit_2(tmp_path, cli):
    doc = {"name": "badbundle", "workload": "synthetic", "metric": "loss", "grid": {"seed": [0, 1]}}
    path = write(tmp_path, doc)
    code, _, err = cli("run", path, "--results", tmp_path / "res", "--bundle", "0")
    assert code == 2 and "--bundle" in err and "whole number" in err and len(err.strip().splitlines()) == 1
    path = write(tmp_path, {**doc, "bundle": "many"})
    code, _, err = cli("run", path, "--results", tmp_path / "res")
    assert code == 2 and "bundle" in err and "many" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "res").exists()
