"""Small files under one base location: a local directory or an object-store URI (s3://, gs://, ...
through pyarrow.fs). :func:`filesystem` picks the class from the location.

Both publish whole files only, so a reader never sees half a file: a local directory by writing a
dot-prefixed temporary and renaming it, an object store by publishing the object when its upload
closes. Listings skip dot files (temporaries, locks, probes).
"""
from __future__ import annotations

import builtins
import json
import os
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from orchestrator.errors import UserError
from orchestrator.results.layout import is_uri, join


def open_fs(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    location = str(location)
    if is_uri(location):
        try:
            return pafs.FileSystem.from_uri(location)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
            raise UserError(f"cannot open results location: {e}", source="--results", field=location) from None
    if location.startswith("file://"):
        location = location[len("file://"):]
    return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def filesystem(location: str) -> Filesystem:
    """The filesystem of ``location``: a local path (``file://`` or not) is a
    :class:`LocalFilesystem`, a URI an :class:`ObjectStoreFilesystem`, except one that pyarrow
    itself opens on the local disk (``local:///path``)."""
    location = str(location)
    fs, base = open_fs(location)
    if isinstance(fs, pafs.LocalFileSystem):
        return LocalFilesystem(location, fs, base)
    return ObjectStoreFilesystem(location, fs, base)


class Filesystem(ABC):
    """Reads and writes of small files at paths relative to one base path of a pyarrow filesystem.
    Make one with :func:`filesystem`; a subclass says how a whole file is written and read."""

    def __init__(self, location: str, fs: pafs.FileSystem, base: str):
        self.location = location   # as given (a local path, file://..., or a URI with its query)
        self.fs = fs
        self.base = base           # the path inside ``fs``

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def path(self, rel: str) -> str:
        return join(self.base, rel)

    # ---- whole files: the subclasses ------------------------------------------------------
    @abstractmethod
    def write_bytes(self, rel: str, data: bytes, durable: bool = False) -> None:
        """Atomic write. ``durable``: the file survives a power cut (result rows)."""

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes | None:
        """The whole file, or None when there is none."""

    def _read_once(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    # ---- the rest, alike on both ----------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def makedirs(self, rel: str) -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=1, sort_keys=False, default=str).encode())

    def read_json(self, rel: str) -> Any | None:
        data = self.read_bytes(rel)
        return None if data is None else json.loads(data)

    # `list` names this method inside the class body, so annotations below spell the type builtins.list
    def list(self, rel: str, suffix: str = "") -> builtins.list[str]:
        """File names (not paths) directly under ``rel``; dot files (temporaries) are skipped."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        names = [info.base_name for info in self.fs.get_file_info(sel) if info.type == pafs.FileType.File]
        return sorted(n for n in names if not n.startswith(".") and n.endswith(suffix))

    def list_dirs(self, rel: str) -> builtins.list[str]:
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))

    def delete_file(self, rel: str) -> None:
        """Remove one file; raises (FileNotFoundError, OSError) as pyarrow does."""
        self.fs.delete_file(self.path(rel))

    def delete_dir(self, rel: str) -> None:
        """Remove a folder and everything under it; nothing to remove is no error."""
        try:
            self.fs.delete_dir(self.path(rel))
        except (FileNotFoundError, OSError):
            pass


class LocalFilesystem(Filesystem):
    """A local directory (also a shared mount). A file is written under a dot-prefixed temporary
    name and renamed over the final one, which POSIX makes atomic."""

    def local_path(self, rel: str) -> Path:
        """The file as a local path (for what only a local disk has: flock)."""
        return Path(self.path(rel))

    def write_bytes(self, rel: str, data: bytes, durable: bool = False) -> None:
        """Atomic write. ``durable`` also fsyncs, so the file survives a power cut (result rows);
        without it a crash can lose the newest version but never leaves half a file."""
        final = self.path(rel)
        parent, _, name = final.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        tmp = join(parent, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def read_bytes(self, rel: str) -> bytes | None:
        # os.replace publishes whole files: one read is consistent
        return self._read_once(self.path(rel))


class ObjectStoreFilesystem(Filesystem):
    """An object store (s3://bucket/prefix?endpoint_override=..., gs://, ...). An object is
    published whole when its upload closes (the store keeps it durably from then on); a read is
    checked against a rewrite that overlapped it."""

    READ_TRIES = 20
    READ_RETRY_S = 0.05

    def write_bytes(self, rel: str, data: bytes, durable: bool = False) -> None:
        final = self.path(rel)
        self.fs.create_dir(final.rpartition("/")[0], recursive=True)
        with self.fs.open_output_stream(final) as f:
            f.write(data)

    def read_bytes(self, rel: str) -> bytes | None:
        # pyarrow reads an object as a size lookup, then ranged GETs, so a read that overlaps a
        # rewrite of another length comes back torn (the lock's heartbeat rewrites .lock.json while
        # other drivers read it). Keep a read only when the object's size and time were the same
        # before and after it and match what came back.
        path = self.path(rel)
        for _ in range(self.READ_TRIES):
            before = self.fs.get_file_info(path)
            if before.type == pafs.FileType.NotFound:
                return None
            data = self._read_once(path)
            after = self.fs.get_file_info(path)
            if data is not None and len(data) == before.size == after.size and before.mtime == after.mtime:
                return data
            time.sleep(self.READ_RETRY_S)
        raise OSError(f"{self.location}/{rel} kept changing while it was being read")
