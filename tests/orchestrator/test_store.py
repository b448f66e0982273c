"""Results store: atomic part files, typed rows, the driver lock, the stage cache."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import pandas as pd
import pyarrow as pa
import pytest

from orchestrator.run.cache import StageCache
from orchestrator.errors import LockedError, UserError
from orchestrator.results.dataset import StudyStore, parquet_part
from orchestrator.results.filesystem import LocalFilesystem, ObjectStoreFilesystem, filesystem
from orchestrator.results.lock import boot_id, pid_alive, pid_started
from orchestrator.results.rows import utcnow


def row(tid: str, **extra):
    now = utcnow()
    return {"trial_id": tid, "study": "s", "scale": "smoke", "status": "completed", "lr": 0.1,
            "hidden": [256, 128], "started_at": now, "finished_at": now, "wall_s": 1.5, "host": "h",
            "device": "cpu", "attempts": 1, "error": "", **extra}


def test_a_part_is_read_from_arrows_own_copy_of_the_bytes():
    # a reader over the caller's buffer is what a pool thread may free during interpreter exit
    # (a Ctrl-C then aborted instead of exiting 130); the copy leaves nothing of Python's to free
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"trial_id": ["a", "b"], "loss": [0.5, 0.25]}), sink)
    data = bytearray(sink.getvalue())
    part = parquet_part(data)
    data[:] = bytes(len(data))  # the caller reuses its buffer
    assert part.read(use_threads=False).to_pydict() == {"trial_id": ["a", "b"], "loss": [0.5, 0.25]}


def test_rows_round_trip_with_types(tmp_path):
    st = StudyStore(str(tmp_path))
    st.write_row(row("a", loss=0.5, ok=True))
    st.write_row(row("b", loss=0.25, ok=False))
    df = st.rows().sort_values("trial_id")
    assert list(df["trial_id"]) == ["a", "b"]
    assert df["loss"].tolist() == [0.5, 0.25]
    assert df["hidden"].tolist() == ["[256, 128]", "[256, 128]"]  # lists stored as JSON text
    assert str(df["attempts"].dtype) == "int64"
    assert df["ok"].dtype == bool
    assert df["started_at"].dt.tz is not None
    assert st.finished_ids() == {"a", "b"}


def test_half_written_part_file_is_never_read(tmp_path, monkeypatch):
    st = StudyStore(str(tmp_path))
    st.write_row(row("a", loss=0.5))
    # a crash between writing and renaming leaves only a dot-temporary: readers must skip it
    real_replace = os.replace

    def crash(src, dst):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        st.write_row(row("b", loss=0.25))
    monkeypatch.setattr(os, "replace", real_replace)
    # an interrupted write removes its temporary and never publishes the final name
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == ["a.parquet"]
    # a SIGKILL mid-write cannot clean up: it leaves a truncated temporary, which readers skip
    (tmp_path / "trials" / ".b.parquet.1234abcd.tmp").write_bytes(b"PAR1\x00\x01")
    assert st.finished_ids() == {"a"}
    assert st.rows()["trial_id"].tolist() == ["a"]


def test_history_and_artifacts(tmp_path):
    st = StudyStore(str(tmp_path))
    st.write_history("a", [{"step": 0, "loss": 1.0, "phase": "float"}, {"step": 1, "loss": 0.5, "acc": 0.25}])
    st.write_artifact("per_layer", "a", [{"layer": 0, "gamma": 0.9}, {"layer": 1, "gamma": 0.7}])
    st.write_artifact("per_layer", "b", pd.DataFrame({"layer": [0], "gamma": [0.1]}))
    h = st.history()  # long: one row per (step, metric)
    assert list(h.columns) == ["trial_id", "step", "time", "phase", "metric", "value"]
    assert h[["step", "metric", "value"]].values.tolist() == [[0, "loss", 1.0], [1, "loss", 0.5], [1, "acc", 0.25]]
    assert h["phase"].tolist()[0] == "float" and h["phase"].isna().tolist()[1:] == [True, True]
    assert set(h["trial_id"]) == {"a"}
    art = st.artifact("per_layer").sort_values(["trial_id", "layer"])
    assert art[["trial_id", "layer", "gamma"]].values.tolist() == [["a", 0, 0.9], ["a", 1, 0.7], ["b", 0, 0.1]]
    with pytest.raises(ValueError):
        st.write_artifact("../x", "a", [])


def test_checkpoint_and_counters(tmp_path):
    st = StudyStore(str(tmp_path))
    assert st.load_checkpoint("t") is None
    st.save_checkpoint("t", {"step": 3})
    assert st.load_checkpoint("t") == {"step": 3}
    assert [st.bump("t", "attempts") for _ in range(3)] == [1, 2, 3]
    assert st.in_flight() == ["t"]
    st.clear_checkpoint("t")
    assert st.load_checkpoint("t") is None and st.in_flight() == []


def _hold_lock(path, ready, release):
    st = StudyStore(path)
    with st.lock():
        ready.set()
        release.wait(20)


def test_lock_refuses_a_second_driver_and_dies_with_its_holder(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    p.start()
    assert ready.wait(30)
    st = StudyStore(str(tmp_path))
    with pytest.raises(LockedError, match="another overnight driver is running"):
        st.lock().acquire()
    assert st.lock().holder() is not None
    p.kill()  # SIGKILL: the OS releases the flock
    p.join()
    assert st.lock().holder() is None
    with st.lock():
        pass


def test_unwritable_location_is_a_clear_user_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # running as root: simulate with a file in the way instead
            ro.chmod(0o700)
            blocker = tmp_path / "blocker"
            blocker.write_text("not a directory")
            target = blocker / "results"
        else:
            target = ro / "results"
        with pytest.raises(UserError, match="not writable"):
            StudyStore(str(target)).check_writable()
    finally:
        ro.chmod(0o700)


def _build_stage(location, key, counter_dir, barrier):
    cache = StageCache(location)
    barrier.wait(30)

    def build():
        (counter_dir / f"build-{os.getpid()}").touch()
        # still building when the other three ask for the same key (an event, not a sleep)
        arrived = counter_dir.parent / "arrived"
        deadline = time.monotonic() + 60
        while sum(1 for _ in arrived.iterdir()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"weights": list(range(1000))}

    (counter_dir.parent / "arrived" / str(os.getpid())).touch()

    value = cache.get(key, build)
    assert value["weights"][-1] == 999


def test_stage_cache_builds_once_under_concurrency(tmp_path):
    ctx = mp.get_context("fork")
    counter = tmp_path / "builds"
    counter.mkdir()
    (tmp_path / "arrived").mkdir()
    barrier = ctx.Barrier(4)
    key = {"stage": "float_backbone", "seed": 42, "arch": [64, 2]}
    procs = [ctx.Process(target=_build_stage, args=(str(tmp_path / "cache"), key, counter, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(list(counter.iterdir())) == 1
    assert StageCache(str(tmp_path / "cache")).load(key) == {"weights": list(range(1000))}
    assert StageCache(str(tmp_path / "cache")).load({**key, "seed": 1}) is None


def test_uri_query_stays_at_the_end_of_every_location():
    from orchestrator.results.layout import join, stage_cache_location, study_location

    base = "s3://bucket/prefix/?endpoint_override=127.0.0.1:9000&scheme=http"
    assert study_location(base, "st", "fast") == "s3://bucket/prefix/st/fast?endpoint_override=127.0.0.1:9000&scheme=http"
    assert stage_cache_location(base).startswith("s3://bucket/prefix/_cache/stages?endpoint_override=")
    assert join("s3://b/x", "a", "b") == "s3://b/x/a/b" and join("/tmp/a", "b") == "/tmp/a/b"


def test_every_location_form_gets_its_filesystem(tmp_path, monkeypatch):
    """A local path in any spelling (relative, ~, file://, and the local:// that pyarrow opens on the
    local disk) is a local directory; any other URI an object store, its query kept in the location."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    local = {str(tmp_path / "a" / ".." / "b"): tmp_path / "b", "rel/x": tmp_path / "rel" / "x",
             "~/x": tmp_path / "home" / "x", f"file://{tmp_path}/y": tmp_path / "y",
             f"local://{tmp_path}/z": tmp_path / "z"}
    for where, base in local.items():
        fs = filesystem(where)
        assert type(fs) is LocalFilesystem and fs.location == where and fs.base == str(base), where
        assert fs.local_path("trials/t.parquet") == base / "trials" / "t.parquet"
    uri = "s3://bucket/p?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1"
    for where, base in {uri: "bucket/p", "mock:///m": "m"}.items():
        fs = filesystem(where)
        assert type(fs) is ObjectStoreFilesystem and fs.location == where and fs.base == base, where
        assert fs.path("trials/t.parquet") == f"{base}/trials/t.parquet"
    with pytest.raises(UserError, match="cannot open results location"):
        filesystem("nosuch://x")


def test_a_pid_is_alive_only_as_the_process_that_started_then():
    import subprocess
    import sys

    me = os.getpid()
    assert pid_alive(me) and pid_alive(me, pid_started(me)) and pid_started(me)
    assert not pid_alive(me, "1")            # the same pid, started at another time: another process
    assert not pid_alive(0) and not pid_alive(-1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid) and pid_started(child.pid) == ""
    assert boot_id() == boot_id() != ""
