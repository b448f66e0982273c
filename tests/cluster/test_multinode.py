"""The orchestrator on a real 3-node Ray cluster over loopback (one `ray start` process group per node):
a study spreads over every node, a node lost mid-sweep costs only a retry from checkpoints, and
the driver runs as a Ray job that can be stopped and submitted again.

Nodes: head (1 CPU, slot=2, job server when ray[default] is installed) and two workers (1 CPU,
1 fake GPU, slot=2 each). `slot` is a custom resource: a trial asking for slot=1 fits twice per node.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from orchestrator.results.dataset import StudyStore
from tests.cluster.loopback import RAY, LoopbackCluster, job_server_available, private_mounts_available
from tests.conftest import ROOT, wait_until
from tests.processes import alive, kill_family, overnight_subprocess, start_overnight

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(object_store):
    # every node inherits the AWS variables that point at the loopback object store (as a real
    # cluster's nodes get credentials from their environment or instance profile)
    c = LoopbackCluster(dashboard=job_server_available() is None)
    try:
        c.start_head(num_cpus=1, resources={"slot": 2})
        c.add_node(num_cpus=1, num_gpus=1, resources={"slot": 2}, wait=False)
        c.add_node(num_cpus=1, num_gpus=1, resources={"slot": 2}, wait=False)
        c.wait_nodes(3, timeout=180)
        yield c
    except Exception:
        print(c.logs())
        raise
    finally:
        c.shutdown()


def write_study(tmp_path: Path, name: str, fixed: dict, grid: dict, resources: dict) -> Path:
    doc = {"name": name, "workload": "synthetic", "metric": "loss", "mode": "min", "max_failures": 1,
           "fixed": {"work_units": 1, "placement": True, "marker_dir": str(tmp_path / "markers"), **fixed},
           "grid": grid, "resources": resources}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def starts(tmp_path: Path) -> list[tuple[str, dict]]:
    """(trial_id, placement) of every execution start so far."""
    out = []
    for p in (tmp_path / "markers").glob("*.start") if (tmp_path / "markers").exists() else []:
        text = p.read_text()
        out.append((p.name.split(".")[0], json.loads(text) if text else {}))
    return out


def counts(tmp_path: Path, kind: str) -> Counter:
    d = tmp_path / "markers"
    return Counter(p.name.split(".")[0] for p in d.glob(f"*.{kind}")) if d.exists() else Counter()


def test_study_spreads_over_every_node(cluster, tmp_path):
    # 6 trials x slot=1 on 3 nodes x slot=2, and all 6 must be running at once (barrier): every
    # node has to host two of them
    path = write_study(tmp_path, "spread",
                       {"steps": 2, "sleep_s": 0.2, "barrier_dir": str(tmp_path / "barrier"), "barrier_n": 6,
                        "barrier_timeout_s": 90},
                       {"lr": [0.1, 0.2, 0.3], "seed": [0, 1]}, {"cpu": 0.25, "custom": {"slot": 1}})
    res = tmp_path / "res"
    run = overnight_subprocess("run", path, "--address", cluster.address, "--results", str(res), "--no-report",
                               timeout=300, env=cluster.env)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = StudyStore(str(res / "spread" / "fast")).rows()
    assert len(rows) == 6 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    nodes = set(cluster.node_ids())
    assert len(nodes) == 3
    per_node = rows["node_id"].value_counts().to_dict()
    assert set(per_node) == nodes, per_node
    assert set(per_node.values()) == {2}, per_node   # the custom resource capped each node at 2
    # six processes on three nodes wrote their rows straight into the one shared results location
    assert len(set(zip(rows["node_id"], rows["pid"]))) == 6


def test_study_with_results_on_the_object_store_spreads_over_every_node(cluster, tmp_path, object_store):
    """The same 3-node sweep with --results s3://...: six trial processes on three nodes write their
    rows, histories and checkpoints straight into the bucket (the per-node write probe passes)."""
    path = write_study(tmp_path, "spread_s3",
                       {"steps": 2, "sleep_s": 0.2, "barrier_dir": str(tmp_path / "barrier"), "barrier_n": 6,
                        "barrier_timeout_s": 90},
                       {"lr": [0.1, 0.2, 0.3], "seed": [0, 1]}, {"cpu": 0.25, "custom": {"slot": 1}})
    root = object_store.uri("cluster")
    run = overnight_subprocess("run", path, "--address", cluster.address, "--results", root, "--no-report",
                               timeout=300, env=cluster.env)
    assert run.returncode == 0, run.stderr[-3000:]
    store = StudyStore(f"{root}/spread_s3/fast")
    rows = store.rows()
    assert len(rows) == 6 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    per_node = rows["node_id"].value_counts().to_dict()
    assert set(per_node) == set(cluster.node_ids()) and set(per_node.values()) == {2}, per_node
    assert len(set(zip(rows["node_id"], rows["pid"]))) == 6
    assert set(store.history()["trial_id"]) == set(rows["trial_id"])
    keys = object_store.keys(root)
    assert not [k for k in keys if "/checkpoints/" in k or ".node-probe-" in k], keys   # cleaned up
    assert not store.exists(".lock.json")


def test_ray_job_submit_stop_and_submit_again_continues(cluster, tmp_path):
    if job_server_available() is not None:  # ray[default] is part of the install (.[cluster]): no skip
        pytest.fail(job_server_available(), pytrace=False)
    cluster.wait_dashboard()
    path = write_study(tmp_path, "jobbed", {"steps": 4, "sleep_s": 0.4},
                       {"lr": [0.1, 0.2, 0.3, 0.4, 0.5], "seed": [0, 1]}, {"cpu": 0.25, "custom": {"slot": 1}})
    res = tmp_path / "res"
    store = StudyStore(str(res / "jobbed" / "fast"))
    entry = ["--", "overnight", "run", str(path), "--address", "auto", "--results", str(res), "--no-report"]

    def job(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, "job", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env=cluster.env)

    sub = job("submit", "--address", cluster.dashboard_url, "--working-dir", str(ROOT),
              "--submission-id", "overnight-jobbed-1", "--no-wait", *entry)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    deadline = time.time() + 240
    while len(store.finished_ids()) < 3 and time.time() < deadline:
        time.sleep(0.2)
    assert len(store.finished_ids()) >= 3, job("logs", "--address", cluster.dashboard_url, "overnight-jobbed-1").stdout
    stop = job("stop", "--address", cluster.dashboard_url, "overnight-jobbed-1")
    assert stop.returncode == 0, stop.stdout + stop.stderr

    def stopped() -> bool:
        """The job says STOPPED and every trial process it started is gone (they may still write
        a row on their way out, so the counts below are taken after)."""
        status = job("status", "--address", cluster.dashboard_url, "overnight-jobbed-1")
        seen["status"] = (status.stdout + status.stderr).strip().splitlines()[-2:]
        seen["alive"] = [(tid, where.get("pid")) for tid, where in starts(tmp_path) if alive(where.get("pid", 0))]
        return "stopped" in (status.stdout + status.stderr).lower() and not seen["alive"]

    seen: dict = {}
    try:
        wait_until("the stopped job's trials to end", stopped, timeout=120)
    except AssertionError:
        raise AssertionError(f"{seen}; finished {len(store.finished_ids())}") from None
    done_at_stop = store.finished_ids()
    starts_at_stop = counts(tmp_path, "start")
    assert len(done_at_stop) < 10

    again = job("submit", "--address", cluster.dashboard_url, "--working-dir", str(ROOT),
                "--submission-id", "overnight-jobbed-2", *entry)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{len(done_at_stop)} already finished" in again.stdout
    rows = store.rows()
    assert len(rows) == 10 and rows["trial_id"].is_unique and set(rows["status"]) == {"completed"}
    final = counts(tmp_path, "start")
    assert all(final[t] == starts_at_stop[t] for t in done_at_stop), "a finished trial ran again"
    assert (rows["final_step"] == 4).all()


def test_node_lost_mid_sweep_trials_continue_elsewhere(cluster, tmp_path):
    # gpu 0.5 -> trials only on the two GPU workers, 2 each; the first 4 start together
    steps = 8
    path = write_study(tmp_path, "lossy",
                       {"steps": steps, "sleep_s": 0.5, "barrier_dir": str(tmp_path / "barrier"), "barrier_n": 4,
                        "barrier_timeout_s": 90},
                       {"lr": [0.1, 0.2, 0.3, 0.4], "seed": [0, 1]}, {"cpu": 0.25, "gpu": 0.5})
    res = tmp_path / "res"
    store = StudyStore(str(res / "lossy" / "fast"))
    log = tmp_path / "driver.log"
    driver = start_overnight("run", path, "--address", cluster.address, "--results", res, "--no-report",
                             log=log, env=cluster.env)
    try:
        # wait until some trial has checkpointed step >= 2, then kill the node it runs on
        deadline = time.time() + 240
        victim = None
        while victim is None and time.time() < deadline:
            for tid, where in starts(tmp_path):
                ck = store.load_checkpoint(tid) if where else None
                if ck and ck["state"]["step"] >= 2 and tid not in store.finished_ids():
                    victim = where
                    break
            time.sleep(0.1)
        assert victim, log.read_text()[-3000:]
        node = cluster.node_of(victim["pid"])
        assert node is not None and node.name != "head", (victim, [(n.name, n.proc.pid) for n in cluster.nodes])
        lost = {tid: store.load_checkpoint(tid) for tid, where in starts(tmp_path)
                if where.get("node_id") == victim["node_id"] and tid not in store.finished_ids()}
        cluster.kill_node(node)
        lost_steps = {tid: ck["state"]["step"] if ck else 0 for tid, ck in lost.items()}
        assert driver.wait(300) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            kill_family((), driver.pid)

    rows = store.rows().set_index("trial_id")
    assert len(rows) == 8 and set(rows["status"]) == {"completed"} and (rows["final_step"] == steps).all()
    assert len(cluster.node_ids()) == 2
    moved = rows.loc[[t for t in lost_steps if t in rows.index]]
    assert len(moved) >= 1
    # the trials that were running on the lost node finished elsewhere, from their checkpoints
    assert (moved["node_id"] != victim["node_id"]).all()
    for tid, step in lost_steps.items():
        assert rows.loc[tid, "resumed_from"] >= step, (tid, step, rows.loc[tid, "resumed_from"])
        assert rows.loc[tid, "attempts"] >= 2
    assert max(lost_steps.values()) >= 2  # at least the trial we watched continued from step >= 2
    assert set(counts(tmp_path, "end").values()) == {1}


@pytest.mark.skipif(private_mounts_available() is not None, reason=str(private_mounts_available()))
def test_results_path_that_one_node_does_not_share_is_refused(cluster, tmp_path):
    """A node that sees a different directory at the results path (a node-local disk) would keep
    its trials' rows to itself: the driver refuses before the first trial, naming the problem."""
    res = tmp_path / "res"
    res.mkdir()
    cluster.add_node(num_cpus=1, private_dir=res)
    path = write_study(tmp_path, "unshared", {"steps": 1}, {"lr": [0.1, 0.2]}, {"cpu": 0.25})
    run = overnight_subprocess("run", path, "--address", cluster.address, "--results", str(res), "--no-report",
                               timeout=300, env=cluster.env)
    assert run.returncode == 2, run.stderr[-3000:]
    err = [line for line in run.stderr.splitlines() if line.startswith("overnight: error:")]
    assert len(err) == 1 and "does not see the same results directory" in err[0], run.stderr[-3000:]
    assert not (res / "unshared" / "fast" / "trials").exists()
    assert not list((res / "unshared" / "fast").glob(".node-probe-*"))   # probes cleaned up
