"""The results location of one study at one scale: RESULTS/<study>/<scale>/.

Layout (the directory is the source of truth for "done"; Ray's own state is never consulted):
    trials/<trial_id>.parquet          one row per finished trial (completed | failed | diverged)
    history/<trial_id>.parquet         per-step history reported by the trial
    artifacts/<name>/<trial_id>.parquet  tables a trial wrote through ctx.write_artifact
    checkpoints/<trial_id>/            state.pkl (last checkpoint), attempts, errors
    study.json                         the resolved study and its trial list, frozen per run
    runs/<started>.json                one record per driver run
    report.md                          written by `overnight report`
Files are written under a dot-prefixed temporary name and renamed, so a reader never sees half a
file; readers skip dot files. Locations may be local paths or pyarrow.fs URIs (s3://, gs://, ...).
"""
from __future__ import annotations

import io
import json
import os
import pickle
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.errors import LockedError, UserError

ROW_COLUMNS = ["trial_id", "study", "scale", "status", "started_at", "finished_at", "wall_s",
               "host", "device", "attempts", "error"]
STATUSES = ("completed", "failed", "diverged")


def is_uri(location: str) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


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


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts if p)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class FileStore:
    """Atomic reads and writes of small files under one base path of a pyarrow filesystem."""

    def __init__(self, location: str):
        self.location = str(location)
        self.fs, self.base = open_fs(self.location)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, rel: str) -> str:
        return join(self.base, rel)

    def local_path(self, rel: str) -> Path:
        assert self.local
        return Path(self.path(rel))

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def makedirs(self, rel: str) -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def write_bytes(self, rel: str, data: bytes, durable: bool = False) -> None:
        """Atomic write. ``durable`` also fsyncs, so the file survives a power cut (result rows);
        without it a crash can lose the newest version but never leaves half a file."""
        final = self.path(rel)
        parent, _, name = final.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        if not self.local:  # object stores publish an object atomically on close
            with self.fs.open_output_stream(final) as f:
                f.write(data)
            return
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
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=1, sort_keys=False, default=str).encode())

    def read_json(self, rel: str) -> Any | None:
        data = self.read_bytes(rel)
        return None if data is None else json.loads(data)

    def write_table(self, rel: str, table: pa.Table, durable: bool = False) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(rel, buf.getvalue(), durable=durable)

    def list(self, rel: str, suffix: str = "") -> list[str]:
        """File names (not paths) directly under ``rel``; dot files (temporaries) are skipped."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        names = [info.base_name for info in self.fs.get_file_info(sel) if info.type == pafs.FileType.File]
        return sorted(n for n in names if not n.startswith(".") and n.endswith(suffix))

    def list_dirs(self, rel: str) -> list[str]:
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))

    def delete_dir(self, rel: str) -> None:
        try:
            self.fs.delete_dir(self.path(rel))
        except (FileNotFoundError, OSError):
            pass

    def read_tables(self, rel: str) -> pd.DataFrame:
        frames = []
        for name in self.list(rel, ".parquet"):
            data = self.read_bytes(join(rel, name))
            if data:
                frames.append(pq.read_table(pa.BufferReader(data)).to_pandas())
        if not frames:
            return pd.DataFrame()
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()


def _cell(value: Any) -> Any:
    """Parquet-friendly scalar: lists and mappings become JSON text, numpy scalars plain Python."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def row_table(row: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist([{k: _cell(v) for k, v in row.items()}])


