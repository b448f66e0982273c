"""examples/char_gpt: a char-level GPT training script that knows nothing of overnight
(`--key=value` overrides, `step N: train loss X, val loss Y` on stdout, ckpt.pt under --out_dir,
`--init_from=resume`) swept unchanged by `workload: command`: its metrics come from its output,
each trial writes into its own checkpoint folder, a killed trial resumes from its own ckpt.pt
through ``resume_args``, and a run whose output never matches fails instead of completing empty.

The script resumes exactly (model, optimizer, step and RNG state are in ckpt.pt), so a trial
killed mid-way and resumed prints the same losses as the script run straight through by hand."""
from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.results.dataset import StudyStore
from orchestrator.run.trial import derive_seed
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "char_gpt"
LINE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)$")
DATA = Path(os.environ.get("OVERNIGHT_DATA", ROOT.parent / "shared" / "data"))


def copy_example(folder: Path, pattern: str | None = None) -> Path:
    """The example in a folder of its own (its working directory, checked for stray files)."""
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLE / "train.py", folder / "train.py")
    doc = yaml.safe_load((EXAMPLE / "study.yaml").read_text())
    if pattern is not None:
        doc["command"]["metrics_from"]["stdout"] = [{"pattern": pattern}]
    (folder / "study.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder / "study.yaml"


def printed(lines: list[str]) -> dict[int, tuple[float, float]]:
    """step -> (train loss, val loss) of the `step N: ...` lines."""
    return {int(m[1]): (float(m[2]), float(m[3])) for m in map(LINE.match, lines) if m}


def stdout_of(store: StudyStore) -> dict[str, list[str]]:
    out = store.artifact("output")
    out = out[out["stream"] == "stdout"].sort_values(["trial_id", "line"])
    return {tid: g["text"].tolist() for tid, g in out.groupby("trial_id")}


def history_of(store: StudyStore, tid: str) -> dict[int, tuple[float, float]]:
    h = store.history()
    h = h[h["trial_id"] == tid].pivot(index="step", columns="metric", values="value")
    return {int(s): (r["train_loss"], r["val_loss"]) for s, r in h.iterrows()}


@pytest.fixture(scope="module")
def smoke(ray_local, tmp_path_factory):
    """The 2 x 2 grid at smoke scale through the CLI, in a copy of the example's folder."""
    base = tmp_path_factory.mktemp("char_gpt")
    study = copy_example(base / "example")
    res = base / "res"
    assert main(["run", str(study), "--scale", "smoke", "--results", str(res), "--no-report"]) == 0
    return study.parent, StudyStore(str(res / "char_gpt" / "smoke"))


def test_rows_have_the_last_printed_val_loss(smoke):
    _, store = smoke
    rows = store.rows()
    assert len(rows) == 4 and set(rows["status"]) == {"completed"} and (rows["attempts"] == 1).all()
    assert sorted(zip(rows["learning_rate"], rows["n_layer"])) == [(0.001, 1), (0.001, 2), (0.003, 1), (0.003, 2)]
    outputs = stdout_of(store)
    for r in rows.itertuples():
        steps = printed(outputs[r.trial_id])
        last = steps[max(steps)]
        assert isinstance(r.val_loss, float) and 0 < r.val_loss < 5
        assert (r.train_loss, r.val_loss) == last          # the exact printed values
    # the settings reached the script: different losses per config, lower with the larger step size
    by = rows.set_index(["learning_rate", "n_layer"])["val_loss"]
    assert by[(0.003, 1)] < by[(0.001, 1)] and by[(0.003, 2)] < by[(0.001, 2)]


def test_the_history_has_every_printed_step(smoke):
    _, store = smoke
    outputs = stdout_of(store)
    for tid, lines in outputs.items():
        steps = printed(lines)
        assert sorted(steps) == [0, 5, 10, 15, 20]          # smoke: max_iters 20, eval_interval 5
        assert history_of(store, tid) == steps


def test_each_trial_writes_only_into_its_own_checkpoint_folder(smoke):
    folder, store = smoke
    outputs = stdout_of(store)
    folders = set()
    for tid, lines in outputs.items():
        saved_to = {line.removeprefix("saving checkpoint to ") for line in lines if line.startswith("saving checkpoint")}
        assert len(saved_to) == 1
        (path,) = saved_to
        assert Path(path).name == "checkpoint" and Path(path).parent.name.startswith(f"overnight-{tid}-")
        folders.add(path)
        assert not any(line.startswith("Resuming") for line in lines)
    assert len(folders) == 4
    # nothing was written in the shared working directory (the example's folder)
    assert sorted(p.name for p in folder.iterdir()) == ["study.yaml", "train.py"]


def _train_process(tid: str) -> int | None:
    """The pid of the trial's train.py (its argv holds its own checkpoint folder)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"train.py") for a in argv) and any(f"overnight-{tid}-".encode() in a for a in argv):
            return int(proc.name)
    return None


def _saved_step(store: StudyStore, tid: str) -> int | None:
    """The step of the ckpt.pt in the trial's saved checkpoint (the results location), if any."""
    import torch

    saved = store.load_checkpoint(tid)
    data = ((saved or {}).get("state") or {}).get("files", {}).get("ckpt.pt")
    return torch.load(io.BytesIO(data), map_location="cpu")["iter_num"] if data else None


def test_a_killed_worker_resumes_from_its_own_checkpoint(ray_local, tmp_path, capsys):
    study = copy_example(tmp_path / "example")
    res = tmp_path / "res"
    store = StudyStore(str(res / "char_gpt" / "smoke"))
    args = ["run", str(study), "--scale", "smoke", "--results", str(res), "--no-report", "--set", "n_layer=[1]",
            "--set", "max_iters=400", "--set", "eval_interval=20"]
    result: dict = {}
    driver = threading.Thread(target=lambda: result.setdefault("code", main(args)))
    driver.start()
    victim = None
    deadline = time.time() + 240
    while victim is None and driver.is_alive() and time.time() < deadline:
        for tid in store.in_flight() if store.exists("checkpoints") else []:
            try:
                step = _saved_step(store, tid)
            except Exception:  # noqa: BLE001 - a checkpoint replaced while read
                continue
            pid = _train_process(tid) if step is not None and 20 <= step <= 300 else None
            if pid is not None:
                parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                os.kill(parent, signal.SIGKILL)   # the Ray worker running the trial; the script dies with it
                victim = (tid, step)
                break
        time.sleep(0.02)
    driver.join(300)
    assert victim, "no trial was caught with a checkpoint at step 20 to 300"
    assert not driver.is_alive() and result["code"] == 0, capsys.readouterr().err[-3000:]
    tid, step = victim
    rows = store.rows().set_index("trial_id")
    assert len(rows) == 2 and set(rows["status"]) == {"completed"}
    assert rows.loc[tid, "attempts"] == 2 and (rows.drop(tid)["attempts"] == 1).all()

    # the second try was started with resume_args and read its own ckpt.pt ...
    lines = stdout_of(store)[tid]
    resumed_from = [line for line in lines if line.startswith("Resuming training from ")]
    assert len(resumed_from) == 1
    ckpt = Path(resumed_from[0].removeprefix("Resuming training from "))
    assert ckpt.name == "ckpt.pt" and ckpt.parent.name == "checkpoint" and ckpt.parent.parent.name.startswith(f"overnight-{tid}-")
    at = int(next(line for line in lines if line.startswith("resumed at step ")).split()[-1])
    assert at >= step
    # ... and carried on from its step, not from 0
    assert min(printed(lines)) == at and max(printed(lines)) == 400

    # every step is in the history once, with exactly the losses of the script run straight through;
    # the steps before `at` were printed by the killed try only: its parsed lines were kept
    config = rows.loc[tid]
    reference = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), f"--out_dir={tmp_path / 'straight'}",
         f"--data_dir={DATA / 'tinyshakespeare'}", f"--seed={derive_seed(tid)}",
         f"--learning_rate={config['learning_rate']}", "--n_layer=1", "--max_iters=400", "--eval_interval=20"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    straight = printed(reference.stdout.splitlines())
    assert sorted(straight) == list(range(0, 401, 20))
    assert history_of(store, tid) == straight
    assert (config["train_loss"], config["val_loss"]) == straight[400]
    assert sorted(p.name for p in study.parent.iterdir()) == ["study.yaml", "train.py"]


