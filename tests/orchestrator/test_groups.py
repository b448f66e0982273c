"""Vectorised trial groups (orchestrator/run/groups.py): trials a workload declares batchable
(``group_key``) run through its ``run_group`` as one Tune trial, each still with its own row,
history, checkpoint, retries and dedup.

- the driver groups members by key, capped and evenly, and leaves keyless, lone and
  --retry-failed members to the ordinary bundles;
- 6 trials in 2 groups: 2 Tune trials, 2 run_group calls, 6 rows equal to what ``run`` gives alone;
- a member whose entry is an exception runs again alone (completed, or failed after its retries);
  run_group raising sends every member alone; a group whose process died runs one by one;
- resume: a finished study runs nothing; members with rows are left out of run_group;
- --group off: no run_group call; a bad --group / group: value is one line and exit 2;
- the real quantcorr.transformer at the smoke scale: grouped rows equal --group off rows.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.run import bundle as B
from orchestrator.run import groups as G
from orchestrator.run.protocol import Member, Unit
from orchestrator.study.contract import LocalContext
from orchestrator.results.dataset import StudyStore
from tests.orchestrator.group_workloads import Grouped, GroupedParams, calls
from tests.orchestrator.test_bundles import run_record, write

WORKLOAD = "tests.orchestrator.group_workloads:Grouped"


def alone(config: dict) -> tuple[dict, list[dict]]:
    """What ``run`` gives for one full config, and its history."""
    ctx = LocalContext()
    known = {k: v for k, v in config.items() if k in GroupedParams.model_fields}
    return Grouped().run(GroupedParams(**{**known, "calls_dir": ""}), ctx), ctx.history


# ---- the driver's grouping ---------------------------------------------------------------------
def test_members_are_grouped_by_key_capped_evenly_and_the_rest_is_bundled_as_before(tmp_path):
    members = [Member(trial_id=f"t{i}", config={"width": w, "seed": s}, **_common(tmp_path)) for i, (w, s) in
               enumerate([(w, s) for w in (1, 2, 3) for s in range(10)][:21])]   # width 1: 10, 2: 10, 3: 1
    keys = [m.config["width"] for m in members]
    keys[5] = None                                                               # a trial without a key
    groups, rest = G.form(members, keys, 8)
    assert [len(g.members) for g in groups] == [5, 4, 5, 5]   # 9 -> 5 + 4 (cap 8), 10 -> 5 + 5
    assert [m.trial_id for m in rest] == ["t5", "t20"]        # no key; alone under its key
    assert all(g.grouped for g in groups)
    assert sorted([m.trial_id for g in groups for m in g.members] + ["t20", "t5"]) == sorted(m.trial_id for m in members)
    assert G.form(members, keys, 1) == ([], members)       # group: off
    # 3 under one key with a cap of 2: a group of 2, and one that runs as a bundle of one
    groups, rest = G.form(members[:3], [1, 1, 1], 2)
    assert [(len(g.members), g.grouped) for g in groups] == [(2, True), (1, False)] and rest == []
    assert G.group_cap("auto") == G.AUTO_GROUP == 8 and G.group_cap("off") == 1 and G.group_cap(3) == 3
    # --retry-failed trials and workloads without run_group are never grouped
    cfgs = [replace(members[0], config={"width": 1}), replace(members[1], config={"width": 1}, rerun=True)]
    assert G.keys(Grouped, cfgs) == [Grouped.group_key({"width": 1}), None]

    class KeyOnly:
        group_key = staticmethod(lambda c: "k")
    assert G.keys(KeyOnly, cfgs) == [None, None]


# ---- on Ray ----------------------------------------------------------------------------------
@pytest.mark.usefixtures("ray_local")
def test_six_trials_in_two_groups_are_two_tune_trials_with_the_rows_of_run(tmp_path, cli):
    marks = tmp_path / "calls"
    doc = {"name": "grouped", "workload": WORKLOAD, "metric": "loss", "mode": "min",
           "fixed": {"calls_dir": str(marks), "steps": 3}, "grid": {"width": [4, 8], "seed": [0, 1, 2]}}
    res = tmp_path / "res"
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report")
    assert code == 0, err
    store = StudyStore(str(res / "grouped" / "fast"))
    record = run_record(store)
    assert record["pending"] == 6 and record["bundles"] == 2                      # 2 Tune trials
    assert len(list((res / "grouped" / "fast" / "_tune").glob("run-*/*+2"))) == 2   # their trial dirs
    rows = store.rows()
    assert len(rows) == 6 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    assert (rows["attempts"] == 1).all()
    groups, runs = calls(marks)
    assert runs == [] and sorted(len(g) for g in groups) == [3, 3]
    assert sorted(t for g in groups for t in g) == sorted(rows["trial_id"])
    hist = store.history()
    for row in rows.to_dict("records"):
        want, want_hist = alone(row)
        assert (row["loss"], row["score"], row["final_step"]) == (want["loss"], want["score"], want["final_step"])
        got_hist = hist[(hist["trial_id"] == row["trial_id"]) & (hist["metric"] == "loss")].sort_values("step")
        assert list(got_hist["value"]) == [h["loss"] for h in want_hist] and len(want_hist) == 3
    assert store.list_dirs("checkpoints") == []   # each member's checkpoint dropped after its row
    assert "6/6 finished" in err
    # resume: the finished study runs nothing
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report")
    assert code == 0 and "6 already finished, 0 to run" in err
    assert sorted(len(g) for g in calls(marks)[0]) == [3, 3]


@pytest.mark.usefixtures("ray_local")
def test_a_member_failing_in_its_group_runs_again_alone(tmp_path, cli):
    marks = tmp_path / "calls"
    cases = [{"seed": s, "fail_in_group": s == 1, "fail_always": s == 2} for s in range(4)]
    doc = {"name": "groupfail", "workload": WORKLOAD, "metric": "loss", "mode": "min", "max_failures": 1,
           "fixed": {"calls_dir": str(marks)}, "zip": {"case": cases}}
    res = tmp_path / "res"
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report")
    assert code == 1, err                                   # one trial failed
    rows = StudyStore(str(res / "groupfail" / "fast")).rows().set_index("seed")
    groups, runs = calls(marks)
    assert len(groups) == 1 and sorted(groups[0]) == sorted(rows["trial_id"])   # all four in one group
    # the two that failed in the group, and only they, ran alone: once each (max_failures=1, and the
    # group's try was the first)
    assert sorted(runs) == sorted(rows.loc[[1, 2], "trial_id"])
    assert rows.loc[1, "status"] == "completed" and rows.loc[1, "attempts"] == 2
    assert rows.loc[1, "loss"] == alone({"seed": 1})[0]["loss"]
    assert rows.loc[2, "status"] == "failed" and "fails alone too" in rows.loc[2, "error"]
    assert rows.loc[2, "attempts"] == 2
    assert (rows.loc[[0, 3], "status"] == "completed").all() and (rows.loc[[0, 3], "attempts"] == 1).all()
    assert "failed, retrying: in its group: RuntimeError: member failed in its group" in err
    assert "3 completed, 1 failed" in err


@pytest.mark.usefixtures("ray_local")
def test_a_resumed_group_runs_only_its_members_without_rows(tmp_path, cli):
    marks = tmp_path / "calls"
    doc = {"name": "groupresume", "workload": WORKLOAD, "metric": "loss", "mode": "min",
           "fixed": {"calls_dir": str(marks)}, "grid": {"seed": [0, 1]}}
    res = tmp_path / "res"
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report")
    assert code == 0, err
    first = set(StudyStore(str(res / "groupresume" / "fast")).rows()["trial_id"])
    assert [sorted(g) for g in calls(marks)[0]] == [sorted(first)]
    doc["grid"]["seed"] = [0, 1, 2, 3, 4]                    # extended: 2 with rows, 3 new
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report")
    assert code == 0 and "2 already finished, 3 to run" in err, err
    rows = StudyStore(str(res / "groupresume" / "fast")).rows()
    assert len(rows) == 5 and set(rows["status"]) == {"completed"}
    groups, runs = calls(marks)
    new = set(rows["trial_id"]) - first
    assert runs == [] and sorted(map(sorted, groups)) == sorted([sorted(first), sorted(new)])


@pytest.mark.usefixtures("ray_local")
def test_group_off_makes_no_run_group_call(tmp_path, cli):
    marks = tmp_path / "calls"
    doc = {"name": "groupoff", "workload": WORKLOAD, "metric": "loss", "mode": "min",
           "fixed": {"calls_dir": str(marks)}, "grid": {"seed": [0, 1, 2]}}
    res = tmp_path / "res"
    code, _, err = cli("run", write(tmp_path, doc), "--results", res, "--no-report", "--group", "off")
    assert code == 0, err
    rows = StudyStore(str(res / "groupoff" / "fast")).rows()
    groups, runs = calls(marks)
    assert groups == [] and sorted(runs) == sorted(rows["trial_id"]) and len(rows) == 3
    assert run_record(StudyStore(str(res / "groupoff" / "fast")))["bundles"] == 3
    # the study's own group: off does the same
    marks2 = tmp_path / "calls2"
    doc2 = {**doc, "name": "groupoff2", "group": "off", "fixed": {"calls_dir": str(marks2)}}
    code, _, err = cli("run", write(tmp_path, doc2), "--results", res, "--no-report")
    assert code == 0 and calls(marks2)[0] == [] and len(calls(marks2)[1]) == 3, err


def test_a_bad_group_value_is_one_line_and_exit_2(tmp_path, cli):
    doc = {"name": "badgroup", "workload": "synthetic", "metric": "loss", "grid": {"seed": [0, 1]}}
    path = write(tmp_path, doc)
    for bad in ("0", "some"):
        code, _, err = cli("run", path, "--results", tmp_path / "res", "--group", bad)
        assert code == 2 and "--group" in err and "auto, off or a whole number" in err, err
        assert len(err.strip().splitlines()) == 1
    path = write(tmp_path, {**doc, "group": "many"})
    code, _, err = cli("run", path, "--results", tmp_path / "res")
    assert code == 2 and "group" in err and "many" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "res").exists()


# ---- in one process, without Ray -------------------------------------------------------------
def _common(tmp_path: Path, max_failures: int = 1) -> dict:
    return {"study": "s", "scale": "fast", "workload": WORKLOAD, "results": str(tmp_path / "res"),
            "stage_cache": str(tmp_path / "cache"), "data_root": str(tmp_path), "metric": "loss",
            "max_failures": max_failures, "cpu": 1.0, "gpu": 0.0, "schema": None, "workload_spec": None}


def _group(tmp_path: Path, n: int, common: dict | None = None, **cfg) -> list[Member]:
    full = GroupedParams(calls_dir=str(tmp_path / "calls"), **cfg).model_dump()
    common = common or _common(tmp_path)
    return [Member(trial_id=f"{i:08x}", config={**full, "seed": i}, **common) for i in range(n)]


def _run(members: list[Member], grouped: bool = True, report=None) -> None:
    B.run_unit(Unit(tuple(members), grouped=grouped), report=report)


def _events(reports: list[dict]) -> list[list[str]]:
    return [e for r in reports for e in r["overnight_events"]]


def test_run_group_raising_sends_every_member_alone(tmp_path):
    members = _group(tmp_path, 3, group_raises=True)
    reports: list[dict] = []
    _run(members, report=reports.append)
    store = StudyStore(str(tmp_path / "res"))
    rows = store.rows().set_index("trial_id")
    groups, runs = calls(tmp_path / "calls")
    assert len(groups) == 1 and sorted(runs) == sorted(rows.index) == [m.trial_id for m in members]
    assert set(rows["status"]) == {"completed"} and (rows["attempts"] == 2).all()   # the group's try, then alone
    for m in members:
        assert rows.loc[m.trial_id, "loss"] == alone(m.config)[0]["loss"]
    events = _events(reports)
    assert sorted(e[1] for e in events if e[0] == "done") == sorted(rows.index)
    assert sum(e[0] == "retry" and "MemoryError" in e[2] for e in events) == 3


def test_members_with_rows_are_skipped_and_a_lone_member_left_runs_alone(tmp_path):
    members = _group(tmp_path, 4)
    _run(members[:2], grouped=False)
    groups, runs = calls(tmp_path / "calls")
    assert groups == [] and len(runs) == 2
    reports: list[dict] = []
    _run(members, report=reports.append)     # 2 without rows: one group call
    groups, _ = calls(tmp_path / "calls")
    assert [sorted(g) for g in groups] == [[m.trial_id for m in members[2:]]]
    assert sorted(e[1] for e in _events(reports) if e[0] == "done") == [m.trial_id for m in members]
    rows = StudyStore(str(tmp_path / "res")).rows()
    assert len(rows) == 4 and set(rows["status"]) == {"completed"} and (rows["attempts"] == 1).all()
    # one member left without a row: no group of one, it runs alone
    more = _group(tmp_path, 5)
    _run(more)
    groups, runs = calls(tmp_path / "calls")
    assert len(groups) == 1 and runs.count(more[4].trial_id) == 1


def test_a_group_whose_process_died_in_this_run_runs_its_members_one_by_one(tmp_path):
    members = _group(tmp_path, 3)
    store = StudyStore(str(tmp_path / "res"))
    for m in members:   # a try each, no row, no error: the group's process died
        store.bump(m.trial_id, "attempts")
    _run(members)
    groups, runs = calls(tmp_path / "calls")
    assert groups == [] and sorted(runs) == [m.trial_id for m in members]
    rows = store.rows()
    assert set(rows["status"]) == {"completed"} and (rows["attempts"] == 2).all()
    # deaths from an earlier run (the driver passes them) do not count: the group runs as one
    members = [replace(m, deaths=1) for m in _group(tmp_path / "b", 3)]
    store = StudyStore(str(tmp_path / "b" / "res"))
    for m in members:
        store.bump(m.trial_id, "attempts")
    _run(members)
    groups, runs = calls(tmp_path / "b" / "calls")
    assert len(groups) == 1 and runs == [] and set(store.rows()["status"]) == {"completed"}


def test_a_diverged_entry_is_a_diverged_row(tmp_path):
    class Diverging(Grouped):
        def run_group(self, configs, ctxs):
            from orchestrator.study.contract import Diverged
            out = super().run_group(configs, ctxs)
            return [Diverged("loss is nan", {"final_step": 1})] + out[1:2] + [{"loss": math.nan, "final_step": 2}]

    import tests.orchestrator.group_workloads as W
    W.Diverging = Diverging
    try:
        common = {**_common(tmp_path), "workload": "tests.orchestrator.group_workloads:Diverging"}
        _run(_group(tmp_path, 3, common))
    finally:
        del W.Diverging
    rows = StudyStore(str(tmp_path / "res")).rows().sort_values("seed")
    assert list(rows["status"]) == ["diverged", "completed", "diverged"]
    assert list(rows["error"])[0] == "loss is nan" and list(rows["error"])[2] == "loss is nan"
    assert calls(tmp_path / "calls")[1] == []   # diverged trials are not retried


# ---- the real workload -----------------------------------------------------------------------
@pytest.mark.usefixtures("ray_local")
def test_transformer_smoke_grouped_rows_equal_the_ungrouped_ones(tmp_path, cli):
    sets = ["--set", "bits=[2]", "--set", "correct_every=[1]", "--set", "correction_hidden=[0,32]",
            "--set", "zip.arch=[{d_model: 64, n_heads: 4, n_layers: 2, d_ff: 256}]"]
    out = {}
    for mode in ("auto", "off"):
        res = tmp_path / mode
        code, _, err = cli("run", "transformer_grid", "--scale", "smoke", "--results", res, "--no-report",
                           "--group", mode, *sets)
        assert code == 0, err
        store = StudyStore(str(res / "transformer_grid" / "smoke"))
        assert run_record(store)["bundles"] == (2 if mode == "auto" else 6)     # 3 seeds x 2 corrector sizes
        out[mode] = store.rows().set_index("trial_id").sort_index()
    got, want = out["auto"], out["off"]
    assert len(got) == 6 and list(got.index) == list(want.index) and set(got["status"]) == {"completed"}
    for col in want.columns:
        if col.endswith("_s") or col in ("started_at", "finished_at", "host", "attempts", "extra_metrics"):
            continue
        for tid in want.index:
            w, g = want.loc[tid, col], got.loc[tid, col]
            if isinstance(w, float) and isinstance(g, float):
                assert (math.isnan(w) and math.isnan(g)) or math.isclose(w, g, rel_tol=1e-5, abs_tol=1e-12), (col, w, g)
            else:
                assert w == g or (w != w and g != g), (col, w, g)
