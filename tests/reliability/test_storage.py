"""A read-only or full results location: one clear line, exit 2, and the results already there are
left exactly as they were; once the location is usable again the same command finishes the study.

The location is a small tmpfs mounted by the test (needs root, as in CI containers); without
mount rights the read-only case falls back to chmod and the full-disk cases are skipped."""
from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.results.dataset import StudyStore
from tests.conftest import wait_until


def _mount(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True).returncode == 0


def _remount(target: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(target)], check=True, capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs of our own, or None when this process may not mount."""
    target = tmp_path / "mnt"
    mounted = _mount(target, "size=4m")
    yield target if mounted else None
    if mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill(fs: Path) -> Path:
    """Use up every free byte of ``fs``."""
    filler = fs / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def snapshot(root: Path) -> dict[str, str]:
    """Every file a reader sees under ``root`` with its content hash. Dot files are temporaries
    (written, then renamed), which readers skip; a failed write can leave an empty one behind."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def study(tmp_path: Path, lrs: list[float], **fixed) -> Path:
    doc = {"name": "stored", "workload": "synthetic", "metric": "loss", "mode": "min",
           "fixed": {"steps": 2, "work_units": 1, "marker_dir": str(tmp_path / "markers"), **fixed},
           "grid": {"lr": lrs, "seed": [0, 1]}}
    path = tmp_path / "stored.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("overnight: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


pytestmark = pytest.mark.usefixtures("ray_local")


def test_read_only_results_location(tmp_path, small_fs, capsys):
    root = small_fs or tmp_path / "plain"
    res = root / "res"
    assert main(["run", str(study(tmp_path, [0.1, 0.2])), "--results", str(res), "--no-report"]) == 0
    capsys.readouterr()
    before = snapshot(res)
    if small_fs:
        _remount(small_fs, "ro")
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores file modes and this process may not mount a read-only tmpfs")
        for d in [res, *[p for p in res.rglob("*") if p.is_dir()]]:
            d.chmod(0o555)

    bigger = study(tmp_path, [0.1, 0.2, 0.3, 0.4])
    assert main(["run", str(bigger), "--results", str(res), "--no-report"]) == 2
    line = one_error_line(capsys)
    assert "results location is not writable" in line and str(res / "stored" / "fast") in line
    assert ("Read-only file system" if small_fs else "Permission denied") in line
    assert snapshot(res) == before                          # nothing touched

    if small_fs:
        _remount(small_fs, "rw")
    else:
        for d in [res, *[p for p in res.rglob("*") if p.is_dir()]]:
            d.chmod(0o755)
    assert main(["run", str(bigger), "--results", str(res), "--no-report"]) == 0
    rows = StudyStore(str(res / "stored" / "fast")).rows()
    assert len(rows) == 8 and rows["trial_id"].is_unique


def test_full_results_location_at_start(tmp_path, small_fs, capsys):
    if small_fs is None:
        pytest.skip("needs a tmpfs mount (root) to make a full filesystem")
    res = small_fs / "res"
    assert main(["run", str(study(tmp_path, [0.1, 0.2])), "--results", str(res), "--no-report"]) == 0
    capsys.readouterr()
    filler = fill(small_fs)
    before = snapshot(res)

    bigger = study(tmp_path, [0.1, 0.2, 0.3, 0.4])
    assert main(["run", str(bigger), "--results", str(res), "--no-report"]) == 2
    line = one_error_line(capsys)
    assert "results location is not writable: No space left on device" in line
    assert snapshot(res) == before

    filler.unlink()
    assert main(["run", str(bigger), "--results", str(res), "--no-report"]) == 0
    assert len(StudyStore(str(res / "stored" / "fast")).rows()) == 8


@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_results_location_fails_mid_sweep(tmp_path, small_fs, capsys, trouble):
    """The disk fills (or is remounted read-only) while trials run: the sweep stops at once with one
    clear line (no retry storm, no traceback), rows written so far stay readable, and the same
    command finishes the study once the location is usable again."""
    if small_fs is None:
        pytest.skip("needs a tmpfs mount (root) to make a full or read-only filesystem")
    res = small_fs / "res"
    markers = tmp_path / "markers"
    path = study(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], steps=4, sleep_s=0.25)
    store = StudyStore(str(res / "stored" / "fast"))
    result: dict[str, int] = {}
    driver = threading.Thread(target=lambda: result.setdefault("code", main(
        ["run", str(path), "--results", str(res), "--no-report", "--max-concurrent", "2"])))
    driver.start()
    wait_until("two rows", lambda: store.exists("trials") and len(store.finished_ids()) >= 2 or not driver.is_alive())
    starts_before = sum(1 for _ in markers.glob("*.start"))
    if trouble == "full":
        filler = fill(small_fs)
    else:
        # a read-only bind mount over the results directory: new opens fail with EROFS (a remount of
        # the tmpfs itself is refused while trials hold files open for writing)
        subprocess.run(["mount", "--bind", str(res), str(res)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(res)], check=True, capture_output=True)
    driver.join(600)
    assert not driver.is_alive()
    assert result["code"] == 2
    # stopped, not retried trial after trial: beyond the (at most 2) trials that were running, at
    # most a retry each began after the failure; 16 trials with retries would be far more
    started_after = sum(1 for _ in markers.glob("*.start")) - starts_before
    assert started_after <= 4, started_after
    line = one_error_line(capsys)
    reason = "No space left on device" if trouble == "full" else "Read-only file system"
    assert reason in line and "run the same command again" in line, line
    kept = store.finished_ids()
    assert 2 <= len(kept) < 16
    # every row that is there is whole (temporaries are dot files, which readers skip)
    assert len(pd.read_parquet(res / "stored" / "fast" / "trials")) == len(kept)

    if trouble == "full":
        filler.unlink()
    else:
        subprocess.run(["umount", "-l", str(res)], check=True, capture_output=True)
    assert main(["run", str(path), "--results", str(res), "--no-report"]) == 0
    rows = store.rows()
    assert len(rows) == 16 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    ends = {}
    for p in markers.glob("*.end"):
        ends[p.name.split(".")[0]] = ends.get(p.name.split(".")[0], 0) + 1
    assert all(ends[t] == 1 for t in kept)       # rows kept from before were not run again
