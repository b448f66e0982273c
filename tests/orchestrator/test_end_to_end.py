"""End to end on a local Ray (one instance shared by these tests): runs, resume, dedup, failures."""
from __future__ import annotations

import multiprocessing as mp
import re
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.results.dataset import StudyStore

pytestmark = pytest.mark.usefixtures("ray_local")


def markers(marker_dir: Path, kind: str) -> Counter:
    """How many executions of each trial started / finished."""
    return Counter(p.name.split(".")[0] for p in marker_dir.glob(f"*.{kind}")) if marker_dir.exists() else Counter()


def synthetic(tmp_path, **grid):
    return {
        "name": "e2e", "workload": "synthetic", "metric": "loss", "mode": "min", "max_failures": 1,
        "fixed": {"steps": 3, "work_units": 1, "marker_dir": str(tmp_path / "markers")},
        "grid": grid or {"lr": [0.1, 0.2], "seed": [0, 1, 2]},
        "report": [{"title": "Loss by lr", "by": ["lr"], "values": ["loss"], "stats": ["mean", "n"]},
                   {"title": "Best", "best": {"metric": "loss", "mode": "min"}, "columns": ["lr", "seed", "loss"]}],
    }


def test_run_writes_rows_history_report_and_is_idempotent(tmp_path, write_study, cli):
    path = write_study(synthetic(tmp_path))
    res = tmp_path / "res"
    code, out, err = cli("run", path, "--results", res, "--scale", "fast")
    assert code == 0, err
    st = StudyStore(str(res / "e2e" / "fast"))
    rows = st.rows()
    assert len(rows) == 6 and rows["trial_id"].is_unique
    assert set(rows["status"]) == {"completed"}
    assert {"trial_id", "study", "scale", "status", "lr", "seed", "steps", "loss", "started_at", "finished_at",
            "wall_s", "host", "device", "attempts", "error"} <= set(rows.columns)
    assert (rows["scale"] == "fast").all() and (rows["device"] == "cpu").all()
    # loss follows the workload's recurrence: larger lr decays faster
    by_lr = rows.groupby("lr")["loss"].mean()
    assert by_lr[0.2] < by_lr[0.1]
    hist = st.history()
    assert len(hist) == 6 * 3 and set(hist.groupby("trial_id")["step"].max()) == {2}
    assert "## Loss by lr" in out and "| 0.1 |" in out and (res / "e2e" / "fast" / "report.md").exists()
    assert "6/6 finished" in err
    manifest = st.manifest()
    assert len(manifest["trials"]) == 6 and manifest["study"]["name"] == "e2e"

    # the same command again runs nothing
    code, out, err = cli("run", path, "--results", res, "--scale", "fast")
    assert code == 0
    assert "6 already finished, 0 to run" in err
    assert set(markers(tmp_path / "markers", "start").values()) == {1}


def test_grid_extension_runs_only_new_trials(tmp_path, write_study, cli):
    res = tmp_path / "res"
    cli("run", write_study(synthetic(tmp_path, lr=[0.1, 0.2])), "--results", res)
    assert sum(markers(tmp_path / "markers", "end").values()) == 2
    code, _, err = cli("run", write_study(synthetic(tmp_path, lr=[0.1, 0.2, 0.3, 0.4])), "--results", res)
    assert code == 0, err
    assert "2 already finished, 2 to run" in err
    ends = markers(tmp_path / "markers", "end")
    assert sum(ends.values()) == 4 and set(ends.values()) == {1}
    assert len(StudyStore(str(res / "e2e" / "fast")).rows()) == 4


