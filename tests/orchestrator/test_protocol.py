"""The protocol between the driver and the trial processes (orchestrator/run/protocol.py).

- ``Status`` members are the strings the datasets hold: the committed exports, a row written to
  Parquet and read back, the counts of the status command and the report;
- a run's ``Plan`` gives every pending trial as a ``Member`` with the run's settings and the
  driver's facts (--retry-failed, deaths in earlier runs);
- units and members come out of the object store's pickling equal, their shared settings stored once;
- statuses go back to the driver as plain strings in Tune results and are read back as ``Status``;
- a member that had its row is ``NotRun.HAD_ROW``, not a status.
"""
from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator.results import rows as R
from orchestrator.results.dataset import StudyStore
from orchestrator.run import bundle as B
from orchestrator.run.prepare import plan_run, prepare
from orchestrator.run.progress import Progress
from orchestrator.run.protocol import Member, NotRun, Status, Unit
from orchestrator.run.trial import failed_row, row_status

ROOT = Path(__file__).resolve().parents[2]


def _member(tmp_path: Path, tid: str, **fields) -> Member:
    settings = {"study": "s", "scale": "fast", "workload": "synthetic", "results": str(tmp_path / "res"),
                "stage_cache": str(tmp_path / "cache"), "data_root": str(tmp_path), "metric": "loss",
                "max_failures": 0, **fields}
    return Member(trial_id=tid, config={"steps": 2, "work_units": 0, "lr": 0.1, "seed": 1, "fail": "none"},
                  **settings)


# ---- Status ----------------------------------------------------------------------------------
def test_status_values_are_the_strings_of_the_committed_datasets():
    assert [s.value for s in Status] == ["completed", "failed", "diverged"]
    assert (R.COMPLETED, R.FAILED, R.DIVERGED) == (Status.COMPLETED, Status.FAILED, Status.DIVERGED)
    assert R.STATUSES == ("completed", "failed", "diverged") and {type(s) for s in R.STATUSES} == {str}
    seen: set[str] = set()
    for path in sorted((ROOT / "docs" / "results" / "data").glob("*.parquet")):
        if "status" in pq.read_schema(path).names:
            seen.update(pq.read_table(path, columns=["status"]).column("status").to_pylist())
    assert "completed" in seen and seen <= {s.value for s in Status}
    # formatted, serialised and compared as those strings
    assert f"{Status.FAILED}" == str(Status.FAILED) == "failed" and json.dumps([Status.DIVERGED]) == '["diverged"]'
    assert Status("completed") is Status.COMPLETED and "failed" == Status.FAILED
    assert {"failed": 1}[Status.FAILED] == 1


def test_a_status_in_a_row_reads_back_as_the_plain_string(tmp_path):
    member = _member(tmp_path, "a1")
    assert failed_row(member, "boom")["status"] is Status.FAILED
    store = StudyStore(member.results)
    value = store.row_value("a1", "status")
    assert value == "failed" and type(value) is str
    assert row_status(store, "a1") is Status.FAILED
    assert row_status(store, "missing") is Status.COMPLETED   # only for the progress line
    counts = R.count_statuses(store.rows()["status"])
    assert counts == {"completed": 0, "failed": 1, "diverged": 0} and {type(k) for k in counts} == {str}


# ---- Plan -> Member --------------------------------------------------------------------------
def test_a_plans_members_carry_the_runs_settings_and_the_drivers_facts(tmp_path):
    doc = {"name": "proto", "workload": "synthetic", "metric": "loss", "mode": "min", "max_failures": 2,
           "fixed": {"steps": 2}, "grid": {"seed": [0, 1, 2]}}
    path = tmp_path / "proto.yaml"
    path.write_text(yaml.safe_dump(doc))
    prep = prepare(path, "fast")
    store = StudyStore(str(tmp_path / "res" / "proto" / "fast"))
    plan = plan_run(prep, store, str(tmp_path / "res"), str(tmp_path))
    ids = [t.trial_id for t in prep.trials]
    plan = replace(plan, rerun=frozenset(ids[1:2]), deaths={ids[2]: 2})
    members = plan.members()
    assert [m.trial_id for m in members] == ids and [m.config for m in members] == [t.config for t in prep.trials]
    assert [(m.rerun, m.deaths) for m in members] == [(False, 0), (True, 0), (False, 2)]
    first = members[0]
    assert (first.study, first.scale, first.workload, first.metric, first.max_failures) == (
        "proto", "fast", "synthetic", "loss", 2)
    assert first.results == store.location and first.data_root == str(tmp_path)
    assert first.schema == plan.schema and first.schema is members[2].schema   # one list, shared


