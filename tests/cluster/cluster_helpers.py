"""A real multi-node Ray cluster on this machine, for the cluster tests and ``benchmarks/bench_cluster.py``.

Every node is its own ``ray start`` (a head with ``--num-cpus=0``, worker nodes with the CPUs
asked), all on this machine: the nodes share its IP and are told apart by their node ids. Each
``ray start`` runs in its own process group with its own ports (nothing collides with other Ray
clusters on the machine), under a short dedicated ``--temp-dir`` per node (Ray's socket paths must
stay under 107 characters; nodes sharing one pick clashing socket names when they start together) and with its own auth token file (``RAY_AUTH_TOKEN_PATH``): the shared
``~/.ray/auth_token`` may be rewritten by other users of the machine. :meth:`LocalRayCluster.stop`
SIGKILLs exactly the processes this cluster started; never ``ray stop``, which kills every Ray
process on the machine.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _psutil() -> Any:
    """psutil, imported on first use: without it installed, from Ray's vendored copy, which needs
    ``import ray`` first; and a driver must set its ``RAY_*`` environment before Ray is imported."""
    try:
        return importlib.import_module("psutil")
    except ImportError:  # Ray vendors psutil in ray/thirdparty_files, which `import ray` puts on sys.path
        importlib.import_module("ray")
        return importlib.import_module("psutil")

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


_HANDED_OUT: set[int] = set()  # every port this process gave a node: never given twice


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports. Each is held bound until all are picked, and none that this
    process handed out before is handed out again: ports closed one by one may come back from the
    kernel at once, and two Ray components of one node given the same port make ``ray start`` fail
    ("trying to use a port number ... that is used by other components")."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < n:
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                ports.append(port)
                _HANDED_OUT.add(port)
        return ports


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class Node:
    name: str
    num_cpus: int
    node_manager_port: int
    proc: subprocess.Popen[bytes]
    log: Path
    pgid: int
    node_id: str | None = None
    killed: bool = False
    pids: set[int] = field(default_factory=set)  # raylet and its descendants, as last seen


class LocalRayCluster:
    """``launch(n)`` starts a head and then ``n`` worker nodes in a background thread (the caller
    may work meanwhile); ``add_worker()`` starts one more node without waiting; ``wait_ready()``
    waits for every ``ray start`` and for the cluster to show the nodes alive."""

    def __init__(self, object_store_mb: int = 100) -> None:
        self.temp_dir = Path(f"/tmp/zr_{uuid.uuid4().hex[:8]}")
        self.temp_dir.mkdir(parents=True)
        self.logs = self.temp_dir / "logs-zennas"
        self.logs.mkdir()
        self.token_path = self.temp_dir / "auth_token"
        self.token_path.write_text(uuid.uuid4().hex)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.client_port = free_port()
        self.client_address = f"ray://127.0.0.1:{self.client_port}"  # Ray Client: drivers off the nodes
        self.object_store = object_store_mb * 1024 * 1024
        self.head: Node | None = None
        self.workers: list[Node] = []
        self.stopped = False
        self.created = time.time()
        self._launcher: threading.Thread | None = None

    # -- environment ---------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        """The environment of this cluster's processes and of its drivers (service, CLI)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_", "ZENNAS_")) or k == "RAY_TMPDIR"}
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path),
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                    "RAY_raylet_start_wait_time_s": "180"})  # a loaded machine registers nodes slowly
        env.update(extra)
        return env

    # -- nodes ---------------------------------------------------------------------------------
    def _start(self, name: str, args: list[str], num_cpus: int) -> Node:
        nm_port, om_port, agent_port, agent_grpc_port, env_port, metrics_port = free_ports(6)
        ports = [
            f"--node-manager-port={nm_port}", f"--object-manager-port={om_port}",
            f"--dashboard-agent-listen-port={agent_port}", f"--dashboard-agent-grpc-port={agent_grpc_port}",
            f"--runtime-env-agent-port={env_port}", f"--metrics-export-port={metrics_port}",
            "--min-worker-port=0", "--max-worker-port=0",
        ]
        # a temp dir per node: nodes starting at once in one dir pick the same socket names
        cmd = [RAY, "start", *args, f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir / name}",
               f"--object-store-memory={self.object_store}", "--disable-usage-stats", *ports]
        log = self.logs / f"{name}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, env=self.env(), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        return Node(name, num_cpus, nm_port, proc, log, pgid=proc.pid)

    def launch_head(self) -> Node:
        assert self.head is None
        self.head = self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                                         f"--dashboard-port={free_port()}",
                                         f"--ray-client-server-port={self.client_port}"], 0)
        return self.head

    def launch(self, workers: int, num_cpus: int = 1) -> None:
        """Head, then (once it is up: a raylet that cannot reach the GCS gives up) the workers."""
        def run() -> None:
            head = self.launch_head()
            with contextlib.suppress(subprocess.TimeoutExpired):
                head.proc.wait(timeout=240)
            for _ in range(workers):
                self.add_worker(num_cpus)

        self._launcher = threading.Thread(target=run, name="ray-cluster-launch", daemon=True)
        self._launcher.start()

    def add_worker(self, num_cpus: int = 1) -> Node:
        """Start a worker node (it joins once the head answers; ``ray start`` retries meanwhile)."""
        node = self._start(f"worker{len(self.workers) + 1}", [f"--address={self.address}"], num_cpus)
        self.workers.append(node)
        return node

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Wait for every ``ray start`` to finish and every live node to show up alive."""
        deadline = time.monotonic() + timeout
        if self._launcher is not None:
            self._launcher.join(timeout=timeout)
        for node in [self.head, *self.workers]:
            assert node is not None
            if node.killed:
                continue
            try:
                rc = node.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"`ray start` of {node.name} still running after {timeout} s:\n"
                                     f"{self.tail(node)}") from None
            if rc != 0:
                raise AssertionError(f"`ray start` of {node.name} exited {rc}:\n{self.tail(node)}")
            node.node_id = node.node_id or self._raylet_node_id(node)
        want = {n.node_id for n in self.live_nodes()}
        gone = {n.node_id for n in self.workers if n.killed and n.node_id}
        while True:
            alive = {n["NodeID"] for n in self.nodes() if n["Alive"]}
            if want <= alive and not (gone & alive):  # killed nodes must be marked dead, too
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes {sorted(want - alive)} not alive after {timeout} s")
            time.sleep(1.0)

    def live_nodes(self) -> list[Node]:
        return [n for n in [self.head, *self.workers] if n is not None and not n.killed]

    def nodes(self) -> list[dict[str, Any]]:
        """``ray.nodes()`` as the cluster sees it (from a short-lived driver process)."""
        code = (f"import json, ray; ray.init(address={self.address!r}, log_to_driver=False, "
                "logging_level='ERROR'); keys = ('NodeID', 'Alive', 'NodeManagerPort', 'NodeManagerAddress', "
                "'Resources'); print('NODES=' + json.dumps([{k: n[k] for k in keys} for n in ray.nodes()]))")
        r = subprocess.run([sys.executable, "-c", code], env=self.env(), capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
        for line in r.stdout.splitlines():
            if line.startswith("NODES="):
                return list(json.loads(line[len("NODES="):]))
        raise AssertionError(f"cannot list the nodes of {self.address}:\n{r.stdout}\n{r.stderr[-3000:]}")

    # -- processes -----------------------------------------------------------------------------
    def raylet(self, node: Node) -> Any:
        flag = f"--node_manager_port={node.node_manager_port}"
        for p in _psutil().process_iter(["cmdline"]):
            cmd = p.info.get("cmdline") or []
            if cmd and cmd[0].endswith("raylet") and flag in cmd:
                return p
        return None

    def _raylet_node_id(self, node: Node) -> str:
        p = self.raylet(node)
        if p is None:
            raise AssertionError(f"no raylet with --node_manager_port={node.node_manager_port}:\n{self.tail(node)}")
        for arg in p.cmdline():
            if arg.startswith("--node_id="):
                return arg.split("=", 1)[1]
        raise AssertionError(f"raylet {p.pid} has no --node_id")

    def node_processes(self, node: Node) -> list[Any]:
        """The node's raylet and its descendants (workers, agents)."""
        p = self.raylet(node)
        if p is None:
            return []
        try:
            procs = [p, *p.children(recursive=True)]
        except _psutil().NoSuchProcess:
            return []
        node.pids |= {q.pid for q in procs}
        return procs

    def cpu_seconds(self, node: Node) -> float:
        """CPU time used so far by the node's worker processes (not the raylet or its agents)."""
        total = 0.0
        for p in self.node_processes(node)[1:]:
            with contextlib.suppress(_psutil().Error):
                if "agent" in " ".join(p.cmdline()[:3]):
                    continue
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def kill_node(self, node: Node) -> None:
        """SIGKILL the node's raylet and every process under it: the node dies as a lost machine does."""
        procs = self.node_processes(node)
        assert procs, f"{node.name} has no raylet to kill"
        ps = _psutil()
        for p in procs:
            with contextlib.suppress(ps.Error):
                p.send_signal(signal.SIGKILL)
        ps.wait_procs(procs, timeout=10)
        node.killed = True

    def wait_dead(self, node: Node, timeout: float = 120.0) -> float:
        """Seconds until the cluster marks ``node`` dead."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not any(n["NodeID"] == node.node_id and n["Alive"] for n in self.nodes()):
                return time.monotonic() - t0
            time.sleep(1.0)
        raise AssertionError(f"{node.name} ({node.node_id}) still alive {timeout} s after it was killed")

    def tail(self, node: Node, n: int = 4000) -> str:
        try:
            return node.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGKILL every process of this cluster (its process groups, anything under its raylets or
        naming its temp dir) and remove the temp dir. Bounded by ``timeout``; safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        nodes = [n for n in [self.head, *self.workers] if n is not None]
        for n in nodes:
            if not n.killed:
                self.node_processes(n)
        pgids = {n.pgid for n in nodes}
        known = set().union(*(n.pids for n in nodes)) if nodes else set()
        ps = _psutil()
        victims: list[Any] = []
        tdir = str(self.temp_dir)
        for p in ps.process_iter(["cmdline", "create_time"]):
            if p.pid == os.getpid():
                continue
            try:
                cmd = p.info["cmdline"] or []
                # a group outlives its leader (`ray start` exits); once empty its id may be reused by
                # someone else's process, hence: started after this cluster, and a Ray process
                in_group = (os.getpgid(p.pid) in pgids and p.info["create_time"] >= self.created - 1
                            and any("ray" in a for a in cmd))
                mine = p.pid in known or in_group or any(tdir in a for a in cmd)
            except (ProcessLookupError, ps.Error):
                continue
            if mine:
                victims.append(p)
        for p in list(victims):
            with contextlib.suppress(ps.Error):
                victims += p.children(recursive=True)
        for p in victims:
            with contextlib.suppress(ps.Error):
                p.send_signal(signal.SIGKILL)
        ps.wait_procs(victims, timeout=timeout)
        for n in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                n.proc.wait(timeout=1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class Service:
    """``python -m zennas.cli serve --dev`` in its own process group, driving a Ray cluster."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> Service:
        import httpx

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "zennas.cli", "serve", "--dev", "--port",
                                          str(self.port)], env=self.env, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"service not ready after {timeout} s:\n{self.log()}")

    def log(self, n: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
