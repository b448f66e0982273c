"""`workload: command` reading a program's metrics from its output and files: the
study's ``command.metrics_from`` patterns and file sources, checked when the study loads; the
trial's own folders as placeholders (``{trial_dir}``, ``cwd: trial``, ``{attempt}``,
``resume_args``); and no ``completed`` row without the study's metric unless
``allow_missing_metric: true`` (then counted in the run summary and the report)."""
from __future__ import annotations

import json
import textwrap
import time
import types
from pathlib import Path

import pytest
import yaml

from orchestrator.run import command as C
from orchestrator.study import command_spec as CS
from orchestrator.results.dataset import StudyStore
from orchestrator.run.protocol import Member
from orchestrator.run.trial import run_trial
from tests.processes import overnight_subprocess

PATTERN = r"step (?P<step>\d+): loss (?P<loss>[\d.naif]+)"


def command_study(**command) -> dict:
    return {"name": "parsed", "workload": "command", "metric": "loss", "mode": "min",
            "command": {"argv": ["{python}", "-c", "print('step 1: loss 0.5')"], **command},
            "params": {"lr": {"type": "float", "default": 0.1}},
            "metrics": {"loss": "float", "acc": "float", "epochs": "int", "ok": "bool", "note": "str"},
            "grid": {"lr": [0.1]}}


# ---- the study file: checked when it loads ------------------------------------------------------
def test_a_bad_regex_is_exit_2_in_one_line_naming_the_file_and_field(tmp_path, write_study):
    path = write_study(command_study(metrics_from={"stdout": [{"pattern": PATTERN}, {"pattern": "loss (?P<loss>[\\d.]+"}]}))
    proc = overnight_subprocess("run", path, "--dry-run")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"overnight: error: {path}: command.metrics_from.stdout.1.pattern: not a regular expression: "
                     f"missing ), unterminated subpattern at position 5"], proc.stderr


@pytest.mark.parametrize("metrics_from, field, words", [
    ({"stdout": [r"loss (?P<los>[\d.]+)"]}, "command.metrics_from.stdout.0.pattern",
     "group 'los' is not a declared metric (did you mean `loss`?)"),
    ({"stderr": [r"epoch (?P<step>\d+)"]}, "command.metrics_from.stderr.0.pattern", "names no metric, only the step"),
    ({"stdout": [r"loss [\d.]+"]}, "command.metrics_from.stdout.0.pattern", "has no named group"),
    ({"stdout": [{"pattern": PATTERN, "phase": "val"}]}, "command.metrics_from.stdout.0.phase", "unknown field"),
    ({"stdot": [PATTERN]}, "command.metrics_from.stdot", "unknown field"),
    ({"csv": {"path": "log.csv", "colums": {"l": "loss"}}}, "command.metrics_from.csv.colums", "unknown field"),
    ({"csv": {"path": "log.csv", "columns": {"l": "lss"}}}, "command.metrics_from.csv.columns.l",
     "'lss' is not a declared metric"),
    ({"jsonl": {"path": "{trail_dir}/m.jsonl"}}, "command.metrics_from.jsonl.path",
     "no parameter 'trail_dir' for the placeholder {trail_dir} (did you mean `trial_dir`?)"),
    ({"tensorboard": {"path": "runs", "tags": {"val/loss": "val_loss"}}}, None,
     "command.metrics_from.tensorboard.tags.val/loss: 'val_loss' is not a declared metric"),
])
def test_metrics_from_is_checked_when_the_study_loads(tmp_path, cli, write_study, metrics_from, field, words):
    code, _, err = cli("run", write_study(command_study(metrics_from=metrics_from)), "--dry-run")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1
    assert (f": {field}: " in err if field else True) and words in err, err


