"""CI cannot go green on a broken core: a missing part of the project fails, never skips.

- no test reaches the project's own modules through importorskip (native tests call
  tests.conftest.require_native(), which fails them with a message saying what is missing);
- with OVERNIGHT_NO_SKIP=1, which .ci/run sets, any skipped test counts as failed;
- .ci/run runs the static checks (ruff, cargo clippy), the Rust tests, the default run and the
  reliability suite.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROJECT = {"orchestrator", "workloads", "native", "tests"}


def test_no_importorskip_of_the_projects_own_modules():
    call = re.compile(r"importorskip\(\s*['\"]([\w.]+)")
    bad = [f"{p.relative_to(ROOT)}: {m.group(1)}"
           for p in sorted((ROOT / "tests").rglob("*.py")) if p.name != "test_ci_guards.py"
           for m in call.finditer(p.read_text()) if m.group(1).split(".")[0] in PROJECT]
    assert not bad, bad


def run_pytest(folder, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(folder / "pytest.ini"),
                           "--rootdir", str(folder), *args, str(folder)], capture_output=True, text=True, timeout=120,
                          cwd=folder, env={**os.environ, **env})


# CI runs the suite on pytest-xdist workers: a skip reported by a worker must fail there too
@pytest.mark.parametrize("workers", [[], ["-n", "2", "--dist", "loadfile"]], ids=["serial", "xdist"])
def test_a_skip_is_a_failure_when_ci_allows_none(tmp_path, workers):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport  # noqa\n")
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\ndef test_ok():\n    pass\n\ndef test_skipped():\n    pytest.skip('some part is missing')\n")
    relaxed = run_pytest(tmp_path, *workers, OVERNIGHT_NO_SKIP="0")
    assert relaxed.returncode == 0 and "1 passed, 1 skipped" in relaxed.stdout, relaxed.stdout
    strict = run_pytest(tmp_path, *workers, OVERNIGHT_NO_SKIP="1")
    assert strict.returncode == 1 and "1 failed, 1 passed" in strict.stdout, strict.stdout
    assert "OVERNIGHT_NO_SKIP=1 allows no skips: some part is missing" in strict.stdout, strict.stdout

    (tmp_path / "test_skips.py").unlink()
    (tmp_path / "test_module.py").write_text("import pytest\npytest.skip('a module-level skip', allow_module_level=True)\n")
    strict = run_pytest(tmp_path, *workers, OVERNIGHT_NO_SKIP="1")
    assert strict.returncode != 0 and "allows no skips: a module-level skip" in strict.stdout, strict.stdout


def test_ci_runs_every_suite_and_allows_no_skip():
    ci = (ROOT / ".ci" / "run").read_text()
    make = (ROOT / "Makefile").read_text()
    assert "OVERNIGHT_NO_SKIP=1" in ci
    assert "make test-native" in ci and "cargo test" in make.split("test-native:")[1].split("\n\n")[0]
    assert "make test-reliability" in ci and "-m reliability" in make.split("test-reliability:")[1].split("\n\n")[0]
    assert ".venv/bin/python -m pytest -q -n 2 --dist loadfile" in ci
    lint = make.split("\nlint:")[1].split("\n\n")[0]
    assert "make lint" in ci and "ruff check" in lint and "mypy" in lint and "cargo clippy" in lint and "-D warnings" in lint
