"""`overnight` as a real process, and the kill that ends a driver together with the Ray it started.

Every test that runs the CLI as a user would, or kills a driver, uses these:

- :func:`overnight_subprocess` runs a command to its end (exit code, stdout and stderr as a user
  sees them);
- :func:`start_overnight` starts one and returns at once, in a session of its own, so that the
  driver and the Ray processes it starts form one process group;
- :func:`kill_when` waits for an event, then SIGKILLs the driver and, at once, its Ray;
  :func:`kill_driver` and :func:`kill_family` are its parts, for tests that choose the moment
  themselves (tests/reliability/test_driver_kills.py kills at random times);
- :func:`ray_env` is the environment of a driver that starts its own Ray (docs/execution.md,
  'Environment').
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from tests.conftest import ROOT, wait_until

OVERNIGHT = str(Path(sys.executable).with_name("overnight"))


def parents() -> dict[int, int]:
    """pid -> parent pid for every process we can see (from /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # the command name may contain spaces and parentheses: split after the last ")"
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def ray_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with token authentication off for the Ray the driver starts, plus ``extra``."""
    return {**os.environ, "RAY_AUTH_MODE": "disabled", **extra}


def overnight_subprocess(*args: Any, **kw: Any) -> subprocess.CompletedProcess:
    """`overnight ARGS` run to its end, output captured as text. Keywords go to ``subprocess.run``
    (``env``, ``timeout``; ``cwd`` defaults to the repository)."""
    return subprocess.run([OVERNIGHT, *map(str, args)], capture_output=True, text=True, cwd=kw.pop("cwd", ROOT), **kw)


def start_overnight(*args: Any, log: Path | None = None, stdout: Any = subprocess.DEVNULL,
                    stderr: Any = subprocess.DEVNULL, env: dict[str, str] | None = None,
                    cwd: Path | str = ROOT) -> subprocess.Popen:
    """`overnight ARGS` started in its own session (kill_family ends the group), with
    :func:`ray_env` unless ``env`` is given. ``log``: stdout and stderr both to this file;
    otherwise ``stdout`` and ``stderr`` as given (default: discarded)."""
    if log is not None:
        stdout, stderr = log.open("w"), subprocess.STDOUT
    return subprocess.Popen([OVERNIGHT, *map(str, args)], cwd=cwd, stdout=stdout, stderr=stderr,
                            start_new_session=True, env=ray_env() if env is None else env)


def kill_family(pids: Iterable[int], pgid: int) -> None:
    """SIGKILL these processes, then the process group ``pgid``: what a killed driver leaves
    behind (its embedded Ray), by PID and by group. Processes already gone are skipped."""
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_driver(driver: subprocess.Popen, family: set[int], linger: float | None = None) -> None:
    """SIGKILL the driver (if it still runs) and the Ray it started: ``family`` (updated with the
    driver's descendants, collected before the kill, since they are re-parented after it) and its
    process group. ``linger=None``: the Ray goes at once, before its trials can finish. A number:
    the driver goes alone, and its Ray lives on that many seconds (it may still write a row)."""
    family.update(descendants(driver.pid))
    if driver.poll() is None:
        os.kill(driver.pid, signal.SIGKILL)
    if linger is None:
        kill_family(family, driver.pid)
        driver.wait(30)
        return
    driver.wait(30)
    time.sleep(linger)
    family.update(descendants(driver.pid))
    kill_family(family, driver.pid)


def kill_when(driver: subprocess.Popen, what: str, condition: Callable[[], Any], log: Path,
              timeout: float = 240, family: set[int] | None = None,
              take: Callable[[], Any] | None = None) -> Any:
    """Wait (up to ``timeout`` s) until ``condition()`` gives something, then SIGKILL the driver
    and, at once, the Ray it started (which would otherwise finish the trials). Returns what
    ``take()`` (default: ``condition()``) gives just before the kill. ``family`` collects the
    driver's processes meanwhile; pass a set to start from, or to see them afterwards."""
    family = set() if family is None else family
    try:
        assert wait_until(what, condition, driver, timeout=timeout, family=family), \
            f"the driver ended before {what}:\n{log.read_text()[-3000:]}"
        family.update(descendants(driver.pid))
        caught = (take or condition)()
        kill_driver(driver, family)
    finally:
        family.update(descendants(driver.pid))
        kill_family(family, driver.pid)
    return caught


def alive(pid: int) -> bool:
    """``pid`` (a positive number) exists and is neither a zombie nor dead."""
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