def test_failures_diverged_and_crashes(tmp_path, write_study, cli):
    doc = synthetic(tmp_path, fail=["none", "raise", "nan", "crash"])
    doc["fixed"]["steps"] = 4
    path = write_study(doc)
    res = tmp_path / "res"
    code, out, err = cli("run", path, "--results", res)
    assert code == 1  # some trials failed
    rows = StudyStore(str(res / "e2e" / "fast")).rows().set_index("fail")
    assert rows.loc["none", "status"] == "completed"
    assert rows.loc["raise", "status"] == "failed"
    assert "ValueError: synthetic failure at step 2" in rows.loc["raise", "error"]
    assert rows.loc["raise", "attempts"] == 2  # max_failures=1: one retry, then a failed row
    assert rows.loc["nan", "status"] == "diverged" and "nan" in rows.loc["nan", "error"]
    assert rows.loc["nan", "diverged_step"] == 2
    # the process died once (os._exit); Ray retried it and it resumed from its checkpoint
    assert rows.loc["crash", "status"] == "completed"
    assert rows.loc["crash", "attempts"] == 2 and rows.loc["crash", "resumed_from"] == 2
    assert "failed" in err and "synthetic failure" in err

    # status without Ray, then --retry-failed re-runs only the failed trial
    code, out, _ = cli("status", res)
    assert code == 1
    assert "4 trials | 2 completed | 1 failed | 1 diverged | 0 pending" in out
    starts_before = markers(tmp_path / "markers", "start")
    code, _, err = cli("run", path, "--results", res, "--retry-failed")
    assert code == 1
    delta = markers(tmp_path / "markers", "start") - starts_before
    failed_id = rows.loc["raise", "trial_id"]
    assert delta == Counter({failed_id: 2})


def test_report_command_and_out_file(tmp_path, write_study, cli):
    res = tmp_path / "res"
    cli("run", write_study(synthetic(tmp_path, lr=[0.1, 0.4], seed=[0])), "--results", res, "--no-report")
    assert not (res / "e2e" / "fast" / "report.md").exists()
    code, out, _ = cli("report", res, "--out", tmp_path / "r.md")
    assert code == 0
    assert (tmp_path / "r.md").read_text() == out
    assert "# e2e — fast scale" in out and "Trials: 2 completed, 0 failed" in out
    best = out.split("## Best")[1]
    assert "| 0.4 |" in best  # lr 0.4 decays fastest, so it has the lowest loss


def _hold(path, ready, release):
    with StudyStore(path).lock():
        ready.set()
        release.wait(30)


def test_second_driver_is_refused(tmp_path, write_study, cli):
    res = tmp_path / "res"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(res / "e2e" / "fast"), ready, release))
    p.start()
    try:
        assert ready.wait(30)
        code, _, err = cli("run", write_study(synthetic(tmp_path)), "--results", res)
        assert code == 2
        assert "another overnight driver is running" in err and len(err.strip().splitlines()) == 1
    finally:
        release.set()
        p.join()
    assert not (res / "e2e" / "fast" / "trials").exists()


def test_resources_beyond_the_cluster_fail_fast(tmp_path, write_study, cli):
    doc = synthetic(tmp_path)
    doc["resources"] = {"cpu": 1, "gpu": 1}
    code, _, err = cli("run", write_study(doc), "--results", tmp_path / "res")
    assert code == 2
    assert "needs GPU=1 but the Ray cluster has 0" in err


def test_report_out_file_carries_its_plots_beside_it(tmp_path, write_study, cli):
    """A report written with --out is meant to be pasted elsewhere: its plots are copied into a
    folder named after the file and linked relative to it (the printed report links the results)."""
    study = synthetic(tmp_path, lr=[0.1, 0.4], seed=[0, 1])
    study["report"].append({"plot": "bar", "title": "Loss by lr", "x": "lr", "y": "loss"})
    res = tmp_path / "res"
    cli("run", write_study(study), "--results", res, "--no-report")
    out_file = tmp_path / "docs" / "new" / "e2e_fast.md"        # parent folders do not exist yet
    code, out, _ = cli("report", res, "--out", out_file)
    assert code == 0
    text = out_file.read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert links and all(link.startswith("e2e_fast/") for link in links)
    for link in links:
        assert (out_file.parent / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = re.findall(r"!\[[^]]*\]\(([^)]+)\)", out)
    assert [Path(p).name for p in printed] == [Path(p).name for p in links]
    assert all(Path(p).exists() and "res" in Path(p).parts for p in printed)
    assert re.sub(r"\]\([^)]+\)", "]()", text) == re.sub(r"\]\([^)]+\)", "]()", out)
