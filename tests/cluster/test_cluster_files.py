"""The cluster launcher files are valid for Ray's launcher and install the project as the docs say;
the `ray submit` entry script runs the CLI from the project checkout."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

CLUSTER = ROOT / "configs" / "cluster"
FILES = sorted(CLUSTER.glob("*.yaml"))


def test_both_kinds_of_cluster_are_there():
    kinds = {yaml.safe_load(f.read_text())["provider"]["type"] for f in FILES}
    assert {"aws", "local"} <= kinds


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_launcher_accepts_the_file(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(path.read_text())
    config = prepare_config(raw)      # fills in the provider's defaults, as `ray up` does
    validate_config(config)           # Ray's JSON schema for cluster files
    assert config["head_node_type"] in config["available_node_types"]

    # the checkout is synced from the repository root, without what .gitignore leaves out
    assert raw["file_mounts"] == {"~/overnight": "."} and ".gitignore" in raw["rsync_filter"]
    setup = "\n".join(raw["setup_commands"])
    assert "rustup" in setup                                      # the native extension is built on each node
    assert 'pip install -q -e "$HOME/overnight[cluster]"' in setup   # editable, with the job server extra
    starts = "\n".join(raw["head_start_ray_commands"] + raw["worker_start_ray_commands"])
    assert "ray start --head" in starts and "ray start --address=$RAY_HEAD_IP:6379" in starts


def test_aws_cluster_has_gpu_workers_and_a_ray_image_matching_the_pin():
    raw = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    workers = {k: v for k, v in raw["available_node_types"].items() if k != raw["head_node_type"]}
    assert any(v["node_config"]["InstanceType"].startswith(("g", "p")) for v in workers.values())
    pin = next(line for line in (ROOT / "pyproject.toml").read_text().splitlines() if '"ray[tune]' in line)
    assert "2.60" in pin and raw["docker"]["image"].startswith("rayproject/ray:2.60.")


def test_submit_entry_script_runs_the_cli_from_the_checkout(tmp_path):
    script = CLUSTER / "overnight_run.py"
    env = {**os.environ, "OVERNIGHT_HOME": str(ROOT)}
    ok = subprocess.run([sys.executable, str(script), "run", "synthetic", "--scale", "smoke", "--dry-run"],
                        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == "12 trials"     # the study name resolved in configs/studies/
    bad = subprocess.run([sys.executable, str(script), "list"], cwd=tmp_path, capture_output=True, text=True,
                         env={**env, "OVERNIGHT_HOME": str(tmp_path / "nowhere")}, timeout=60)
    assert bad.returncode == 2 and "no project checkout" in bad.stderr