# ---- Unit ------------------------------------------------------------------------------------
def test_a_unit_has_members_a_group_at_least_two_and_a_tune_name(tmp_path):
    a, b = _member(tmp_path, "a1"), _member(tmp_path, "b2")
    assert Unit((a,)).name == "a1" and Unit((a, b), grouped=True).name == "a1+1"
    with pytest.raises(ValueError):
        Unit(())
    with pytest.raises(ValueError):
        Unit((a,), grouped=True)


def test_units_come_out_of_the_object_stores_pickling_equal_with_shared_settings_once(tmp_path):
    import ray.cloudpickle as pickle   # what ray.put uses for the table of units

    schema = [["trial_id", "string"], ["loss", "double"]] * 50
    members = [_member(tmp_path, f"t{i:03d}", schema=schema, workload_spec={"command": {"argv": ["x"]}})
               for i in range(200)]
    units = [Unit(tuple(members[:100]), grouped=True), Unit(tuple(members[100:]))]
    back = pickle.loads(pickle.dumps(units))
    assert back == units and back[0].grouped and not back[1].grouped
    assert back[0].members[0].schema is back[1].members[99].schema
    # the schema is stored once, not once per member
    bare = [Unit(tuple(replace(m, schema=None) for m in u.members), u.grouped) for u in units]
    assert len(pickle.dumps(units)) < len(pickle.dumps(bare)) + 2 * len(pickle.dumps(schema))


# ---- statuses back to the driver -------------------------------------------------------------
def test_statuses_travel_as_plain_strings_in_tune_results_and_are_read_back(tmp_path):
    from orchestrator.run.sweep import Bridge, Sweep

    marks = tmp_path / "markers"
    members = tuple(replace(_member(tmp_path, t), config={**_member(tmp_path, t).config, "fail": fail,
                                                          "marker_dir": str(marks)})
                    for t, fail in (("a1", "none"), ("b2", "raise")))
    reports: list[dict] = []
    B.run_unit(Unit(members), report=reports.append)
    events = [e for r in reports for e in r["overnight_events"]]
    done = [e for e in events if e[0] == "done"]
    assert done == [["done", "a1", "completed"], ["done", "b2", "failed"]]
    assert all(type(e[2]) is str for e in done)

    progress = Progress("s/fast", total=2, already=0, stream=io.StringIO(), tty=False)
    sweep = Sweep(StudyStore(members[0].results), [Unit(members)], progress, {})
    for report in reports:
        Bridge(sweep).on_trial_result(0, [], None, report)
    assert sweep.counted == {"a1": Status.COMPLETED, "b2": Status.FAILED}
    assert all(type(s) is Status for s in sweep.counted.values())
    assert (progress.completed, progress.failed) == (1, 1)


def test_a_member_that_had_its_row_is_not_run(tmp_path):
    marks = tmp_path / "markers"
    member = _member(tmp_path, "a1")
    member = replace(member, config={**member.config, "marker_dir": str(marks)})
    store = StudyStore(member.results)
    retries: list[str] = []

    def starts() -> int:
        return len(list(marks.glob("a1.*start")))
    assert B.run_member(member, store, check_deaths=True, on_retry=retries.append) is Status.COMPLETED
    assert B.run_member(member, store, check_deaths=True, on_retry=retries.append) is NotRun.HAD_ROW
    assert B.run_member(member, store, check_deaths=False, on_retry=retries.append) is NotRun.HAD_ROW
    assert starts() == 1
    # --retry-failed sends it again: it runs
    assert B.run_member(replace(member, rerun=True), store, check_deaths=True,
                        on_retry=retries.append) is Status.COMPLETED
    assert starts() == 2 and retries == []
