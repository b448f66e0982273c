"""Shared fixtures: one embedded Ray instance for the whole test session (a start/stop cycle
costs seconds), an S3-compatible object store on loopback, and helpers to write study files and
call the CLI in-process.

No skip may hide a missing part of the project: tests that need the native extension call
``require_native()``, which fails them with a message saying so, and with OVERNIGHT_NO_SKIP=1
(set by .ci/run) any skipped test counts as failed."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Real datasets for tests (tinyshakespeare, WikiText-2 valid/test, Fashion-MNIST: ../shared/data/
# README.md). Set before anything reads OVERNIGHT_DATA (orchestrator/run/launch.py reads it at import).
_SHARED_DATA = ROOT.parent / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("OVERNIGHT_DATA", str(_SHARED_DATA))
NO_SKIP = os.environ.get("OVERNIGHT_NO_SKIP", "") not in ("", "0")


def require_native():
    """The native extension (``native._core``, built from native/ by `make install`). Where it is
    missing or stale every test module that needs it fails with this message: a skip would let a
    broken core pass."""
    try:
        import native
    except ImportError as e:
        missing = str(e)
    else:
        missing = ""
    if missing:
        pytest.fail(f"the native extension is missing ({missing}): build it with `make install` "
                    f"(needs cargo; pip install -e . runs maturin)", pytrace=False)
    if not hasattr(native, "TieredMemory"):
        pytest.fail(f"the native extension at {native.__file__} is stale (no TieredMemory): rebuild it with "
                    f"`make install`", pytrace=False)
    return native


def _no_skip(report) -> None:
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped, and OVERNIGHT_NO_SKIP=1 allows no skips: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _no_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _no_skip(outcome.get_result())


@pytest.fixture(scope="session")
def ray_local():
    """An embedded Ray with 2 CPUs, shared by every test that runs trials in-process."""
    from orchestrator.run import execute

    started = execute._init_ray(None, 2, None)
    yield
    if started:
        import ray

        ray.shutdown()


@pytest.fixture
def write_study(tmp_path):
    def write(doc: dict, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return write


@pytest.fixture
def cli(capsys):
    """Call `overnight ...` in-process; returns (exit code, stdout, stderr)."""
    from orchestrator.cli import main

    def call(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def wait_until(what: str, check, proc: subprocess.Popen | None = None, timeout: float = 300, family=None) -> bool:
    """Poll ``check()`` until it is true (True), or ``proc`` exited first (False). Waits on events
    (files, rows, counters), never for a fixed time; ``timeout`` only bounds a hung test. With
    ``family`` (a set) the descendants of ``proc`` are collected meanwhile, to clean up after it."""
    from tests.processes import descendants

    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            return False
        if family is not None and proc is not None:
            family.update(descendants(proc.pid))
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.05)
    return True


@pytest.fixture(scope="session")
def object_store():
    """An S3-compatible store (the moto server) on 127.0.0.1 for this session, stopped by its PID.
    The AWS variables that point at it are set in this process, so subprocesses, their Ray workers
    and loopback clusters started afterwards inherit them."""
    from tests.cluster.loopback import free_port
    from tests.storage.objectstore import start_object_store

    store = start_object_store(free_port())
    saved = {k: os.environ.get(k) for k in store.env}
    os.environ.update(store.env)
    yield store
    store.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