class StudyStore(FileStore):
    """RESULTS/<study>/<scale>: trial rows, history, artifacts, checkpoints, lock."""

    # ---- trial rows -----------------------------------------------------------------------
    def finished_ids(self) -> set[str]:
        return {n[: -len(".parquet")] for n in self.list("trials", ".parquet")}

    def statuses(self) -> dict[str, str]:
        df = self.read_tables("trials")
        if df.empty:
            return {}
        return dict(zip(df["trial_id"], df["status"]))

    def write_row(self, row: dict[str, Any]) -> None:
        self.write_table(f"trials/{row['trial_id']}.parquet", row_table(row), durable=True)

    def rows(self) -> pd.DataFrame:
        return self.read_tables("trials")

    def write_history(self, trial_id: str, history: list[dict[str, Any]]) -> None:
        if history:
            rows = [{"trial_id": trial_id, **{k: _cell(v) for k, v in h.items()}} for h in history]
            self.write_table(f"history/{trial_id}.parquet", pa.Table.from_pylist(rows))

    def history(self) -> pd.DataFrame:
        return self.read_tables("history")

    def write_artifact(self, name: str, trial_id: str, rows: Any) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"artifact name must be a plain name (got {name!r})")
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        df = df.copy()
        df.insert(0, "trial_id", trial_id)
        for col in df.columns:
            if df[col].dtype == object:
                df[col] = df[col].map(_cell)
        self.write_table(f"artifacts/{name}/{trial_id}.parquet", pa.Table.from_pandas(df, preserve_index=False))

    def artifact(self, name: str) -> pd.DataFrame:
        return self.read_tables(f"artifacts/{name}")

    # ---- checkpoints and attempt counters -------------------------------------------------
    def save_checkpoint(self, trial_id: str, payload: Any) -> None:
        self.write_bytes(f"checkpoints/{trial_id}/state.pkl", pickle.dumps(payload, protocol=5))

    def load_checkpoint(self, trial_id: str) -> Any | None:
        data = self.read_bytes(f"checkpoints/{trial_id}/state.pkl")
        return None if data is None else pickle.loads(data)

    def bump(self, trial_id: str, counter: str) -> int:
        n = self.counter(trial_id, counter) + 1
        self.write_bytes(f"checkpoints/{trial_id}/{counter}", str(n).encode())
        return n

    def counter(self, trial_id: str, counter: str) -> int:
        return int((self.read_bytes(f"checkpoints/{trial_id}/{counter}") or b"0").decode() or 0)

    def in_flight(self) -> list[str]:
        """Trials that started (have a checkpoint folder) but have no row yet."""
        done = self.finished_ids()
        return [t for t in self.list_dirs("checkpoints") if t not in done]

    def clear_checkpoint(self, trial_id: str) -> None:
        self.delete_dir(f"checkpoints/{trial_id}")

    # ---- manifest ------------------------------------------------------------------------
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.write_json("study.json", manifest)

    def manifest(self) -> dict[str, Any] | None:
        return self.read_json("study.json")

    # ---- lock ----------------------------------------------------------------------------
    def lock(self) -> "DriverLock":
        return DriverLock(self)

    def check_writable(self) -> None:
        """Fail early, clearly and without side effects if the location cannot be written."""
        try:
            self.makedirs("")
            self.write_bytes(".write-probe", b"ok")
            self.fs.delete_file(self.path(".write-probe"))
        except (OSError, pa.ArrowException) as e:
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise UserError(f"results location is not writable: {reason}", source="--results", field=self.location) from None


@dataclass
class DriverLock:
    """One driver per results directory.

    Local: an exclusive ``flock`` on ``.lock``, released by the OS when the driver dies (even by
    SIGKILL), so a crashed driver never blocks the next run. Remote: a ``.lock.json`` heartbeat
    refreshed every 30 s; one older than 2 minutes is treated as stale.
    """

    store: StudyStore
    _fd: int | None = None
    _stop: threading.Event | None = None
    STALE_S = 120

    def _owner(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": utcnow().isoformat(timespec="seconds")}

    def acquire(self) -> None:
        self.store.makedirs("")
        if self.store.local:
            import fcntl

            path = self.store.local_path(".lock")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = (os.read(fd, 400).decode(errors="replace").strip() or "another process")
                os.close(fd)
                raise LockedError(f"another overnight driver is running on this results directory ({holder}); "
                                  f"wait for it or stop it first", source=self.store.location) from None
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(self._owner()).encode())
            self._fd = fd
            return
        current = self.store.read_json(".lock.json")
        if current and time.time() - float(current.get("beat", 0)) < self.STALE_S:
            raise LockedError(f"another overnight driver is running on this results location "
                              f"(host {current.get('host')}, pid {current.get('pid')})", source=self.store.location)
        self._stop = threading.Event()
        self._beat()
        threading.Thread(target=self._heartbeat, daemon=True).start()

    def _beat(self) -> None:
        self.store.write_json(".lock.json", {**self._owner(), "beat": time.time()})

    def _heartbeat(self) -> None:
        assert self._stop is not None
        while not self._stop.wait(30):
            try:
                self._beat()
            except Exception:  # a missed beat only risks a stale-looking lock
                pass

    def holder(self) -> str | None:
        """Who holds the lock, without taking it (for `overnight status`)."""
        if self.store.local:
            import fcntl

            path = self.store.local_path(".lock")
            if not path.exists():
                return None
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            except BlockingIOError:
                return os.read(fd, 400).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
        current = self.store.read_json(".lock.json")
        if current and time.time() - float(current.get("beat", 0)) < self.STALE_S:
            return json.dumps({k: current.get(k) for k in ("host", "pid", "since")})
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._stop is not None:
            self._stop.set()
            try:
                self.store.fs.delete_file(self.store.path(".lock.json"))
            except OSError:
                pass

    def __enter__(self) -> "DriverLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def study_store(results: str, study: str, scale: str) -> StudyStore:
    return StudyStore(join(str(results).rstrip("/"), study, scale) if is_uri(results)
                      else str(Path(results).expanduser().resolve() / study / scale))