@pytest.mark.parametrize("command, top, words", [
    ({"argv": ["{python}", "t.py", "--out={chekpoint_dir}"]}, {},
     "command.argv.2: no parameter 'chekpoint_dir' for the placeholder {chekpoint_dir} (did you mean `checkpoint_dir`?)"),
    ({"argv": ["t.py"], "env": {"RUN": "{atempt}"}}, {}, "command.env.RUN: no parameter 'atempt'"),
    ({"argv": ["t.py"], "resume_args": ["--from={nope}"]}, {}, "command.resume_args.0: no parameter 'nope'"),
    ({"argv": ["t.py", "--x={lr"]}, {}, "command.argv.1: "),
    ({"argv": ["t.py"], "resume": ["--init_from=resume"]}, {}, "command.resume: unknown field"),
    ({"argv": ["t.py"]}, {"allow_missing_metric": "sometimes"}, "allow_missing_metric: Input should be a valid boolean"),
    ({"argv": ["t.py"]}, {"allow_missing_metric": True, "metric": None}, "allow_missing_metric: the study has no `metric` to miss"),
])
def test_placeholders_and_the_new_keys_are_checked(tmp_path, cli, write_study, command, top, words):
    doc = {**command_study(), **top}
    doc["command"] = command
    code, _, err = cli("run", write_study(doc), "--dry-run")
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_every_builtin_placeholder_and_a_good_source_load(tmp_path, cli, write_study):
    argv = ["{python}", "t.py"] + [f"--{k}={{{k}}}" for k in CS.BUILTINS] + ["--lr={lr}"]
    doc = command_study(argv=argv, cwd="trial", env={"RUN": "{trial_id}-{attempt}"}, resume_args=["--resume"],
                        metrics_from={"stdout": [PATTERN], "stderr": [{"pattern": r"acc=(?P<acc>\S+)"}],
                                      "csv": "{trial_dir}/log.csv", "jsonl": {"path": "m.jsonl", "step": "it"}})
    doc["allow_missing_metric"] = True
    code, out, err = cli("run", write_study(doc), "--dry-run")
    assert code == 0 and out.startswith("1 trials"), err


