"""The one-driver lock on an object store (``.lock.json`` with a heartbeat), against a real
S3-compatible server on loopback. A lock left by a dead driver must not strand anyone: on the
same host a dead pid is taken over at once, from another host an expired heartbeat is; a refusal
says how old the heartbeat is and when the lock expires."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from orchestrator.errors import LockedError
from orchestrator.results.dataset import StudyStore
from orchestrator.results.lock import HeartbeatLock

HOLD = """
import sys
from orchestrator.results.dataset import StudyStore
lock = StudyStore(sys.argv[1]).lock()
lock.acquire()
print("locked", flush=True)
sys.stdin.read()      # hold it until stdin closes (or a SIGKILL)
lock.release()
"""


@pytest.fixture
def store(object_store):
    return StudyStore(object_store.uri() + "/study/fast")


def lock_file(store: StudyStore) -> dict:
    return store.read_json(".lock.json")


def plant(store: StudyStore, **fields) -> dict:
    """A lock.json as another driver would have left it."""
    doc = {"host": socket.gethostname(), "pid": 1, "since": "2026-01-01T00:00:00+00:00", "pid_started": "",
           "boot_id": "", "token": "someone-else", "beat": time.time(), "stale_after_s": 120.0, **fields}
    store.write_json(".lock.json", doc)
    return doc


def hold_in_subprocess(store: StudyStore) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, store.location], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"   # the event, not a sleep
    return proc


def test_acquire_writes_a_claim_and_release_removes_it(store):
    with store.lock() as lock:
        doc = lock_file(store)
        assert doc["host"] == socket.gethostname() and doc["pid"] == os.getpid()
        assert doc["token"] == lock._token and abs(doc["beat"] - time.time()) < 60
        assert store.lock().holder() is not None
    assert not store.exists(".lock.json")
    assert store.lock().holder() is None


def test_a_second_driver_is_refused_while_the_first_lives(store):
    proc = hold_in_subprocess(store)
    try:
        with pytest.raises(LockedError) as err:
            store.lock().acquire()
        msg = str(err.value)
        assert f"another overnight driver is running on this results location (host {socket.gethostname()}, " \
               f"pid {proc.pid}, last heartbeat " in msg
        assert "as soon as that process exits" in msg and store.location in msg
        assert f"\"pid\": {proc.pid}" in store.lock().holder()
    finally:
        proc.stdin.close()
        assert proc.wait(30) == 0
    assert not store.exists(".lock.json")        # released on a clean exit


def test_a_sigkilled_drivers_lock_is_taken_over_at_once_on_the_same_host(store, capsys):
    proc = hold_in_subprocess(store)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)                                 # reaped: that pid is gone
    left = lock_file(store)
    assert left["pid"] == proc.pid and time.time() - left["beat"] < HeartbeatLock.STALE_S   # a fresh heartbeat...
    assert store.lock().holder() is None          # ... yet status no longer reports a driver
    with store.lock():                            # ... and the next driver does not wait for it
        assert lock_file(store)["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"taking over the lock of a driver that is gone (host {socket.gethostname()}, pid {proc.pid})" in err


def test_a_zombie_driver_counts_as_gone(store):
    proc = hold_in_subprocess(store)
    os.kill(proc.pid, signal.SIGKILL)
    # not reaped yet: the pid exists as a zombie until its parent waits for it
    deadline = time.monotonic() + 30
    while "Z" not in open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with store.lock():
        pass
    proc.wait(30)


def test_a_reused_pid_is_not_mistaken_for_the_driver(store):
    # the pid is alive (it is this very process) but it started at another time than the driver did
    plant(store, pid=os.getpid(), pid_started="1")
    with store.lock():
        pass


def test_same_host_name_after_a_reboot_is_taken_over(store):
    plant(store, pid=os.getpid(), boot_id="00000000-another-boot")
    with store.lock():
        pass


def test_another_hosts_live_lock_is_refused_with_its_age_and_expiry(store):
    beat = time.time() - 10
    plant(store, host="other-node", pid=4242, beat=beat)
    with pytest.raises(LockedError) as err:
        store.lock().acquire()
    msg = str(err.value)
    expires = datetime.fromtimestamp(beat + 120, timezone.utc).strftime("%H:%M:%S UTC")
    assert "(host other-node, pid 4242, last heartbeat 10s ago)" in msg, msg
    assert f"the lock expires at {expires} (in 1m50s) if that driver is gone" in msg, msg
    assert lock_file(store)["host"] == "other-node"          # left alone
    assert "other-node" in store.lock().holder()


def test_another_hosts_expired_lock_is_taken_over(store):
    plant(store, host="other-node", pid=4242, beat=time.time() - 121)
    with store.lock():
        assert lock_file(store)["host"] == socket.gethostname()
    plant(store, host="other-node", pid=4242, beat=time.time() - 30, stale_after_s=20)  # its own expiry counts
    with store.lock():
        pass


def test_of_two_drivers_claiming_together_the_overwritten_one_backs_off(store, monkeypatch):
    mine = HeartbeatLock(store.files)
    real_write = store.files.write_json

    def racing_write(rel, obj):
        real_write(rel, obj)
        if rel == ".lock.json" and obj.get("token") == mine._token:
            # the other driver read "no lock" at the same moment and writes its claim right after ours
            real_write(rel, {**obj, "host": "other-node", "pid": 77, "token": "theirs"})

    monkeypatch.setattr(store.files, "write_json", racing_write)
    with pytest.raises(LockedError, match=r"at the same moment \(host other-node, pid 77\)"):
        mine.acquire()
    assert lock_file(store)["token"] == "theirs"


def test_heartbeat_refreshes_and_never_overwrites_a_lock_taken_over(store, monkeypatch):
    monkeypatch.setattr(HeartbeatLock, "BEAT_S", 0.05)
    lock = store.lock()
    read = lock._read
    stall, parked, resume = threading.Event(), threading.Event(), threading.Event()

    def heartbeat_read():            # holds the heartbeat before its next read once `stall` is set
        if stall.is_set() and threading.current_thread().name == "overnight-lock-heartbeat":
            parked.set()
            resume.wait(30)
        return read()

    monkeypatch.setattr(lock, "_read", heartbeat_read)
    lock.acquire()
    try:
        first = lock_file(store)["beat"]
        deadline = time.monotonic() + 30
        while lock_file(store)["beat"] == first:      # wait for a beat
            assert time.monotonic() < deadline, "no heartbeat"
        # our beats stall long enough that another host takes over: we must not clobber its lock
        stall.set()
        assert parked.wait(30), "the heartbeat never came back"
        plant(store, host="other-node", pid=4242)
        resume.set()
        while not lock.lost:
            assert time.monotonic() < deadline, "the lost lock went unnoticed"
            time.sleep(0.01)
        assert lock_file(store)["token"] == "someone-else"
    finally:
        resume.set()
        lock.release()
    assert lock_file(store)["host"] == "other-node"   # release left their lock in place


def test_release_lets_a_beat_under_way_finish_and_leaves_no_lock_behind(store, monkeypatch):
    monkeypatch.setattr(HeartbeatLock, "BEAT_S", 0.05)
    lock = store.lock()
    beat = lock._beat
    in_beat, go, beaten = threading.Event(), threading.Event(), threading.Event()

    def slow_beat():                 # the heartbeat read our claim and is about to write it again
        if threading.current_thread().name != "overnight-lock-heartbeat":
            return beat()
        in_beat.set()
        go.wait(30)
        try:
            beat()
        finally:
            beaten.set()

    monkeypatch.setattr(lock, "_beat", slow_beat)
    lock.acquire()
    assert in_beat.wait(30), "no heartbeat"
    releaser = threading.Thread(target=lock.release)
    releaser.start()
    releaser.join(3)                 # a release that does not wait for the beat has deleted the lock by now
    go.set()
    assert beaten.wait(30)
    releaser.join(60)
    assert not releaser.is_alive()
    assert lock_file(store) is None  # the late beat did not leave a claim for a driver that has gone


def test_status_names_the_live_holder(store):
    plant(store, host="other-node", pid=4242, beat=time.time() - 5)
    text = store.lock().holder()
    assert json.loads(re.sub(r" \(last heartbeat .*\)$", "", text)) == \
        {"host": "other-node", "pid": 4242, "since": "2026-01-01T00:00:00+00:00"}
    assert text.endswith("(last heartbeat 5s ago)")


def test_a_lock_object_that_is_not_json_is_no_claim(store):
    store.write_bytes(".lock.json", b"\x00 not json")
    assert store.lock().holder() is None
    with store.lock():
        assert lock_file(store)["pid"] == os.getpid()


def test_a_read_overlapping_rewrites_of_other_lengths_is_never_torn(store):
    """pyarrow reads an object as a size lookup then ranged GETs; a heartbeat that rewrites the
    lock with a beat of another length in between must not hand a reader a cut-off document
    (which the lock would take for no claim at all)."""
    stop = threading.Event()

    def rewrite():
        n = 0
        while not stop.is_set():
            n += 1
            plant(store, beat=1795878888.5 if n % 2 else 1795878888.4632652, pad="x" * (n % 7))

    plant(store)
    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        docs = [lock_file(store) for _ in range(150)]
    finally:
        stop.set()
        writer.join()
    assert all(isinstance(d, dict) and d["token"] == "someone-else" and d["stale_after_s"] == 120.0 for d in docs)
    assert len({d["pad"] for d in docs if "pad" in d}) > 1   # the reads did overlap rewrites
