"""study.json records, per driver run, the code (commit, dirty tree, version), the environment
(packages, CPU, instruction set, threads, GPU) and the sha256 of the data files; the report header
shows them and says so when a study's rows come from more than one commit or package set."""
from __future__ import annotations

import hashlib
import json
import subprocess

import pandas as pd

from orchestrator.results import provenance as P
from orchestrator.results.environment import code_version, describe
from tests.conftest import ROOT


def test_a_run_records_code_environment_and_data_in_study_json_and_the_report_shows_them(cli, tmp_path, ray_local):
    code, out, err = cli("run", "synthetic", "--scale", "smoke", "--results", tmp_path, "--set", "lr=[0.1]",
                         "--set", "seed=[0]")
    assert code == 0, err
    manifest = json.loads((tmp_path / "synthetic" / "smoke" / "study.json").read_text())
    (run,) = manifest["runs"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert run["code"]["commit"] == head and isinstance(run["code"]["dirty"], bool)
    env = run["environment"]
    assert env["packages"]["torch"] and env["packages"]["numpy"] and env["packages"]["ray"] and env["cpu"]
    assert env["torch_cpu_capability"] in ("AVX512", "AVX2", "DEFAULT") and env.get("torch_threads", 1) >= 1
    code, out, err = cli("report", tmp_path / "synthetic" / "smoke")
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith("Code: "))
    assert f"commit {head[:12]}" in line and f"torch {env['packages']['torch']}" in line and env["cpu"] in line
    assert "code versions or package sets" not in out
    # a second run appends a record; the manifest keeps the first
    assert cli("run", "synthetic", "--scale", "smoke", "--results", tmp_path, "--set", "lr=[0.1]", "--set", "seed=[0]")[0] == 0
    assert len(json.loads((tmp_path / "synthetic" / "smoke" / "study.json").read_text())["runs"]) == 2


class _Reads:
    @staticmethod
    def data_files(config, data_root):
        return [data_root / f"{config['data']}.bin"]


def test_data_files_are_hashed_once_per_data_choice(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"alpha")
    (tmp_path / "b.bin").write_bytes(b"beta" * 1000)
    got = P.data_files(_Reads, [{"data": "a", "lr": 1}, {"data": "a", "lr": 2}, {"data": "b"}], tmp_path)
    assert got == {str(tmp_path / "a.bin"): hashlib.sha256(b"alpha").hexdigest(),
                   str(tmp_path / "b.bin"): hashlib.sha256(b"beta" * 1000).hexdigest()}
    assert P.data_files(object, [{"data": "a"}], tmp_path) == {}


def _run(started: str, commit: str, torch: str) -> dict:
    env = describe()
    env["packages"] = {**env["packages"], "torch": torch}
    return {"started_at": started, "code": {"commit": commit, "dirty": False, "overnight": "0.1.0"}, "environment": env,
            "data": {"/data/input.txt": "ab" * 32}}


def test_rows_from_two_commits_or_package_sets_are_named_in_the_header():
    runs = [_run("2026-12-01T10:00:00+00:00", "a" * 40, "2.15.0"), _run("2026-12-02T10:00:00+00:00", "b" * 40, "2.16.0")]
    rows = pd.DataFrame({"started_at": pd.to_datetime(["2026-12-01T11:00:00Z"] * 3 + ["2026-12-02T11:00:00Z"] * 2)})
    lines = P.provenance_lines(runs, rows)
    warn = next(l for l in lines if "code versions or package sets" in l)
    assert warn.startswith("**The rows come from 2 code versions or package sets**")
    assert "3 rows from commit aaaaaaaaaaaa" in warn and "torch 2.15.0" in warn
    assert "2 rows from commit bbbbbbbbbbbb" in warn and "torch 2.16.0" in warn
    assert "Data files (sha256): input.txt abababababababab." in lines
    # all rows from the second run: one version, no warning, the second run's commit
    one = P.provenance_lines(runs, rows.tail(2))
    assert not any("code versions" in l for l in one) and "commit bbbbbbbbbbbb" in one[0]
    assert P.provenance_lines(None, rows) == ["Code and environment: not recorded (results written before overnight "
                                              "recorded them)."]


def test_code_version_names_this_checkout():
    v = code_version()
    assert v["overnight"] and len(v["commit"]) == 40


def test_dirty_means_the_code_not_the_generated_pages(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "docs" / "results" / "README.md").write_text("index\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    assert code_version(tmp_path)["dirty"] is False
    (tmp_path / "docs" / "results" / "README.md").write_text("regenerated index\n")
    (tmp_path / "new_untracked.py").write_text("")
    assert code_version(tmp_path)["dirty"] is False    # a regenerated page, an untracked file
    (tmp_path / "code.py").write_text("x = 2\n")
    assert code_version(tmp_path)["dirty"] is True


def test_the_header_says_what_a_workload_declares_not_bit_identical():
    from orchestrator.report.page import determinism_lines
    from orchestrator.study.spec import Study

    (line,) = determinism_lines(Study.model_validate({"name": "s", "workload": "synthetic"}))
    assert line.startswith("Determinism (what is not bit-identical") and "resumed_from" in line
    assert determinism_lines(Study.model_validate({"name": "s", "workload": "quantcorr.classification"})) == []


def test_a_driver_records_its_environment_without_importing_torch():
    import sys

    code = ("import sys; from orchestrator.results.provenance import run_record; e = run_record()['environment']; "
            "print('torch' in sys.modules, e['torch_cpu_capability'], e['packages']['torch'] is not None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    imported, capability, version = done.stdout.split()
    assert imported == "False" and version == "True", done.stdout + done.stderr
    import torch

    assert capability == torch.backends.cpu.get_cpu_capability()
