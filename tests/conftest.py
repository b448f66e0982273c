"""Shared fixtures: one embedded Ray instance for the whole test session (a start/stop cycle
costs seconds), and helpers to write study files and call the CLI in-process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_local():
    """An embedded Ray with 2 CPUs, shared by every test that runs trials in-process."""
    from orchestrator import execute

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


def overnight_subprocess(*args: str, **kw) -> subprocess.CompletedProcess:
    """`overnight ...` as a real process (for exit codes and stderr exactly as a user sees them)."""
    exe = Path(sys.executable).with_name("overnight")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=kw.pop("cwd", ROOT), **kw)
