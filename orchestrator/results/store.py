"""The results location of one study at one scale: RESULTS/<study>/<scale>/.

The layout of a results location is in orchestrator/results/layout.py; the directory is the source of
truth for "done" (Ray's own state is never consulted).
Files are written under a dot-prefixed temporary name and renamed, so a reader never sees half a
file; readers skip dot files. Locations may be local paths or pyarrow.fs URIs (s3://, gs://, ...).
"""
from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.results import layout as L
from orchestrator.errors import LockedError, UserError
from orchestrator.formats import fmt_duration
from orchestrator.results.layout import is_uri, join  # also part of this module's API

from orchestrator.results.rows import artifact_table, history_table, row_table


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


def parquet_part(data: bytes) -> pq.ParquetFile:
    """A Parquet file held in memory, over Arrow's own copy of the bytes (read it with
    :func:`read_part`). A reader over a Python ``bytes`` can be freed later by one of Arrow's pool
    threads, which must then take the GIL, and a process exiting at that moment (a Ctrl-C) aborts
    instead of exiting 130 (apache/arrow#49942)."""
    out = pa.BufferOutputStream()
    out.write(data)
    return pq.ParquetFile(pa.BufferReader(out.getvalue()))


def read_part(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """One part file's table: only ``columns``, those it has, when given. Read on the calling
    thread (no pool task outlives the call; parts are one row each, so threads bought nothing).
    ParquetFile.read costs a fraction of read_table per file (no dataset layer), which is most of
    the time of a study with thousands of one-row parts."""
    part = parquet_part(data)
    cols = None if columns is None else [c for c in columns if c in part.schema_arrow.names]
    return part.read(columns=cols, use_threads=False)


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
        path = self.path(rel)
        if self.local:  # os.replace publishes whole files: one read is consistent
            return self._read_once(path)
        # pyarrow reads an object as a size lookup, then ranged GETs, so a read that overlaps a
        # rewrite of another length comes back torn (the lock's heartbeat rewrites .lock.json while
        # other drivers read it). Keep a read only when the object's size and time were the same
        # before and after it and match what came back.
        for _ in range(20):
            before = self.fs.get_file_info(path)
            if before.type == pafs.FileType.NotFound:
                return None
            data = self._read_once(path)
            after = self.fs.get_file_info(path)
            if data is not None and len(data) == before.size == after.size and before.mtime == after.mtime:
                return data
            time.sleep(0.05)
        raise OSError(f"{self.location}/{rel} kept changing while it was being read")

    def _read_once(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
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

    def delete_dir(self, rel: str) -> None:
        try:
            self.fs.delete_dir(self.path(rel))
        except (FileNotFoundError, OSError):
            pass

    def part_tables(self, rel: str, columns: builtins.list[str] | None = None) -> builtins.list[pa.Table]:
        """Every part file under ``rel`` as a table (only ``columns``, those a part has, when given)."""
        tables = []
        for name in self.list(rel, ".parquet"):
            data = self.read_bytes(join(rel, name))
            if data:
                tables.append(read_part(data, columns))
        return tables

    def read_tables(self, rel: str, columns: builtins.list[str] | None = None) -> pd.DataFrame:
        """Every part file under ``rel`` as one frame (only ``columns``, those a part has, when
        given). Tolerant of parts written with differing schemas (datasets from before
        one-schema-per-study): columns are unioned, types promoted."""
        tables = [t for t in self.part_tables(rel, columns) if t.num_rows]
        if not tables:
            return pd.DataFrame()
        try:
            return pa.concat_tables(tables, promote_options="permissive").to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return pd.concat([t.to_pandas() for t in tables], ignore_index=True, sort=False)


class StudyStore(FileStore):
    """RESULTS/<study>/<scale>: trial rows, history, artifacts, checkpoints, lock."""

    # ---- trial rows -----------------------------------------------------------------------
    def finished_ids(self) -> set[str]:
        return {n[: -len(".parquet")] for n in self.list(L.TRIALS, ".parquet")}

    def statuses(self) -> dict[str, str]:
        df = self.read_tables(L.TRIALS, columns=["trial_id", "status"])
        if df.empty:
            return {}
        return dict(zip(df["trial_id"], df["status"]))

    def write_row(self, row: dict[str, Any], schema: pa.Schema | None = None) -> None:
        self.write_table(L.trial_row(row['trial_id']), row_table(row, schema), durable=True)

    def rows(self, columns: builtins.list[str] | None = None) -> pd.DataFrame:
        return self.read_tables(L.TRIALS, columns)

    def row_value(self, trial_id: str, column: str) -> Any:
        """One cell of a trial's row (None when the row or the column is not there)."""
        data = self.read_bytes(L.trial_row(trial_id))
        if not data:
            return None
        table = read_part(data, [column])
        return table.column(0)[0].as_py() if table.num_columns else None

    def write_history(self, trial_id: str, history: builtins.list[dict[str, Any]]) -> None:
        if history:
            self.write_table(L.trial_history(trial_id), history_table(trial_id, history))

    def history(self) -> pd.DataFrame:
        return self.read_tables(L.HISTORY)

    def write_artifact(self, name: str, trial_id: str, rows: Any, model: Any = None) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"artifact name must be a plain name (got {name!r})")
        self.write_table(L.artifact(name, trial_id), artifact_table(trial_id, rows, model))

    def artifact(self, name: str) -> pd.DataFrame:
        return self.read_tables(L.artifact_dir(name))

    # ---- checkpoints and attempt counters -------------------------------------------------
    def save_checkpoint(self, trial_id: str, payload: Any) -> None:
        self.write_bytes(L.checkpoint_state(trial_id), pickle.dumps(payload, protocol=5))

    def load_checkpoint(self, trial_id: str) -> Any | None:
        data = self.read_bytes(L.checkpoint_state(trial_id))
        return None if data is None else pickle.loads(data)

    def bump(self, trial_id: str, counter: str) -> int:
        n = self.counter(trial_id, counter) + 1
        self.write_bytes(L.counter(trial_id, counter), str(n).encode())
        return n

    def counter(self, trial_id: str, counter: str) -> int:
        return int((self.read_bytes(L.counter(trial_id, counter)) or b"0").decode() or 0)

    def in_flight(self) -> builtins.list[str]:
        """Trials that started (have a checkpoint folder) but have no row yet."""
        done = self.finished_ids()
        return [t for t in self.list_dirs(L.CHECKPOINTS) if t not in done]

    def clear_checkpoint(self, trial_id: str) -> None:
        self.delete_dir(L.checkpoint_dir(trial_id))

    # ---- manifest ------------------------------------------------------------------------
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.write_json(L.MANIFEST, manifest)

    def manifest(self) -> dict[str, Any] | None:
        return self.read_json(L.MANIFEST)

    # ---- lock ----------------------------------------------------------------------------
    def lock(self) -> "DriverLock":
        return DriverLock(self)

    def check_writable(self) -> None:
        """Fail early, clearly and without side effects if the location cannot be written."""
        try:
            self.makedirs("")
            self.write_bytes(L.WRITE_PROBE, b"ok")
            self.fs.delete_file(self.path(L.WRITE_PROBE))
        except (OSError, pa.ArrowException) as e:
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise UserError(f"results location is not writable: {reason}", source="--results", field=self.location) from None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), '' where unknown: with
    the pid it tells a process from a later one that got the same pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_alive(pid: int, started: str = "") -> bool:
    """Is the process ``pid`` (started at ``started``, when known) still there on this host?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc (not Linux): kill(pid, 0) is all we know
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return not started or fields[19] == started


def _ago(seconds: float) -> str:
    return fmt_duration(max(0.0, seconds))


@dataclass
class DriverLock:
    """One driver per results directory.

    Local: an exclusive ``flock`` on ``.lock``, released by the OS when the driver dies (even by
    SIGKILL), so a crashed driver never blocks the next run.

    Remote (object stores have no locks): a ``.lock.json`` object naming the driver (host, pid,
    process start time, boot id) with a heartbeat time, rewritten every ``BEAT_S`` seconds. A
    driver that finds one
      - from this host takes it over at once if that process is gone (killed, crashed, rebooted),
        and is refused while it lives;
      - from another host (whose processes it cannot see) is refused until the heartbeat is
        ``STALE_S`` seconds old, then takes it over.
    Object stores cannot create an object only-if-absent, so after writing its claim a driver
    reads it back ``SETTLE_S`` later: of two drivers that start together, the one whose claim
    was overwritten backs off.
    """

    store: StudyStore
    _fd: int | None = None
    _stop: threading.Event | None = None
    _beater: threading.Thread | None = None
    _token: str = ""
    lost: bool = False           # set when another driver took the lock over while we ran
    STALE_S = 120.0
    BEAT_S = 30.0
    SETTLE_S = 1.0

    def _owner(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": utcnow().isoformat(timespec="seconds")}

    # ---- remote locks ---------------------------------------------------------------------
    def _claim(self) -> dict[str, Any]:
        pid = os.getpid()
        return {**self._owner(), "pid_started": _pid_started(pid), "boot_id": _boot_id(),
                "token": self._token, "beat": time.time(), "stale_after_s": self.STALE_S}

    def _verdict(self, current: dict[str, Any], now: float | None = None) -> str | None:
        """Why ``current`` (a lock.json) still holds, or None when it may be taken over."""
        now = time.time() if now is None else now
        try:
            beat = float(current.get("beat", 0))
        except (TypeError, ValueError):
            beat = 0.0
        age = now - beat
        stale_after = float(current.get("stale_after_s") or self.STALE_S)
        host, pid = current.get("host"), current.get("pid")
        who = f"host {host}, pid {pid}"
        beat_text = f"last heartbeat {_ago(age)} ago"
        if host == socket.gethostname() and (not current.get("boot_id") or current.get("boot_id") == _boot_id()):
            try:
                # a missing pid (None) raises TypeError, caught below like a malformed one
                alive = _pid_alive(int(pid), str(current.get("pid_started") or ""))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                alive = False
            if not alive:
                return None
            return (f"another overnight driver is running on this results location ({who}, {beat_text}); "
                    f"the lock is free as soon as that process exits: wait for it or stop it first")
        if host == socket.gethostname():  # same host name, another boot: that process is gone
            return None
        if age >= stale_after:
            return None
        expires = datetime.fromtimestamp(beat + stale_after, timezone.utc).strftime("%H:%M:%S UTC")
        return (f"another overnight driver is running on this results location ({who}, {beat_text}); "
                f"the lock expires at {expires} (in {_ago(beat + stale_after - now)}) if that driver is gone")

    def _read(self) -> dict[str, Any] | None:
        try:
            current = self.store.read_json(".lock.json")
        except ValueError:  # not JSON (written by something else): no claim to honour
            return None
        return current if isinstance(current, dict) else None

    def _acquire_remote(self) -> None:
        current = self._read()
        if current:
            why = self._verdict(current)
            if why:
                raise LockedError(why, source=self.store.location)
            print(f"overnight: taking over the lock of a driver that is gone (host {current.get('host')}, "
                  f"pid {current.get('pid')})", file=sys.stderr)
        self._token = uuid.uuid4().hex
        self._beat()
        time.sleep(self.SETTLE_S)
        now = self._read() or {}
        if now.get("token") != self._token:
            self._token = ""
            raise LockedError(f"another overnight driver started on this results location at the same moment "
                              f"(host {now.get('host')}, pid {now.get('pid')}); wait for it or stop it first",
                              source=self.store.location)
        self._stop = threading.Event()
        self._beater = threading.Thread(target=self._heartbeat, daemon=True, name="overnight-lock-heartbeat")
        self._beater.start()

    def _beat(self) -> None:
        self.store.write_json(".lock.json", self._claim())

    def _heartbeat(self) -> None:
        stop = self._stop   # release() drops its own reference as it sets the event
        assert stop is not None
        while not stop.wait(self.BEAT_S):
            try:
                current = self._read() or {}
                if current.get("token") not in (None, self._token):
                    # our beats stopped long enough for another driver to take over: leave it be
                    self.lost = True
                    print(f"overnight: warning: the results lock was taken over by host {current.get('host')}, "
                          f"pid {current.get('pid')}", file=sys.stderr)
                    return
                self._beat()
            except Exception:  # noqa: BLE001 - a missed beat only risks a stale-looking lock
                pass

    # ---- both -----------------------------------------------------------------------------
    def acquire(self) -> None:
        self.store.makedirs("")
        if not self.store.local:
            self._acquire_remote()
            return
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
        current = self._read()
        if current and self._verdict(current):
            age = time.time() - float(current.get("beat", 0) or 0)
            return (json.dumps({k: current.get(k) for k in ("host", "pid", "since")})
                    + f" (last heartbeat {_ago(age)} ago)")
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._stop is not None:
            self._stop.set()
            self._stop = None
            # let a beat under way finish first: it would write the lock back after the delete below
            # (a stale claim for the next driver), and a thread still inside Arrow's I/O when the
            # interpreter exits aborts the process
            if self._beater is not None:
                self._beater.join(timeout=60)
                self._beater = None
            try:
                current = self._read() or {}
                if current.get("token") == self._token:  # never delete a lock another driver took over
                    self.store.fs.delete_file(self.store.path(".lock.json"))
            except OSError:
                pass

    def __enter__(self) -> "DriverLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def study_store(results: str, study: str, scale: str) -> StudyStore:
    return StudyStore(L.study_location(results, study, scale))


def find_studies(location: str) -> list[StudyStore]:
    """Every RESULTS/<study>/<scale> under ``location`` (which may itself be one)."""
    root = StudyStore(location)
    if root.exists(L.MANIFEST):
        return [root]
    found = []
    for study in root.list_dirs(""):
        if study.startswith("_"):
            continue
        sub = StudyStore(join(root.location, study))
        if sub.exists(L.MANIFEST):
            found.append(sub)
            continue
        found += [s for scale in sub.list_dirs("")
                  if (s := StudyStore(join(root.location, study, scale))).exists(L.MANIFEST)]
    if not found:
        raise UserError(f"no overnight results here (no {L.MANIFEST} found)", source=location)
    return found
