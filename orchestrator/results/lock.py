"""One driver per results location: :func:`driver_lock` gives the lock its filesystem can hold.

- A local directory (:class:`FlockLock`): an exclusive ``flock`` on ``.lock``, released by the OS
  when the driver dies (even by SIGKILL), so a crashed driver never blocks the next run.
- An object store (:class:`HeartbeatLock`), which has no locks: a ``.lock.json`` object naming the
  driver (host, pid, process start time, boot id) with a heartbeat time, rewritten every ``BEAT_S``
  seconds. A driver that finds one
    - from this host takes it over at once if that process is gone (killed, crashed, rebooted),
      and is refused while it lives;
    - from another host (whose processes it cannot see) is refused until the heartbeat is
      ``STALE_S`` seconds old, then takes it over.
  Object stores cannot create an object only-if-absent, so after writing its claim a driver reads
  it back ``SETTLE_S`` later: of two drivers that start together, the one whose claim was
  overwritten backs off.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator.errors import LockedError
from orchestrator.formats import fmt_duration
from orchestrator.results import layout as L
from orchestrator.results.filesystem import Filesystem, LocalFilesystem


def boot_id() -> str:
    """This machine's boot id ('' where unknown): a pid from another boot is another process."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), '' where unknown: with
    the pid it tells a process from a later one that got the same pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def pid_alive(pid: int, started: str = "") -> bool:
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


def driver_lock(files: Filesystem) -> DriverLock:
    """The driver lock of the location ``files``: a flock on a local directory, a heartbeat
    object on an object store."""
    if isinstance(files, LocalFilesystem):
        return FlockLock(files)
    return HeartbeatLock(files)


class DriverLock(ABC):
    """One driver per results location; a context manager (acquire, then release)."""

    def __init__(self, files: Filesystem):
        self.files = files
        self.lost = False   # set when another driver took the lock over while we ran

    @abstractmethod
    def acquire(self) -> None:
        """Take the lock, or raise LockedError saying who holds it."""

    @abstractmethod
    def holder(self) -> str | None:
        """Who holds the lock, without taking it (for `overnight status`)."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up (nothing to do when it is not held)."""

    def _owner(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class FlockLock(DriverLock):
    """An exclusive flock on ``.lock`` in a local directory; the file holds its owner's JSON."""

    files: LocalFilesystem

    def __init__(self, files: LocalFilesystem):
        super().__init__(files)
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.files.makedirs("")
        fd = os.open(self.files.local_path(L.LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (os.read(fd, 400).decode(errors="replace").strip() or "another process")
            os.close(fd)
            raise LockedError(f"another overnight driver is running on this results directory ({holder}); "
                              f"wait for it or stop it first", source=self.files.location) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self._owner()).encode())
        self._fd = fd

    def holder(self) -> str | None:
        import fcntl

        path = self.files.local_path(L.LOCK)
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

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class HeartbeatLock(DriverLock):
    """A ``.lock.json`` claim with a heartbeat, on an object store (see the module's text)."""

    STALE_S = 120.0
    BEAT_S = 30.0
    SETTLE_S = 1.0

    def __init__(self, files: Filesystem):
        super().__init__(files)
        self._stop: threading.Event | None = None
        self._beater: threading.Thread | None = None
        self._token = ""

    def _claim(self) -> dict[str, Any]:
        pid = os.getpid()
        return {**self._owner(), "pid_started": pid_started(pid), "boot_id": boot_id(),
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
        if host == socket.gethostname() and (not current.get("boot_id") or current.get("boot_id") == boot_id()):
            try:
                # a missing pid (None) raises TypeError, caught below like a malformed one
                alive = pid_alive(int(pid), str(current.get("pid_started") or ""))  # type: ignore[arg-type]
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
            current = self.files.read_json(L.LOCK_CLAIM)
        except ValueError:  # not JSON (written by something else): no claim to honour
            return None
        return current if isinstance(current, dict) else None

    def acquire(self) -> None:
        self.files.makedirs("")
        current = self._read()
        if current:
            why = self._verdict(current)
            if why:
                raise LockedError(why, source=self.files.location)
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
                              source=self.files.location)
        self._stop = threading.Event()
        self._beater = threading.Thread(target=self._heartbeat, daemon=True, name="overnight-lock-heartbeat")
        self._beater.start()

    def _beat(self) -> None:
        self.files.write_json(L.LOCK_CLAIM, self._claim())

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

    def holder(self) -> str | None:
        current = self._read()
        if current and self._verdict(current):
            age = time.time() - float(current.get("beat", 0) or 0)
            return (json.dumps({k: current.get(k) for k in ("host", "pid", "since")})
                    + f" (last heartbeat {_ago(age)} ago)")
        return None

    def release(self) -> None:
        if self._stop is None:
            return
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
                self.files.delete_file(L.LOCK_CLAIM)
        except OSError:
            pass
