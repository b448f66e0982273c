"""A real multi-node Ray cluster on one host, over loopback, for integration tests.

Every node is a `ray start --block` process in its own session: all the Ray processes of a node
(gcs, raylet, dashboard, agents, workers) share its process group, so one ``killpg`` by that PID
removes exactly that node — a node loss — and nothing else on the machine. Never `ray stop`: it
kills every Ray on the host, including other people's.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import descendants, parents

RAY = str(Path(sys.executable).with_name("ray"))
BIN = str(Path(sys.executable).parent)


_TAKEN: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, never handed out twice by this process. Drawn below the kernel's
    ephemeral range (outgoing connections take ports there) and above Ray's worker ports."""
    while True:
        port = random.randint(20000, 32000)
        if port in _TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port


def private_mounts_available() -> str | None:
    """None when a node can get its own mount namespace here (root, unshare), else why not."""
    if not shutil.which("unshare"):
        return "no unshare(1) on this machine"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return None if probe.returncode == 0 else "cannot create a mount namespace (needs root / CAP_SYS_ADMIN)"


def job_server_available() -> str | None:
    """None when `ray job submit` can work here, else the reason it cannot."""
    try:
        import aiohttp  # noqa: F401  the dashboard (job server) needs ray[default]
        import ray.dashboard  # noqa: F401
    except ImportError as e:
        return f"the Ray job server needs ray[default] (pip install -e '.[cluster]'): {e}"
    return None