def test_a_tensorboard_source_without_the_reader_is_exit_2_saying_what_to_install(tmp_path, cli, write_study,
                                                                                  monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    doc = command_study(metrics_from={"tensorboard": {"path": "{trial_dir}/runs", "tags": {"val/loss": "loss"}}})
    code, _, err = cli("run", write_study(doc), "--dry-run")
    assert code == 2 and err.strip().endswith(
        "command.metrics_from.tensorboard: install tensorboard to read event files"), err


# ---- parsing, without a program ------------------------------------------------------------------
TYPES = {"loss": "float", "acc": "float", "epochs": "int", "ok": "bool", "note": "str"}


def parsed(**sources) -> C.Parsed:
    return C.Parsed(CS.MetricsFrom.model_validate(sources), TYPES)


def test_named_groups_become_typed_values_and_the_last_step_wins():
    p = parsed(stdout=[r"step (?P<step>\d+): loss (?P<loss>\S+) epochs (?P<epochs>\S+) ok (?P<ok>\w+) (?P<note>\w+)",
                       r"acc (?P<acc>[\d.]+)"])
    for line in ["booting", "step 0: loss 2.5 epochs 1 ok true warm", "acc 0.25",
                 "step 10: loss 1.25 epochs 2.0 ok False cold", "acc 0.5", "step 20: loss 0.75 epochs 2.5 ok maybe x"]:
        p.line("stdout", line)
    p.line("stderr", "step 30: loss 0.1 epochs 3 ok true late")   # no stderr pattern: not read
    steps = C.merge_steps(p.records)
    assert list(steps) == [0, 10, 20]
    assert steps[0] == {"loss": 2.5, "epochs": 1, "ok": True, "note": "warm", "acc": 0.25}   # acc: step of the line before
    assert steps[10] == {"loss": 1.25, "epochs": 2, "ok": False, "note": "cold", "acc": 0.5}
    assert type(steps[10]["epochs"]) is int and type(steps[0]["loss"]) is float
    # a value that does not convert is left out and said where the metric is looked for
    assert steps[20] == {"loss": 0.75, "note": "x"}
    text = p.looked_in(0)
    assert text.startswith("stdout: 2 patterns, 5 matching lines; OVERNIGHT_METRICS_FILE: no lines; problems: ")
    assert "stdout.0: epochs '2.5' is not a whole number" in text and "stdout.0: ok 'maybe' is not a bool" in text


def test_stderr_patterns_and_steps_counted_when_no_line_has_one():
    p = parsed(stderr=[r"val_loss=(?P<loss>[\d.]+)"])
    for line in ["val_loss=3.5", "warning: slow", "val_loss=2.5", "val_loss=2.0"]:
        p.line("stderr", line)
    p.line("stdout", "val_loss=9.0")
    assert C.merge_steps(p.records) == {0: {"loss": 3.5}, 1: {"loss": 2.5}, 2: {"loss": 2.0}}
    assert p.looked_in(3) == "stderr: 1 pattern, 3 matching lines; OVERNIGHT_METRICS_FILE: 3 lines"


def test_a_resumed_program_repeating_steps_replaces_them_and_the_row_is_the_last_step():
    p = parsed(stdout=[PATTERN])
    for line in ["step 0: loss 4.0", "step 10: loss 3.0", "step 20: loss 2.0"]:   # first try, killed
        p.line("stdout", line)
    again = parsed(stdout=[PATTERN])
    again.restore(p.records)                                                      # the next try
    for line in ["step 10: loss 3.1", "step 20: loss 2.1", "step 30: loss 1.5"]:
        again.line("stdout", line)
    assert C.merge_steps(again.records) == {0: {"loss": 4.0}, 10: {"loss": 3.1}, 20: {"loss": 2.1}, 30: {"loss": 1.5}}
    ctx = types.SimpleNamespace(history=[])
    ctx.report = lambda step, phase=None, **m: ctx.history.append((step, m))
    tails = {"stdout": [], "stderr": []}
    row = C.finish(0, [], again.records, tails, CS.CommandSpec(argv=["x"]), ctx)
    assert row == {"loss": 1.5} and [s for s, _ in ctx.history] == [0, 10, 20, 30]


def test_csv_and_jsonl_sources_map_columns_and_steps(tmp_path):
    (tmp_path / "log.csv").write_text("iter,train/loss,acc,extra\n0,4.5,0.1,x\n5,3.5,,y\n10,2.5,0.3,z\n11,1.")
    (tmp_path / "m.jsonl").write_text('{"loss": 9.0, "epochs": 1}\n\n{"loss": 8.0, "epochs": 2, "ok": true}\nnot json\n')
    p = C.Parsed(CS.MetricsFrom.model_validate({
        "csv": {"path": "log.csv", "columns": {"train/loss": "loss", "acc": "acc"}, "step": "iter"},
        "jsonl": "m.jsonl"}), TYPES, resolve=lambda text: tmp_path / text)
    p.poll()
    csv_steps = C.merge_steps([r for r in p.records if r["source"] == "csv"])
    assert csv_steps == {0: {"loss": 4.5, "acc": 0.1}, 5: {"loss": 3.5}, 10: {"loss": 2.5, "acc": 0.3}}  # 11: torn line
    jsonl = [r for r in p.records if r["source"] == "jsonl"]
    assert C.merge_steps(jsonl) == {0: {"loss": 9.0, "epochs": 1}, 1: {"loss": 8.0, "epochs": 2, "ok": True}}
    n = len(p.records)
    p.poll()
    assert len(p.records) == n                      # read again, unchanged: nothing new
    with (tmp_path / "log.csv").open("a") as f:     # the torn line completed, and a changed value
        f.write("5\n")
    (tmp_path / "m.jsonl").write_text('{"loss": 9.0, "epochs": 1}\n{"loss": 7.5, "epochs": 2, "ok": true}\n')
    p.poll()
    assert [{k: v for k, v in r.items()} for r in p.records[n:]] == [
        {"source": "csv", "step": 11, "loss": 1.5}, {"source": "jsonl", "step": 1, "loss": 7.5}]
    text = p.looked_in(0)
    assert f"csv {tmp_path / 'log.csv'}: 4 rows" in text and f"jsonl {tmp_path / 'm.jsonl'}: 2 rows" in text


def test_a_named_step_column_that_is_missing_is_said(tmp_path):
    (tmp_path / "log.csv").write_text("epoch,loss\n0,1.0\n")
    p = C.Parsed(CS.MetricsFrom.model_validate({"csv": {"path": "log.csv", "step": "iter"}}), TYPES,
                 resolve=lambda text: tmp_path / text)
    p.poll()
    assert p.records == [] and "no column 'iter' for the step" in p.looked_in(0)
    missing = C.Parsed(CS.MetricsFrom.model_validate({"csv": "nowhere.csv"}), TYPES, resolve=lambda t: tmp_path / t)
    missing.poll()
    assert f"csv {tmp_path / 'nowhere.csv'}: not found" in missing.looked_in(0)


def _events(folder: Path, scalars: dict) -> None:
    """Real event files, written by tensorboardX (installed with Ray)."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(folder)) as w:
        for tag, points in scalars.items():
            for step, value in points:
                w.add_scalar(tag, value, step)


def test_tensorboard_tags_map_to_metrics_over_every_run_folder(tmp_path):
    """Two run folders of real event files, read with tensorboard's EventAccumulator (a test
    dependency): the mapped tags become metrics at their steps, the unmapped ones are ignored."""
    _events(tmp_path / "runs" / "a", {"val/loss": [(0, 3.0), (10, 2.0)], "lr": [(0, 0.1)]})
    _events(tmp_path / "runs" / "b", {"val/loss": [(10, 1.75), (20, 1.5)], "epoch": [(20, 2.0)]})
    p = C.Parsed(CS.MetricsFrom.model_validate({"tensorboard": {"path": "runs", "tags": {"val/loss": "loss",
                                                                                      "epoch": "epochs"}}}),
                 TYPES, resolve=lambda text: tmp_path / text)
    p.poll()
    assert C.merge_steps(p.records) == {0: {"loss": 3.0}, 10: {"loss": 1.75}, 20: {"loss": 1.5, "epochs": 2}}
    assert f"tensorboard {tmp_path / 'runs'}: 5 scalars of the mapped tags" in p.looked_in(0)


# ---- a function workload without the study's metric ---------------------------------------------
def test_a_function_workload_that_returns_no_primary_metric_is_failed(tmp_path):
    common = {"study": "s", "scale": "fast", "results": str(tmp_path / "res"), "stage_cache": str(tmp_path / "cache"),
              "data_root": str(tmp_path), "metric": "loss", "max_failures": 0, "workload":
              "tests.orchestrator.toy_workloads:Undeclared", "config": {"x": 2.0}}
    row = run_trial(Member(**common, trial_id="aaaa0001"))
    assert row["status"] == "failed" and row["score"] == 4.0
    assert row["error"] == ("returned no `loss` (the study's metric; set allow_missing_metric: true to keep such "
                            "rows as completed)")
    row = run_trial(Member(**common, trial_id="aaaa0002", allow_missing_metric=True))
    assert row["status"] == "completed" and row["error"] == ""
    row = run_trial(Member(**{**common, "metric": "score"}, trial_id="aaaa0003"))
    assert row["status"] == "completed" and row["score"] == 4.0


# ---- through Ray: a program's own folders, its output and files, its attempts --------------------
EMIT = textwrap.dedent('''
    import json, os, sys
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    mode, attempt = args["mode"], int(args["attempt"])
    ckpt = os.path.join(args["ckpt"], "first_argv.json")
    print("cwd", os.getcwd(), "trial_dir", args["trial_dir"], "env", os.environ["RUN_TAG"])
    print("argv", json.dumps(sys.argv[1:]))
    if os.path.exists(ckpt):
        print("first argv", open(ckpt).read())
    open("scratch.txt", "w").write(mode)            # in the working directory
    if mode == "stdout":
        for step, loss in [(0, 2.0), (1, 1.0), (2, 0.5)]:
            print(f"step {step}: loss {loss}")
    elif mode == "stderr":
        print("acc=0.75 loss=0.25", file=sys.stderr)
    elif mode == "files":
        with open(os.path.join(args["trial_dir"], "log.csv"), "w") as f:
            f.write("iter,train_loss\\n0,3.0\\n10,1.25\\n")
        with open("m.jsonl", "w") as f:
            f.write(json.dumps({"step": 10, "acc": 0.5, "epochs": 3}) + "\\n")
    elif mode in ("crash_saved", "crash_empty") and attempt == 1:
        if mode == "crash_saved":
            open(ckpt, "w").write(json.dumps(sys.argv[1:]))
        sys.exit(3)
    elif mode in ("crash_saved", "crash_empty"):
        print(f"step 7: loss {attempt / 10}")
''')


def emit_study(tmp_path: Path, **top) -> Path:
    folder = tmp_path / "study"
    folder.mkdir(exist_ok=True)
    (folder / "emit.py").write_text(EMIT)
    doc = {"name": "emit", "workload": "command", "metric": "loss", "mode": "min", "max_failures": 1,
           "command": {"argv": ["{python}", "{study_dir}/emit.py", "--mode={mode}", "--attempt={attempt}",
                                "--trial_dir={trial_dir}", "--ckpt={checkpoint_dir}"],
                       "cwd": "trial", "env": {"RUN_TAG": "{trial_id}/{attempt}"}, "resume_args": ["--resumed=yes"],
                       "metrics_from": {"stdout": [PATTERN], "stderr": [r"acc=(?P<acc>[\d.]+) loss=(?P<loss>[\d.]+)"],
                                        "csv": {"path": "{trial_dir}/log.csv", "columns": {"train_loss": "loss"},
                                                "step": "iter"},
                                        "jsonl": "m.jsonl"}},
           "params": {"mode": {"type": "str", "default": "stdout"}},
           "metrics": {"loss": "float", "acc": "float", "epochs": "int"},
           "grid": {"mode": ["stdout", "stderr", "files", "crash_saved", "crash_empty", "silent"]}, **top}
    path = folder / "emit.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.usefixtures("ray_local")
def test_a_command_reads_its_output_and_files_in_its_own_folders(tmp_path, cli):
    path = emit_study(tmp_path)
    res = tmp_path / "res"
    code, _, err = cli("run", path, "--results", res, "--no-report", "--max-concurrent", "2")
    assert code == 1, err
    store = StudyStore(str(res / "emit" / "fast"))
    rows = store.rows().set_index("mode")
    out = store.artifact("output").merge(store.rows()[["trial_id", "mode"]])
    hist = store.history().merge(store.rows()[["trial_id", "mode"]])

    def lines(mode: str) -> list[str]:
        return out[(out["mode"] == mode) & (out["stream"] == "stdout")].sort_values("line")["text"].tolist()

    def history(mode: str) -> dict[int, dict[str, float]]:
        h = hist[hist["mode"] == mode]
        return {int(s): dict(zip(g["metric"], g["value"])) for s, g in h.groupby("step")}

    # stdout: every printed step in the history, the last one in the row
    assert rows.loc["stdout", "status"] == "completed" and rows.loc["stdout", "loss"] == 0.5
    assert history("stdout") == {0: {"loss": 2.0}, 1: {"loss": 1.0}, 2: {"loss": 0.5}}
    # stderr
    assert rows.loc["stderr", "status"] == "completed"
    assert (rows.loc["stderr", "loss"], rows.loc["stderr", "acc"]) == (0.25, 0.75)
    # a CSV in {trial_dir} (a column mapped, its own step column) and JSON lines relative to cwd: trial
    assert rows.loc["files", "status"] == "completed"
    assert (rows.loc["files", "loss"], rows.loc["files", "acc"], rows.loc["files", "epochs"]) == (1.25, 0.5, 3)
    assert history("files") == {0: {"loss": 3.0}, 10: {"loss": 1.25, "acc": 0.5, "epochs": 3.0}}
    # cwd: trial is {trial_dir}, a folder of each trial's own; nothing was written beside the study
    cwds = {}
    for mode in ("stdout", "stderr", "files"):
        first = lines(mode)[0].split()
        assert first[0] == "cwd" and first[1] == first[3] and Path(first[1]).name == "trial"
        assert first[5] == f"{rows.loc[mode, 'trial_id']}/1"           # env: {trial_id}/{attempt}
        cwds[mode] = first[1]
        assert not Path(first[1]).exists()                                # removed with the try
    assert len(set(cwds.values())) == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["emit.py", "emit.yaml"]
    # a retry with files in its checkpoint folder gets resume_args; {attempt} counts the tries
    saved = rows.loc["crash_saved"]
    assert saved["status"] == "completed" and saved["attempts"] == 2 and saved["loss"] == 0.2
    argv = json.loads(lines("crash_saved")[1].removeprefix("argv "))
    first_argv = json.loads(lines("crash_saved")[2].removeprefix("first argv "))
    assert "--attempt=2" in argv and argv[-1] == "--resumed=yes"
    assert "--attempt=1" in first_argv and "--resumed=yes" not in first_argv
    assert lines("crash_saved")[0].split()[5] == f"{saved['trial_id']}/2"
    # ... and none when the first try left the folder empty
    empty = rows.loc["crash_empty"]
    assert empty["status"] == "completed" and empty["attempts"] == 2
    assert "--resumed=yes" not in json.loads(lines("crash_empty")[1].removeprefix("argv "))
    # exit 0 without the study's metric: failed, saying where it looked
    silent = rows.loc["silent"]
    assert silent["status"] == "failed" and silent["attempts"] == 1
    trial_dir = lines("silent")[0].split()[3]
    assert silent["error"] == (
        "exited 0 but reported no `loss` (looked in: stdout: 1 pattern, 0 matching lines; stderr: 1 pattern, "
        f"0 matching lines; csv {trial_dir}/log.csv: not found; jsonl {trial_dir}/m.jsonl: not found; "
        "OVERNIGHT_METRICS_FILE: no lines)")
    assert "failed" in err and "exited 0 but reported no `loss`" in err


@pytest.mark.usefixtures("ray_local")
def test_allow_missing_metric_keeps_the_row_and_the_summary_and_report_count_it(tmp_path, cli):
    path = emit_study(tmp_path, allow_missing_metric=True, grid={"mode": ["stdout", "silent"]})
    res = tmp_path / "res"
    code, out, err = cli("run", path, "--results", res)
    assert code == 0, err
    rows = StudyStore(str(res / "emit" / "fast")).rows().set_index("mode")
    assert set(rows["status"]) == {"completed"} and rows.loc["silent", "loss"] != rows.loc["silent", "loss"]  # NaN
    assert "emit/fast: 2 completed (1 without `loss`), 0 failed" in err
    assert ("Without the metric: 1 of 2 completed rows have no `loss` (allow_missing_metric: true)." in out)
    assert "Without the metric" in (res / "emit" / "fast" / "report.md").read_text()


def test_a_shared_working_directory_is_said_once_at_the_start(tmp_path, cli, monkeypatch):
    from orchestrator.run.launch import shared_cwd_note
    from orchestrator.run.prepare import prepare

    doc = command_study(argv=["{python}", "train.py", "--lr={lr}"])
    doc["grid"] = {"lr": [0.1, 0.2]}
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(doc))
    note = shared_cwd_note(prepare(path, "fast"), 2)
    assert note.startswith(f"note: the trials run at the same time in one working directory, {tmp_path}: ")
    assert "{checkpoint_dir}" in note and "{trial_dir}" in note and "cwd: trial" in note
    assert shared_cwd_note(prepare(path, "fast"), 2, max_concurrent=1) is None
    assert shared_cwd_note(prepare(path, "fast"), 1) is None
    doc["command"]["argv"].append("--out_dir={checkpoint_dir}")
    path.write_text(yaml.safe_dump(doc))
    assert shared_cwd_note(prepare(path, "fast"), 2) is None
    doc["command"]["argv"].pop()
    doc["command"]["cwd"] = "trial"
    path.write_text(yaml.safe_dump(doc))
    assert shared_cwd_note(prepare(path, "fast"), 2) is None


# ---- the checkpoint folder is saved only when settled ---------------------------------------------
class SavingContext:
    def __init__(self):
        self.saved: list = []

    def save_checkpoint(self, state):
        self.saved.append(state)


def test_a_checkpoint_written_in_place_is_saved_only_once_settled(tmp_path):
    """While the program runs, a checkpoint file written within the last QUIET_S is not saved:
    the last settled copy is kept (a half-written ckpt.pt must never be what a resume reads). At
    the end the folder is saved as it is."""
    files = C.TrialFiles(tmp_path / "work")
    ctx = SavingContext()
    ckpt = files.checkpoint_dir / "ckpt.pt"
    ckpt.write_bytes(b"step 10")
    assert files.sync(ctx, final=False) is False     # just written: not settled, nothing of it saved
    assert all(s["files"] == {} for s in ctx.saved)
    time.sleep(C.QUIET_S * 1.5)
    assert files.sync(ctx, final=False) is True       # quiet since: settled, saved
    assert ctx.saved[-1]["files"] == {"ckpt.pt": b"step 10"}
    ckpt.write_bytes(b"step 20 (half")               # being rewritten in place
    files.metrics_file.write_text('{"step": 20, "loss": 1.5}\n')
    assert files.sync(ctx, final=False) is False      # the metrics line is saved, with the settled checkpoint
    assert ctx.saved[-1]["files"] == {"ckpt.pt": b"step 10"}
    assert ctx.saved[-1]["metrics"] == b'{"step": 20, "loss": 1.5}\n'
    ckpt.write_bytes(b"step 20 (whole)")
    files.sync(ctx, final=True)                       # the program has exited: taken as it is
    assert ctx.saved[-1]["files"] == {"ckpt.pt": b"step 20 (whole)"}
    n = len(ctx.saved)
    time.sleep(C.QUIET_S * 1.5)
    files.sync(ctx, final=False)
    assert len(ctx.saved) == n                        # nothing changed: nothing saved again
