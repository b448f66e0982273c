"""The two filesystems of orchestrator/results/filesystem.py give the same answers to the same
operations: a local directory, an S3-compatible object store (the moto server on loopback), and
pyarrow's in-memory mock store (an object store without a server). Every other module works at
layout paths through one of them, so a difference here would be a study that behaves differently
with `--results s3://...`. The same holds one level up, for a study's dataset (StudyStore)."""
from __future__ import annotations

import pytest

from orchestrator.results import layout as L
from orchestrator.results.dataset import StudyStore
from orchestrator.results.filesystem import Filesystem, LocalFilesystem, ObjectStoreFilesystem, filesystem
from orchestrator.results.lock import FlockLock, HeartbeatLock
from orchestrator.results.rows import utcnow

KINDS = {"local": LocalFilesystem, "s3": ObjectStoreFilesystem, "mock": ObjectStoreFilesystem}


@pytest.fixture(params=list(KINDS))
def location(request, tmp_path):
    kind = request.param
    if kind == "local":
        return kind, str(tmp_path / "loc")
    if kind == "mock":
        return kind, "mock:///loc"
    return kind, request.getfixturevalue("object_store").uri() + "/loc"


def file_answers(fs: Filesystem) -> list:
    """A fixed sequence of operations and what each answered."""
    out: list = []
    say = out.append
    say(("nothing yet", fs.read_bytes("a/b.bin"), fs.exists("a/b.bin"), fs.exists("a"), fs.list("a"), fs.list_dirs("")))
    fs.write_bytes("a/b.bin", b"one")
    fs.write_bytes("a/b.bin", b"two!")                 # a rewrite of another length
    fs.write_bytes("a/.hidden", b"x")                  # dot files are not listed
    fs.write_bytes("a/c.parquet", b"p", durable=True)
    fs.write_json("a/d/e.json", {"k": [1, 2], "t": "x"})
    fs.makedirs("empty")
    say(("written", fs.read_bytes("a/b.bin"), fs.read_bytes("a/.hidden"), fs.exists("a/b.bin"), fs.exists("a"),
         fs.exists("a/d"), fs.list("a"), fs.list("a", ".parquet"), fs.list_dirs("a"), fs.list_dirs(""),
         fs.read_json("a/d/e.json"), fs.read_json("a/none.json"), fs.exists("empty")))
    fs.delete_file("a/b.bin")
    say(("a file deleted", fs.read_bytes("a/b.bin"), fs.exists("a/b.bin"), fs.list("a")))
    with pytest.raises(FileNotFoundError):
        fs.delete_file("a/b.bin")
    fs.delete_dir("a/d")
    fs.delete_dir("not/there")                         # nothing to delete is no error
    say(("a folder deleted", fs.exists("a/d"), fs.exists("a/d/e.json"), fs.list_dirs("a"), fs.read_json("a/d/e.json")))
    fs.delete_dir("a")
    say(("all deleted", fs.exists("a"), fs.list_dirs(""), fs.list("a")))
    return out


EXPECTED_FILES = [
    ("nothing yet", None, False, False, [], []),
    ("written", b"two!", b"x", True, True, True, ["b.bin", "c.parquet"], ["c.parquet"], ["d"], ["a", "empty"],
     {"k": [1, 2], "t": "x"}, None, True),
    ("a file deleted", None, False, ["c.parquet"]),
    ("a folder deleted", False, False, [], None),
    ("all deleted", False, ["empty"], []),
]


def test_the_filesystems_answer_alike(location):
    kind, where = location
    fs = filesystem(where)
    assert type(fs) is KINDS[kind] and fs.location == where
    assert file_answers(fs) == EXPECTED_FILES


def study_answers(store: StudyStore) -> list:
    now = utcnow()
    out: list = []
    say = out.append
    say(("empty", store.finished_ids(), store.statuses(), store.rows().empty, store.in_flight(), store.manifest(),
         store.counter("t1", L.ATTEMPTS), store.load_checkpoint("t1")))
    store.check_writable()
    store.write_manifest({"study": {"name": "s"}, "scale": "fast", "trials": [{"trial_id": "t1"}, {"trial_id": "t2"}]})
    for tid in ("t1", "t2"):
        store.bump(tid, L.ATTEMPTS)
        store.save_checkpoint(tid, {"step": 3, "tid": tid})
    store.bump("t2", L.ERRORS)
    store.write_row({"trial_id": "t1", "study": "s", "scale": "fast", "status": "completed", "loss": 0.5,
                     "started_at": now, "finished_at": now, "wall_s": 1.0, "host": "h", "device": "cpu",
                     "attempts": 1, "error": ""})
    store.write_history("t1", [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}])
    store.write_artifact("per_layer", "t1", [{"layer": 0, "gamma": 0.9}])
    store.clear_checkpoint("t1")
    rows = store.rows()
    say(("one done, one in flight", store.finished_ids(), store.statuses(), rows["loss"].tolist(),
         store.row_value("t1", "status"), store.row_value("t1", "no_such_column"), store.row_value("t2", "status"),
         store.in_flight(), store.load_checkpoint("t1"), store.load_checkpoint("t2"),
         store.counter("t2", L.ATTEMPTS), store.counter("t2", L.ERRORS), store.history()["value"].tolist(),
         store.artifact("per_layer")[["trial_id", "layer", "gamma"]].values.tolist(),
         store.manifest()["trials"], store.exists(L.WRITE_PROBE), store.list(L.TRIALS, L.PART)))
    return out


EXPECTED_STUDY = [
    ("empty", set(), {}, True, [], None, 0, None),
    ("one done, one in flight", {"t1"}, {"t1": "completed"}, [0.5], "completed", None, None, ["t2"], None,
     {"step": 3, "tid": "t2"}, 1, 1, [1.0, 0.5], [["t1", 0, 0.9]], [{"trial_id": "t1"}, {"trial_id": "t2"}], False,
     ["t1.parquet"]),
]


def test_a_study_dataset_answers_alike_on_both(location):
    kind, where = location
    store = StudyStore(where)
    assert store.location == where and type(store.files) is KINDS[kind]
    assert study_answers(store) == EXPECTED_STUDY


def test_the_lock_suits_the_filesystem(location):
    kind, where = location
    store = StudyStore(where)
    lock = store.lock()
    assert type(lock) is (FlockLock if kind == "local" else HeartbeatLock)
    assert lock.holder() is None
    with lock:
        claim = store.read_json(L.LOCK_CLAIM)
        assert (claim is None) == (kind == "local")   # a flock leaves no claim object
        assert store.lock().holder() is not None
    assert store.lock().holder() is None
    assert store.list("") == []                          # the lock's files are dot files
