"""One definition of the study per report: when a results folder holds rows of more than one
definition of a study (a changed fixed value, a removed grid value, a new workload version),
`overnight status`, the report and ``overnight.load`` count only the current study's trials, say
how many rows are kept aside and how they differ, and ``--all-rows`` includes them, labelled."""
from __future__ import annotations

import dataclasses
import json
import warnings

import pandas as pd
import pytest

import orchestrator as overnight
from orchestrator.report import definitions as D
from orchestrator.study.grid import Trial, trial_id
from orchestrator.run.prepare import freeze, prepare
from orchestrator.results.rows import schema_to_json
from orchestrator.results.dataset import StudyStore
from tests.conftest import ROOT

SYNTHETIC = ROOT / "configs" / "studies" / "synthetic.yaml"
KEPT_ASIDE = "Kept aside: 12 rows with steps = 3, not in the current study (--all-rows includes them)."


def lr_table(report: str) -> dict[float, int]:
    """lr -> n of the report's "Final loss by learning rate" table."""
    lines = report.split("## Final loss by learning rate\n", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    return {float(cells[0]): int(cells[3]) for cells in (line.strip("|").split(" | ") for line in lines[2:])}


@pytest.mark.usefixtures("ray_local")
def test_a_changed_fixed_value_is_another_definition_counted_apart(tmp_path, cli, monkeypatch):
    res = tmp_path / "res"
    study = res / "synthetic" / "smoke"
    code, _, err = cli("run", SYNTHETIC, "--scale", "smoke", "--results", res, "--no-report")
    assert code == 0, err
    # one definition: nothing kept aside, and --all-rows changes nothing
    code, one, _ = cli("status", res)
    assert code == 0 and "12 trials | 12 completed | 0 failed | 0 diverged | 0 pending" in one
    assert "aside" not in one and "definition" not in one
    assert cli("status", res, "--all-rows")[1] == one
    code, rep, _ = cli("report", study)
    assert code == 0 and "Trials: 12 completed, 0 failed, 0 diverged." in rep and "aside" not in rep
    assert cli("report", study, "--all-rows")[1] == rep

    code, out, err = cli("run", SYNTHETIC, "--scale", "smoke", "--results", res, "--set", "steps=4")
    assert code == 0, err
    assert "synthetic/smoke: 12 trials, 0 already finished, 12 to run" in err
    assert "Trials: 12 completed, 0 failed, 0 diverged." in out and KEPT_ASIDE in out.splitlines()
    manifest = json.loads((study / "study.json").read_text())
    assert len(manifest["trials"]) == 12 and {t["config"]["steps"] for t in manifest["trials"]} == {4}
    assert len(manifest["earlier"]) == 12 and {t["config"]["steps"] for t in manifest["earlier"]} == {3}
    assert {t["workload_version"] for t in manifest["earlier"]} == {"2"}
    assert len(StudyStore(str(study)).rows()) == 24

    code, out, _ = cli("status", res)
    assert code == 0
    assert out.splitlines()[0].startswith(
        "synthetic/smoke: 12 trials | 12 completed | 0 failed | 0 diverged | 0 pending | ")
    assert out.splitlines()[2] == f"  {KEPT_ASIDE}"

    # the report, from a folder with no study file: the definition frozen in study.json
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("report", study)
    assert code == 0
    assert "Trials: 12 completed, 0 failed, 0 diverged." in out and KEPT_ASIDE in out.splitlines()
    assert lr_table(out) == {0.05: 3, 0.1: 3, 0.2: 3, 0.4: 3}
    assert (study / "report.md").read_text().count(KEPT_ASIDE) == 1

    # --all-rows: every row, labelled
    code, out, _ = cli("status", res, "--all-rows")
    lines = out.splitlines()
    assert lines[0].startswith("synthetic/smoke: 24 trials | 24 completed | 0 failed | 0 diverged | 0 pending | ")
    assert lines[2:] == ["  current study: 12 trials | 12 completed | 0 failed | 0 diverged | 0 pending",
                         "  earlier definition (steps = 3): 12 rows | 12 completed | 0 failed | 0 diverged"]
    code, out, _ = cli("report", study, "--all-rows")
    assert code == 0 and "Trials: 24 completed, 0 failed, 0 diverged." in out
    assert ("Included (--all-rows): 12 rows with steps = 3, not in the current study; column `definition` names "
            "each row's definition (`current` or how it differs).") in out.splitlines()
    assert lr_table(out) == {0.05: 6, 0.1: 6, 0.2: 6, 0.4: 6}

    # the Python API tabulates the same rows
    with pytest.warns(UserWarning, match=r"synthetic/smoke: Kept aside: 12 rows with steps = 3, not in the current"):
        result = overnight.load(res)
    rows = result.rows
    assert len(rows) == 12 and set(rows["steps"]) == {4} and "definition" not in rows.columns
    assert result.kept_aside == [f"synthetic/smoke: {KEPT_ASIDE}"]
    assert repr(result) == "StudyResult(synthetic/smoke: 12 trials, 12 completed, 0 failed, 0 diverged, 0 pending)"
    # history and artifacts of the current trials only: 4 steps each, not the earlier definition's 3
    history = result.history()
    assert set(history["trial_id"]) == set(rows["trial_id"]) and set(history["step"]) == {0, 1, 2, 3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = overnight.load(res, all_rows=True)
    rows = result.rows
    assert rows["definition"].value_counts().to_dict() == {"current": 12, "steps = 3": 12}
    assert result.kept_aside == [] and len(result) == 24 and len(result.history()) == 12 * 4 + 12 * 3
    assert set(rows.loc[rows["definition"] == "steps = 3", "steps"]) == {3}


def _write_rows(store: StudyStore, prep, trials: list[Trial]) -> None:
    at = pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime()
    for i, t in enumerate(trials):
        store.write_row({"trial_id": t.trial_id, "study": prep.study.name, "scale": prep.scale, "status": "completed",
                         **t.config, "loss": 1.0 / (i + 1), "wall_s": 0.5, "started_at": at, "finished_at": at},
                        prep.schema)


def test_a_new_workload_version_is_named_from_study_json(tmp_path, cli):
    """Rows of the same configs under another workload version: their trial ids differ, their
    values do not, so the version recorded in study.json names them."""
    prep = prepare(SYNTHETIC, "smoke")
    store = StudyStore(str(tmp_path / "synthetic" / "smoke"))
    freeze(store, prep, schema_to_json(prep.schema))
    _write_rows(store, prep, prep.trials)
    newer = [Trial(trial_id("synthetic", "3", t.config), t.config) for t in prep.trials]
    freeze(store, dataclasses.replace(prep, version="3", trials=newer), schema_to_json(prep.schema))
    _write_rows(store, prep, newer[:9])
    code, out, _ = cli("status", tmp_path)
    assert code == 0
    assert out.splitlines()[0].startswith("synthetic/smoke: 12 trials | 9 completed | 0 failed | 0 diverged | 3 pending")
    assert out.splitlines()[2] == ("  Kept aside: 12 rows with workload version 2, not in the current study "
                                   "(--all-rows includes them).")
    code, out, _ = cli("report", tmp_path)
    assert code == 0 and "Trials: 9 completed, 0 failed, 0 diverged, 3 not finished (partial report)." in out
    code, out, _ = cli("report", tmp_path, "--all-rows")
    assert code == 0 and "Trials: 21 completed, 0 failed, 0 diverged, 3 not finished (partial report)." in out


def _rows(configs: list[dict], prefix: str) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": f"{prefix}{i}", "status": "completed", **c} for i, c in enumerate(configs)])


def test_how_kept_aside_rows_differ_is_computed_from_their_values():
    old = [{"steps": 3, "lr": lr, "seed": s, "tags": [1, 2]} for lr in (0.05, 0.1, 0.4) for s in (0, 1)]
    new = [{"steps": 4, "lr": lr, "seed": s, "tags": [1, 2]} for lr in (0.05, 0.1) for s in (0, 1)]
    rows = pd.concat([_rows(old, "o"), _rows(new, "n")], ignore_index=True)
    rows["tags"] = rows["tags"].map(json.dumps)          # lists are JSON text in a row
    view = D.split(rows, {f"n{i}" for i in range(4)}, new)
    assert len(view.rows) == 4 and view.aside == 6 and view.trials == 4
    assert [(g.label, len(g.rows)) for g in view.groups] == [("steps = 3", 4), ("steps = 3, lr = 0.4", 2)]
    assert view.lines() == ["Kept aside: 6 rows not in the current study (4 with steps = 3; 2 with steps = 3, "
                            "lr = 0.4) (--all-rows includes them)."]
    every = D.split(rows, {f"n{i}" for i in range(4)}, new, all_rows=True)
    assert len(every.rows) == 10 and every.trials == 10
    assert every.rows["definition"].value_counts().to_dict() == {"current": 4, "steps = 3": 4, "steps = 3, lr = 0.4": 2}

    # all values in the study, in another combination; or a current trial's very values
    cur = [{"a": 1, "b": 2}, {"a": 2, "b": 1}]
    rows = _rows(cur + [{"a": 1, "b": 1}, {"a": 1, "b": 2}], "t")
    view = D.split(rows, {"t0", "t1"}, cur)
    assert [g.label for g in view.groups] == ["another combination of the current values", "another workload version"]
    # a missing value (null, NaN) is one value, and an integral float shows as an integer
    rows = _rows([{"a": 1.0, "b": None}, {"a": 3.0, "b": float("nan")}], "t")
    assert [g.label for g in D.split(rows, {"t0"}, [{"a": 1.0, "b": None}]).groups] == ["a = 3"]
    # one definition: nothing to say
    assert D.split(_rows(cur, "t"), {"t0", "t1"}, cur).lines() == []
    assert D.split(pd.DataFrame(), {"t0"}, cur).lines() == []


def test_bad_input_to_all_rows_is_one_line_and_exit_2(tmp_path, cli):
    for args in (("status", tmp_path / "none", "--all-rows"), ("report", tmp_path / "none", "--all-rows"),
                 ("status", tmp_path, "--all-rows=yes"), ("report", tmp_path, tmp_path, tmp_path, "--all-rows")):
        code, out, err = cli(*args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (args, err)
        assert err.startswith("overnight: error: ") and "Traceback" not in err