def test_a_run_whose_output_never_matches_fails_saying_where_it_looked(ray_local, tmp_path, capsys):
    # nanoGPT's per-iteration line, which this script does not print
    study = copy_example(tmp_path / "example", pattern=r"iter (?P<step>\d+): loss (?P<val_loss>[\d.]+)")
    res = tmp_path / "res"
    code = main(["run", str(study), "--scale", "smoke", "--results", str(res), "--no-report",
                 "--set", "n_layer=[1]", "--set", "learning_rate=[0.003]"])
    err = capsys.readouterr().err
    assert code == 1, err
    rows = StudyStore(str(res / "char_gpt" / "smoke")).rows()
    assert len(rows) == 1 and rows.iloc[0]["status"] == "failed" and rows.iloc[0]["attempts"] == 1
    assert rows.iloc[0]["error"] == ("exited 0 but reported no `val_loss` (looked in: stdout: 1 pattern, "
                                     "0 matching lines; OVERNIGHT_METRICS_FILE: no lines)")
    assert "exited 0 but reported no `val_loss`" in err
    assert rows.iloc[0]["val_loss"] != rows.iloc[0]["val_loss"]   # NaN: no value


def test_the_script_finds_its_data_from_the_environment_and_says_when_it_is_not_there(tmp_path):
    env = {**os.environ, "OVERNIGHT_DATA_ROOT": str(tmp_path)}
    run = subprocess.run([sys.executable, str(EXAMPLE / "train.py"), f"--out_dir={tmp_path}"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (f"no data: {tmp_path / 'tinyshakespeare' / 'input.txt'} does not "
                                                   f"exist (pass --data_dir=DIR, a folder with tinyshakespeare's input.txt)")
