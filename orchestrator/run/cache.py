"""Content-addressed stage cache shared by trials (e.g. one float backbone for many correction runs).

``StageCache.get(key, build)`` returns the object stored under ``hash(key)``, building and storing
it the first time. Writes are atomic (temporary name + rename), so a reader never sees half an
artifact. On a local filesystem an exclusive lock per key makes concurrent trials wait for the
first builder instead of building twice; on object stores two builders may both build, and the
last complete write wins (each is a valid artifact, nothing is corrupted).
"""
from __future__ import annotations

import hashlib
import os
import pickle
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from orchestrator.formats import canonical_json
from orchestrator.results import layout as L
from orchestrator.results.filesystem import LocalFilesystem, filesystem


def stage_key(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(key)).encode()).hexdigest()[:24]


class StageCache:
    def __init__(self, location: str):
        self.files = filesystem(location)
        self.builds = 0  # how many times this process ran a build (for tests and logs)

    def _rel(self, digest: str) -> str:
        return L.stage_object(digest)

    def load(self, key: Mapping[str, Any]) -> Any | None:
        data = self.files.read_bytes(self._rel(stage_key(key)))
        return None if data is None else pickle.loads(data)

    @contextmanager
    def _build_lock(self, digest: str) -> Iterator[None]:
        if not isinstance(self.files, LocalFilesystem):
            yield
            return
        import fcntl

        self.files.makedirs("")
        fd = os.open(self.files.local_path(L.stage_build_lock(digest)), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def get(self, key: Mapping[str, Any], build: Callable[[], Any]) -> Any:
        digest = stage_key(key)
        data = self.files.read_bytes(self._rel(digest))
        if data is not None:
            return pickle.loads(data)
        with self._build_lock(digest):
            data = self.files.read_bytes(self._rel(digest))  # someone may have built it meanwhile
            if data is not None:
                return pickle.loads(data)
            value = build()
            self.builds += 1
            self.files.write_bytes(self._rel(digest), pickle.dumps(value, protocol=5))
            self.files.write_json(L.stage_key_file(digest), dict(key))
            return value