# What `ray start` prints when its raylet did not register with the GCS within the 30 s that
# ray/_private/node.py allows (a constant there, not a setting): on a loaded 2-core machine (two
# pytest workers, each starting Rays) a node's agents can take longer to come up.
STARTUP_TIMED_OUT = "The current node timed out during startup"
STARTUP_RETRIES = 2


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    log: Path
    resources: dict = field(default_factory=dict)
    killed: bool = False
    cmd: list[str] = field(default_factory=list)   # private_dir's wrapper and `ray start`, without the ports
    starts: int = 1

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class LoopbackCluster:
    """Head + worker nodes on 127.0.0.1 with a dedicated temp dir; torn down by process group."""

    def __init__(self, dashboard: bool = False, env: dict[str, str] | None = None):
        # short path: Ray's unix sockets live under it (108-byte limit)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ovc", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_port = free_port() if dashboard else None
        self.nodes: list[Node] = []
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",   # `overnight` for job entrypoints
            "RAY_USAGE_STATS_ENABLED": "0",
            # declare a killed node dead after ~2 s instead of ~15 s
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            **(env or {}),
        }
        self.env.pop("RAY_ADDRESS", None)

    @property
    def dashboard_url(self) -> str:
        assert self.dashboard_port, "cluster started without a dashboard"
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ports(self) -> list[str]:
        # every node gets its own ports: the defaults (e.g. the agent's 52365) collide on one host
        return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]

    def _start(self, name: str, args: list[str], resources: dict, private_dir: Path | None = None) -> Node:
        cmd = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args]
        if resources:
            cmd.append(f"--resources={json.dumps(resources)}")
        if private_dir is not None:
            # a node with its own mount namespace where ``private_dir`` is an empty tmpfs: the same
            # path, a different directory — like a node-local disk on a real cluster
            script = 'mount -t tmpfs tmpfs "$0" && exec "$@"'
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(private_dir), *cmd]
        node = Node(name, self._popen(name, cmd), self.temp_dir / f"{name}.log", resources, cmd=cmd)
        self.nodes.append(node)
        return node

    def _popen(self, name: str, cmd: list[str]) -> subprocess.Popen:
        # one temp dir per node (and per start): nodes that start together would otherwise pick
        # the same socket names
        node_tmp = self.temp_dir / name
        node_tmp.mkdir()
        return subprocess.Popen([*cmd, f"--temp-dir={node_tmp}", *self._ports()],
                                stdout=(self.temp_dir / f"{name}.log").open("w"), stderr=subprocess.STDOUT,
                                env=self.env, start_new_session=True, cwd=self.temp_dir)

    def _restart_if_slow(self, node: Node) -> bool:
        """Start ``node`` again when its `ray start` gave up waiting for its raylet to register
        (STARTUP_TIMED_OUT), at most STARTUP_RETRIES times; False when it died of anything else."""
        if node.starts > STARTUP_RETRIES or STARTUP_TIMED_OUT not in node.log.read_text():
            return False
        self._kill(node)
        node.killed = False
        node.starts += 1
        name = f"{node.name}-start{node.starts}"
        node.proc, node.log = self._popen(name, node.cmd), self.temp_dir / f"{name}.log"
        return True

    def start_head(self, num_cpus: float = 1, num_gpus: int = 0, resources: dict | None = None) -> Node:
        args = ["--head", f"--port={self.port}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
                f"--ray-client-server-port={free_port()}"]
        if self.dashboard_port:
            args += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        else:
            args += ["--include-dashboard=false"]
        node = self._start("head", args, resources or {})
        self.wait_nodes(1, timeout=90)
        return node

    def add_node(self, num_cpus: float = 1, num_gpus: int = 0, resources: dict | None = None, wait: bool = True,
                 private_dir: Path | None = None) -> Node:
        n = len(self.alive_nodes())
        node = self._start(f"node{len(self.nodes)}", [f"--address={self.address}", f"--num-cpus={num_cpus}",
                                                       f"--num-gpus={num_gpus}"], resources or {}, private_dir)
        if wait:
            self.wait_nodes(n + 1, timeout=90)
        return node

    def alive_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def node_ids(self) -> list[str]:
        """Node ids the GCS reports alive (no ray.init: the test process may run its own Ray)."""
        from ray._raylet import GcsClient

        client = GcsClient(address=self.address)
        infos = client.get_all_node_info(timeout=5)
        return [nid.hex() for nid, info in infos.items() if info.state == 0]  # 0 = ALIVE

    def wait_nodes(self, n: int, timeout: float) -> None:
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            down = [x for x in self.nodes if not x.alive and not x.killed]
            dead = [x for x in down if not self._restart_if_slow(x)]
            if dead:
                raise RuntimeError(f"ray start for {dead[0].name} exited:\n{dead[0].log.read_text()[-3000:]}")
            time.sleep(0.5)
            if down or any(not x.alive for x in self.nodes if not x.killed):
                continue   # asking a GCS that is not there blocks for many seconds: look again first
            try:
                if len(self.node_ids()) >= n:
                    return
            except Exception as e:  # noqa: BLE001 - GCS not up yet
                last = e
        raise TimeoutError(f"cluster did not reach {n} nodes in {timeout}s ({last})")

    def wait_dashboard(self, timeout: float = 90) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the dashboard (job server) did not answer in {timeout}s")

    def node_of(self, pid: int) -> Node | None:
        """The node whose `ray start` process is an ancestor of ``pid`` (workers are children of
        their raylet, which is a child of `ray start`)."""
        parent_of = parents()
        ours = {n.proc.pid: n for n in self.nodes}
        while pid > 1:
            if pid in ours:
                return ours[pid]
            pid = parent_of.get(pid, 0)
        return None

    def _kill(self, node: Node) -> None:
        node.killed = True
        # the process group holds the Ray daemons; workers start their own groups, so also kill
        # every descendant of the node's `ray start`
        victims = descendants(node.proc.pid)
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            node.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def kill_node(self, node: Node) -> None:
        """Node loss: SIGKILL every process of that node at once (raylet, agents, workers)."""
        self._kill(node)

    def shutdown(self) -> None:
        # SIGKILL by process group: a test cluster has nothing worth draining, and gcs_server and
        # the monitor ignore SIGTERM for seconds
        for node in reversed(self.nodes):
            self._kill(node)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {n.name}\n{n.log.read_text()[-tail:]}" for n in self.nodes if n.log.exists())
