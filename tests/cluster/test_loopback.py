"""The loopback cluster's own start-up: a node whose `ray start` gave up waiting for its raylet to
register (30 s, a constant in Ray; a loaded 2-core machine can need more) is started again, at most
STARTUP_RETRIES times; a node that died of anything else fails the test at once, with its log."""
from __future__ import annotations

import pytest

from tests.cluster import loopback
from tests.cluster.loopback import STARTUP_TIMED_OUT, LoopbackCluster

pytestmark = pytest.mark.cluster


def fake_ray(tmp_path, monkeypatch, failures: int, message: str) -> None:
    """`ray` that prints ``message`` and exits 1 the first ``failures`` times, then is the real one."""
    count = tmp_path / "starts"
    script = tmp_path / "ray"
    script.write_text(f"""#!/bin/sh
n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}
if [ "$n" -lt {failures} ]; then echo "Exception: {message}"; exit 1; fi
exec {loopback.RAY} "$@"
""")
    script.chmod(0o755)
    monkeypatch.setattr(loopback, "RAY", str(script))


def test_a_node_that_timed_out_during_startup_is_started_again(tmp_path, monkeypatch):
    fake_ray(tmp_path, monkeypatch, failures=1, message=f"{STARTUP_TIMED_OUT}. This could happen because ...")
    cluster = LoopbackCluster()
    try:
        head = cluster.start_head(num_cpus=1)
        assert head.starts == 2 and head.alive and len(cluster.node_ids()) == 1
    finally:
        cluster.shutdown()


def test_retries_are_bounded_and_other_deaths_fail_at_once(tmp_path, monkeypatch):
    fake_ray(tmp_path, monkeypatch, failures=loopback.STARTUP_RETRIES + 1, message=STARTUP_TIMED_OUT)
    cluster = LoopbackCluster()
    try:
        with pytest.raises(RuntimeError, match="ray start for head exited"):
            cluster.start_head(num_cpus=1)
        assert cluster.nodes[0].starts == loopback.STARTUP_RETRIES + 1
    finally:
        cluster.shutdown()

    (tmp_path / "starts").unlink()
    fake_ray(tmp_path, monkeypatch, failures=1, message="address already in use")
    cluster = LoopbackCluster()
    try:
        with pytest.raises(RuntimeError, match="address already in use"):
            cluster.start_head(num_cpus=1)
        assert cluster.nodes[0].starts == 1
    finally:
        cluster.shutdown()
