"""The Ray evaluation backend: a pool of :class:`~zennas_workers.actors.EvaluatorActor` per resource
label, records back in task order, lost workers replaced and their tasks retried.

``RayBackend.evaluate(tasks)`` is a drop-in for :class:`zennas.search.task.LocalBackend`: the same
``TaskRunner`` computes each record, so records match the local ones except ``worker``, ``seconds``
and ``attempts`` (give both sides the same torch thread count: float sums depend on it).

Scheduling: tasks of one call are queued per pool (tasks whose ``latency.resource`` names a Ray
custom resource go to actors created with ``resources={name: 0.01}``; the others to the default
pool). An actor gets work only once its start-up ``ping`` has answered, and holds at most
``in_flight`` tasks; results are collected with ``ray.wait(num_returns=1)`` as they land and the
freed actor is fed the next queued task.

Faults: when an actor dies (process crash, OOM kill, node loss, ``ray.kill``) its in-flight tasks
fail with a Ray actor error; the actor is replaced by a new one and each such task is queued again
until it has been tried ``1 + max_retries`` times, after which its record is ``failed`` with the
error as ``reason``. Every record carries ``attempts`` and ``worker`` = ``"<node id[:8]>/<actor
id[:8]>"`` (node ids, not IPs: several nodes may share one machine). After ``recycle_after``
evaluations an actor is retired and replaced (bounds memory growth from cached scorers, allocator
fragmentation).

Clusters: without ``num_workers`` a pool is sized from the cluster's CPUs (``// threads``; with
``num_gpus`` also by its GPUs) and grows when later ``evaluate`` calls find more free CPUs (nodes
joined); an actor lost with its node is replaced through the fault path, and its replacement waits
for room if the cluster shrank. Every actor reports its versions when it starts: a node whose Ray,
Python (major.minor) or zennas differs from the driver's stops the search with
:class:`VersionMismatchError` naming the node, the package and both versions; a torch difference is
only logged (scores may then differ from a local run in the last bits).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.exceptions as rex

from zennas.errors import RunFailure, SpecError

log = logging.getLogger(__name__)

#: Errors meaning "the worker (actor, process or node) is gone": replace the actor, retry the task.
WORKER_LOST: tuple[type[BaseException], ...] = tuple(
    e for e in (
        getattr(rex, "RayActorError", None),  # includes ActorDiedError, ActorUnavailableError
        getattr(rex, "ActorDiedError", None),
        getattr(rex, "ActorUnavailableError", None),
        getattr(rex, "WorkerCrashedError", None),
        getattr(rex, "NodeDiedError", None),
        getattr(rex, "ObjectLostError", None),
        getattr(rex, "OutOfMemoryError", None),
        getattr(rex, "ActorUnschedulableError", None),
    ) if isinstance(e, type)
)

RESOURCE_UNIT = 0.01  # of a latency resource label per actor: many actors may share a labelled node


class WorkerPoolError(RunFailure):
    """The evaluator actors cannot be started (nothing schedulable, or every start fails)."""

    def __init__(self, message: str, *, field: str | None = "workers") -> None:
        super().__init__(message, field=field)


class VersionMismatchError(WorkerPoolError):
    """A worker node runs another Ray, Python or zennas than the driver (``node``, ``field``,
    ``driver_version``, ``worker_version``)."""

    def __init__(self, node: str, field: str, driver: str, worker: str, where: str = "") -> None:
        fix = f"install the same {field} on every node of the cluster"
        if field == "zennas":
            fix += " (or ship the driver's with ZENNAS_RAY_SHIP_CODE=1)"
        super().__init__(f"version mismatch: Ray node {node}{f' ({where})' if where else ''} runs {field} "
                         f"{worker}, the driver runs {field} {driver}; {fix}", field=field)
        self.node, self.driver_version, self.worker_version = node, driver, worker


#: Versions that must match between the driver and every worker node (python: major.minor).
STRICT_VERSIONS = ("ray", "python", "zennas")


def driver_versions() -> dict[str, str]:
    """This process's versions, which every actor's ``ping()`` is compared with."""
    from zennas_workers.actors import _versions

    return _versions()


def _comparable(name: str, version: str | None) -> str | None:
    if version is not None and name == "python":
        return ".".join(version.split(".")[:2])
    return version


# -- connecting ---------------------------------------------------------------------------------
def _stage_code(dest: Path) -> list[str]:
    """Copies of the ``zennas`` and ``zennas_workers`` packages under their import names.

    Ray's ``py_modules`` ships a directory under its own base name, and ``zennas_workers`` lives in
    ``workers/`` (``zennas.search_spaces`` in ``search_spaces/``), so the installed module objects
    cannot be shipped as they are."""
    import zennas

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    zdir = dest / "zennas"
    shutil.copytree(Path(zennas.__file__).parent, zdir, ignore=ignore)
    try:
        import zennas.search_spaces as spaces

        src = Path(spaces.__file__).parent if spaces.__file__ else Path(next(iter(spaces.__path__)))
        if src.resolve() != (Path(zennas.__file__).parent / "search_spaces").resolve():
            shutil.copytree(src, zdir / "search_spaces", ignore=ignore, dirs_exist_ok=True)
    except ImportError:  # pragma: no cover - a build without the shipped spaces
        pass
    shutil.copytree(Path(__file__).parent, dest / "zennas_workers", ignore=ignore)
    return [str(zdir), str(dest / "zennas_workers")]


class RayConnectError(RunFailure):
    """The Ray cluster named by ``ray_address`` cannot be reached (or refused the connection)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="ray_address")


#: ``ZENNAS_RAY_LOOPBACK=0`` lets an embedded Ray listen on the machine's address (Ray's own default,
#: for nodes that should join it); by default it listens on 127.0.0.1 only.
LOOPBACK_ENV = "ZENNAS_RAY_LOOPBACK"
_RAY_NO_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_patch_lock = threading.Lock()
_stderr_routed = False


def _loopback(on: bool) -> None:
    """Make the next embedded Ray bind every port (GCS, raylet, workers, agents) to 127.0.0.1, or not.

    Ray binds its servers to loopback exactly when its node IP is 127.0.0.1, and it picks that IP for
    a new local instance when it believes clusters are off (its Windows/macOS default, switched by
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read by ``ray._private.ray_constants`` at import). The
    variable is set for the node processes this driver starts, and the already-imported constant is
    set to match; ``ray.init(_node_ip_address="127.0.0.1")`` does not do it (Ray swaps a loopback
    address for the machine's address)."""
    from ray._private import ray_constants

    with _patch_lock:
        if on:
            os.environ[_RAY_NO_CLUSTER_ENV] = "0"
            ray_constants.ENABLE_RAY_CLUSTER = False
        elif os.environ.get(_RAY_NO_CLUSTER_ENV) == "0":
            del os.environ[_RAY_NO_CLUSTER_ENV]
            ray_constants.ENABLE_RAY_CLUSTER = True


def _route_driver_output_to_stderr() -> None:
    """Ray's driver prints cluster events (``(raylet) The node with node id ... has been marked dead``)
    and forwarded worker output on *stdout*, from a background thread, whatever ``log_to_driver``
    says; a CLI's stdout carries its result (``--json``), so every such line goes to stderr instead.
    Ray looks the printer up by name at each event, so replacing it before ``ray.init`` is enough."""
    global _stderr_routed
    import ray._private.worker as ray_worker

    with _patch_lock:
        if _stderr_routed:
            return
        original = getattr(ray_worker, "print_to_stdstream", None)
        if original is None:  # another Ray: nothing to patch (the --json test would tell)
            log.warning("cannot route Ray's driver output to stderr: ray._private.worker.print_to_stdstream is gone")
            return

        def to_stderr(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            return original({**data, "is_err": True}, *args, **kwargs)

        ray_worker.print_to_stdstream = to_stderr
        _stderr_routed = True


def _split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``host:port`` or ``ray://host:port`` address; None for ``auto`` and the like."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """:class:`RayConnectError` (field ``ray_address``) unless something accepts a TCP connection at
    ``address``: Ray's own connect retries for minutes before it gives up on a dead address."""
    hp = _split_address(address)
    if hp is None:
        if address == "auto":  # Ray reads the address of the cluster started on this machine
            return
        raise SpecError(f"ray_address: {address!r} is not HOST:PORT, ray://HOST:PORT or auto", field="ray_address")
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise RayConnectError(f"ray_address: no Ray cluster answers at {address} ({why}); start one with "
                              "`ray start --head`, or leave ray_address unset for an embedded Ray") from e


def ray_init(address: str | None = None, *, num_cpus: int | None = None, loopback: bool | None = None,
             connect_timeout: float = 10.0) -> None:
    """Connect to Ray once per process: a no-op when Ray is already initialized.

    The address comes from ``address``, else ``$ZENNAS_RAY_ADDRESS``, else ``$RAY_ADDRESS``; without
    one (or with ``"local"``) a **new** embedded single-node Ray starts with ``num_cpus`` CPUs
    (default: all), never attaching to a cluster another program started (or left behind in
    ``/tmp/ray``); it listens on 127.0.0.1 only unless ``loopback`` is False (default: ``$ZENNAS_RAY_LOOPBACK``
    != ``0``). An address that does not answer within ``connect_timeout`` seconds is a
    :class:`RayConnectError`. With ``ZENNAS_RAY_SHIP_CODE=1`` the driver's ``zennas`` and
    ``zennas_workers`` sources are shipped to the cluster as ``py_modules``; otherwise the cluster's
    nodes must have the package installed. Ray's driver output goes to stderr (see
    :func:`_route_driver_output_to_stderr`).

    Call it from a thread that lives as long as Ray should: Ray starts its node processes with
    ``PR_SET_PDEATHSIG``, which Linux fires when the *thread* that forked them exits.
    """
    if ray.is_initialized():
        return
    _route_driver_output_to_stderr()
    address = address or os.environ.get("ZENNAS_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS") or None
    if address is None or address == "local":
        if loopback is None:
            loopback = os.environ.get(LOOPBACK_ENV, "1") != "0"
        _loopback(loopback)
        # "local" always starts a new instance: never attach to a cluster another program left running
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
        return
    _loopback(False)
    check_reachable(address, connect_timeout)
    try:
        if os.environ.get("ZENNAS_RAY_SHIP_CODE") == "1":
            with tempfile.TemporaryDirectory(prefix="zennas-ship-") as tmp:  # uploaded during ray.init
                ray.init(address=address, runtime_env={"py_modules": _stage_code(Path(tmp))},
                         log_to_driver=False, ignore_reinit_error=True)
        else:
            ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
    except Exception as e:  # whatever ray.init raises for a cluster it cannot join
        raise RayConnectError(f"ray_address: cannot connect to the Ray cluster at {address}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


# -- the pool -----------------------------------------------------------------------------------
@dataclass(eq=False)
class _Slot:
    handle: Any
    created: float
    ping_ref: Any | None  # outstanding start-up ping; None once the actor has answered (or is gone)
    label: str  # "?/<actor id[:8]>" until the ping answers, then the worker's "<node[:8]>/<actor[:8]>"
    info: dict[str, Any] | None = None
    evaluations: int = 0
    in_flight: int = 0

    @property
    def ready(self) -> bool:
        return self.info is not None


@dataclass(eq=False)
class _Pool:
    resource: str | None
    size: int
    options: dict[str, Any]
    auto: bool = False  # sized from the cluster (no num_workers): may grow when nodes join
    slots: list[_Slot] = field(default_factory=list)
    start_failures: int = 0  # consecutive actors that died before answering their ping


@dataclass(eq=False)
class _Flight:
    pool: _Pool
    slot: _Slot
    index: int
    submitted: float


def _resource_of(task: dict[str, Any]) -> str | None:
    lat = task.get("latency")
    res = lat.get("resource") if isinstance(lat, dict) else None
    return str(res) if res else None


def _error_reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:200]


class RayBackend:
    """Evaluates search tasks on Ray actors (see the module docstring).

    ``num_workers``: actors per pool (default: the cluster's CPUs // ``threads``; for a resource
    pool, the CPUs of the nodes offering that resource // ``threads``, and never more than those;
    a pool sized this way grows when nodes join, checked at most every ``grow_interval`` seconds).
    ``threads``: torch threads (and Ray CPUs) per actor. ``num_gpus``: GPUs (or a fraction) per
    actor, 0 by default: the shipped scores run on the CPU, so GPUs only help scorers that use
    them; with it the default size is also capped by the cluster's GPUs // ``num_gpus``, and a
    cluster without GPUs is a :class:`SpecError`. ``resources``: extra Ray resources every actor
    asks for. ``max_retries``: re-submissions of a task whose worker died. ``recycle_after``:
    evaluations before an actor is replaced. ``in_flight``: tasks queued on one actor at a time.
    ``task_timeout``: seconds after which a task's actor is presumed hung, killed and the task
    retried (default: no limit). ``startup_timeout``: seconds a pool may go without any started actor
    while it has work before :class:`WorkerPoolError` is raised.

    Not thread-safe: one ``evaluate`` at a time. Pools live until :meth:`close`.
    """

    name = "ray"

    def __init__(self, *, num_workers: int | None = None, threads: int = 1, num_gpus: float = 0.0,
                 resources: dict[str, float] | None = None, max_retries: int = 2, recycle_after: int = 5000,
                 address: str | None = None, in_flight: int = 1, task_timeout: float | None = None,
                 startup_timeout: float = 300.0) -> None:
        if num_workers is not None and num_workers < 1:
            raise SpecError(f"num_workers must be >= 1, got {num_workers}", field="num_workers")
        if threads < 1:
            raise SpecError(f"threads must be >= 1, got {threads}", field="threads")
        if max_retries < 0:
            raise SpecError(f"max_retries must be >= 0, got {max_retries}", field="max_retries")
        if recycle_after < 1:
            raise SpecError(f"recycle_after must be >= 1, got {recycle_after}", field="recycle_after")
        if in_flight < 1:
            raise SpecError(f"in_flight must be >= 1, got {in_flight}", field="in_flight")
        if num_gpus < 0:
            raise SpecError(f"num_gpus must be >= 0, got {num_gpus}", field="num_gpus")
        self.num_workers = num_workers
        self.threads = threads
        self.num_gpus = num_gpus
        self.resources = dict(resources or {})
        self.max_retries = max_retries
        self.recycle_after = recycle_after
        self.address = address
        self.in_flight = in_flight
        self.task_timeout = task_timeout
        self.startup_timeout = startup_timeout
        self._pools: dict[str | None, _Pool] = {}
        self._versions: dict[str, str] | None = None
        self._torch_warned = False
        self.grow_interval = 5.0  # seconds between looks for free CPUs (nodes that joined)
        self._grow_checked = 0.0
        self.replaced = 0  # actors replaced after a fault or a timeout (not counting recycling)
        self.recycled = 0  # actors retired after recycle_after evaluations
        self.grown = 0  # actors added to auto-sized pools after nodes joined

    # -- public ---------------------------------------------------------------------------------
    def evaluate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One record per task, in the order of ``tasks``."""
        if not tasks:
            return []
        ray_init(self.address)
        groups: dict[str | None, deque[int]] = {}
        for i, t in enumerate(tasks):
            groups.setdefault(_resource_of(t), deque()).append(i)
        for r in groups:  # SpecError for an unknown label before any actor starts
            if r is not None and r not in self._pools:
                self._resource_nodes(r)
        self._grow()
        pools = {r: self._pool(r) for r in groups}
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        attempts = [0] * len(tasks)
        flights: dict[Any, _Flight] = {}
        remaining = len(tasks)
        try:
            while remaining:
                now = time.monotonic()
                for r, pool in pools.items():
                    self._dispatch(pool, groups[r], tasks, attempts, flights, now)
                waiting = list(flights)
                waiting += [s.ping_ref for p in pools.values() for s in p.slots if s.ping_ref is not None]
                if not waiting:  # cannot happen: work left means an actor is busy or starting
                    raise WorkerPoolError("internal error: tasks left but no actor busy or starting")
                done, _ = ray.wait(waiting, num_returns=1, timeout=self._wait_timeout(pools, groups, flights))
                for ref in done:
                    fl = flights.pop(ref, None)
                    if fl is None:
                        self._started(pools, ref)
                        continue
                    rec = self._landed(ref, fl, tasks, attempts, groups)
                    if rec is not None:
                        results[fl.index] = rec
                        remaining -= 1
                remaining -= self._expire(pools, groups, tasks, attempts, flights, results)
                self._check_starved(pools, groups)
        finally:
            if flights:  # left abnormally (error, interrupt): those actors still work on stale tasks
                for fl in list(flights.values()):
                    self._replace(fl.pool, fl.slot, "abandoned")
        out: list[dict[str, Any]] = []
        for rec in results:
            assert rec is not None
            out.append(rec)
        return out

    def parallelism(self, resource: str | None = None) -> int:
        """How many tasks routed to ``resource`` (None: any node) run at once: the actors of its pool
        (started on first use). A latency verification measures this many candidates per wave."""
        return len(self._pool(resource).slots)

    def workers(self) -> list[dict[str, Any]]:
        """The ping answers of the started actors (node, pid, versions, evaluations at start)."""
        return [dict(s.info, resource=p.resource) for p in self._pools.values() for s in p.slots if s.info]

    def close(self) -> None:
        """Kill every actor. The backend stays usable: the next ``evaluate`` starts new pools."""
        pools, self._pools = self._pools, {}
        for p in pools.values():
            for s in p.slots:
                self._kill(s)

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pools ----------------------------------------------------------------------------------
    def _pool(self, resource: str | None) -> _Pool:
        pool = self._pools.get(resource)
        if pool is not None:
            return pool
        resources = dict(self.resources)
        cap = self._capacity(resource)
        if resource is None:
            size = self.num_workers or max(1, cap)
        else:
            size = max(1, min(self.num_workers, cap) if self.num_workers else cap)
            resources[resource] = resources.get(resource, 0.0) + RESOURCE_UNIT
        options: dict[str, Any] = {"num_cpus": self.threads}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if resources:
            options["resources"] = resources
        pool = _Pool(resource, size, options, auto=self.num_workers is None)
        for _ in range(size):
            pool.slots.append(self._spawn(pool))
        self._pools[resource] = pool
        self._grow_checked = time.monotonic()  # sized from the cluster just now
        return pool

    def _capacity(self, resource: str | None) -> int:
        """Actors the alive nodes (those offering ``resource``) can hold: CPUs // threads, and GPUs //
        num_gpus with ``num_gpus``; :class:`SpecError` when GPUs are asked and the cluster has none."""
        if resource is None:
            total = ray.cluster_resources()
            cap = int(total.get("CPU", 0)) // self.threads
            gpus = float(total.get("GPU", 0))
        else:
            nodes = self._resource_nodes(resource)
            cap = sum(int(n["Resources"].get("CPU", 0)) for n in nodes) // self.threads
            cap = min(cap, sum(math.floor(n["Resources"][resource] / RESOURCE_UNIT + 1e-9) for n in nodes))
            gpus = sum(float(n["Resources"].get("GPU", 0)) for n in nodes)
        if self.num_gpus:
            if gpus <= 0:
                raise SpecError(f"num_gpus={self.num_gpus:g} per evaluator, but no Ray node"
                                f"{f' offering {resource!r}' if resource else ''} has a GPU", field="num_gpus")
            cap = min(cap, math.floor(gpus / self.num_gpus + 1e-9))
        return cap

    def _grow(self) -> None:
        """Add actors to auto-sized pools when the cluster has free room for them (nodes joined).

        Looked at most every ``grow_interval`` seconds; a pool never grows beyond the capacity of
        the alive nodes, nor by more than the CPUs (and GPUs) free right now."""
        now = time.monotonic()
        auto = [p for p in self._pools.values() if p.auto]
        if not auto or now - self._grow_checked < self.grow_interval:
            return
        self._grow_checked = now
        free = ray.available_resources()
        room = int(free.get("CPU", 0)) // self.threads
        if self.num_gpus:
            room = min(room, math.floor(float(free.get("GPU", 0)) / self.num_gpus + 1e-9))
        for pool in auto:
            if room <= 0:
                return
            try:
                cap = self._capacity(pool.resource)
            except SpecError:  # the labelled nodes (or every GPU) left: nothing to grow onto
                continue
            add = min(cap - len(pool.slots), room)
            if add <= 0:
                continue
            for _ in range(add):
                pool.slots.append(self._spawn(pool))
            pool.size = len(pool.slots)
            room -= add
            self.grown += add
            log.info("cluster grew: %d more evaluator(s) for %s (now %d)", add,
                     f"resource {pool.resource!r}" if pool.resource else "the default pool", pool.size)

    @staticmethod
    def _resource_nodes(resource: str) -> list[dict[str, Any]]:
        """The alive nodes offering ``resource``; :class:`SpecError` when there is none."""
        alive = [n for n in ray.nodes() if n.get("Alive")]
        nodes = [n for n in alive if n.get("Resources", {}).get(resource, 0) > 0]
        if not nodes:
            builtin = {"CPU", "GPU", "memory", "object_store_memory"}
            have = sorted({k for n in alive for k in n.get("Resources", {})
                           if k not in builtin and not k.startswith(("node:", "accelerator_type:"))})
            raise SpecError(
                f"no Ray node offers resource {resource!r} (the latency worker's label); start the "
                f"timing nodes with `ray start --resources='{{\"{resource}\": 1}}'`"
                + (f"; custom resources offered: {', '.join(have)}" if have else ""),
                field="latency.resource")
        return nodes

    def _spawn(self, pool: _Pool) -> _Slot:
        from zennas_workers.actors import EvaluatorActor

        handle = EvaluatorActor.options(**pool.options).remote(self.threads)
        aid = handle._actor_id.hex() if hasattr(handle, "_actor_id") else "?"
        return _Slot(handle, time.monotonic(), handle.ping.remote(), f"?/{aid[:8]}")

    def _kill(self, slot: _Slot) -> None:
        slot.ping_ref = None
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:  # already gone
            pass

    def _replace(self, pool: _Pool, slot: _Slot, why: str) -> None:
        """Swap ``slot``'s actor for a new one (no-op if it was already swapped out)."""
        for k, s in enumerate(pool.slots):
            if s is slot:
                self._kill(slot)
                pool.slots[k] = self._spawn(pool)
                if why == "recycle":
                    self.recycled += 1
                else:
                    self.replaced += 1
                    log.warning("replaced evaluator %s (%s)", slot.label, why)
                return

    def _started(self, pools: dict[str | None, _Pool], ref: Any) -> None:
        for pool in pools.values():
            for slot in pool.slots:
                if slot.ping_ref is not None and slot.ping_ref == ref:
                    slot.ping_ref = None
                    try:
                        info = ray.get(ref)
                    except rex.RayError as e:
                        pool.start_failures += 1
                        if pool.start_failures > max(3, 2 * pool.size):
                            raise WorkerPoolError(f"evaluator actors keep dying at start-up: "
                                                  f"{_error_reason(e)}") from e
                        self._replace(pool, slot, f"start-up failed: {_error_reason(e)}")
                        return
                    pool.start_failures = 0
                    slot.info, slot.label = info, info["worker"]
                    try:
                        self._check_versions(info)
                    except VersionMismatchError:
                        self._kill(slot)
                        raise
                    return

    def _check_versions(self, info: dict[str, Any]) -> None:
        """Raise :class:`VersionMismatchError` when the actor's Ray, Python (major.minor) or zennas
        differs from the driver's; log other differences (torch) once."""
        if self._versions is None:
            self._versions = driver_versions()
        theirs = info.get("versions") or {}
        node = str(info.get("node_id") or info.get("worker") or "?")
        for k in STRICT_VERSIONS:
            mine = self._versions.get(k)
            if mine is not None and _comparable(k, theirs.get(k)) != _comparable(k, mine):
                raise VersionMismatchError(node, k, mine, str(theirs.get(k)),
                                           where=f"{info.get('node_ip', '?')}, pid {info.get('pid', '?')}")
        diff = {k: (v, theirs.get(k)) for k, v in self._versions.items()
                if k not in STRICT_VERSIONS and theirs.get(k) != v}
        if diff and not self._torch_warned:
            self._torch_warned = True
            log.warning("worker %s runs other versions than the driver (driver, worker): %s; scores may "
                        "differ from a local run", info.get("worker"), diff)

    # -- the loop -------------------------------------------------------------------------------
    def _dispatch(self, pool: _Pool, queue: deque[int], tasks: list[dict[str, Any]], attempts: list[int],
                  flights: dict[Any, _Flight], now: float) -> None:
        for slot in list(pool.slots):  # retire actors that are done with their share
            if slot.ready and slot.in_flight == 0 and slot.evaluations >= self.recycle_after:
                self._replace(pool, slot, "recycle")
        progress = True
        while queue and progress:  # one task per actor per round: spread evenly
            progress = False
            for slot in pool.slots:
                if not queue:
                    break
                if (not slot.ready or slot.in_flight >= self.in_flight
                        or slot.evaluations + slot.in_flight >= self.recycle_after):
                    continue
                i = queue.popleft()
                ref = self._submit(slot, tasks[i])
                attempts[i] += 1
                slot.in_flight += 1
                flights[ref] = _Flight(pool, slot, i, now)
                progress = True

    def _submit(self, slot: _Slot, task: dict[str, Any]) -> Any:
        """Send one task to one actor (the seam fault-injection tests override)."""
        return slot.handle.evaluate.remote(task)

    def _landed(self, ref: Any, fl: _Flight, tasks: list[dict[str, Any]], attempts: list[int],
                groups: dict[str | None, deque[int]]) -> dict[str, Any] | None:
        fl.slot.in_flight -= 1
        try:
            rec: dict[str, Any] = ray.get(ref)
        except WORKER_LOST as e:
            self._replace(fl.pool, fl.slot, _error_reason(e))
            return self._retry_or_fail(fl, tasks, attempts, groups, e)
        except rex.RayError as e:  # the task itself raised (TaskRunner records its own errors)
            return self._failed(fl.index, tasks, attempts, fl.slot, e)
        fl.slot.evaluations += 1
        rec["attempts"] = attempts[fl.index]
        return rec

    def _retry_or_fail(self, fl: _Flight, tasks: list[dict[str, Any]], attempts: list[int],
                       groups: dict[str | None, deque[int]], e: BaseException) -> dict[str, Any] | None:
        if attempts[fl.index] <= self.max_retries:
            groups[fl.pool.resource].appendleft(fl.index)  # first in line for the next free actor
            return None
        return self._failed(fl.index, tasks, attempts, fl.slot, e)

    def _failed(self, i: int, tasks: list[dict[str, Any]], attempts: list[int], slot: _Slot,
                e: BaseException) -> dict[str, Any]:
        return {"number": tasks[i]["number"], "state": "failed", "reason": _error_reason(e), "score": None,
                "latency_ms": None, "seconds": 0.0, "worker": slot.label, "attempts": attempts[i]}

    def _wait_timeout(self, pools: dict[str | None, _Pool], groups: dict[str | None, deque[int]],
                      flights: dict[Any, _Flight]) -> float | None:
        now = time.monotonic()
        deadlines: list[float] = []
        if self.task_timeout is not None:
            deadlines += [fl.submitted + self.task_timeout for fl in flights.values()]
        for r, pool in pools.items():
            if groups[r] and not any(s.ready for s in pool.slots):
                deadlines += [s.created + self.startup_timeout for s in pool.slots]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now) + 0.01

    def _expire(self, pools: dict[str | None, _Pool], groups: dict[str | None, deque[int]],
                tasks: list[dict[str, Any]], attempts: list[int], flights: dict[Any, _Flight],
                results: list[dict[str, Any] | None]) -> int:
        """Tasks past ``task_timeout``: kill their actor, retry or fail them. Returns records made."""
        if self.task_timeout is None:
            return 0
        now = time.monotonic()
        made = 0
        for ref, fl in list(flights.items()):
            if now - fl.submitted < self.task_timeout:
                continue
            del flights[ref]
            fl.slot.in_flight -= 1
            e = TimeoutError(f"no result after {self.task_timeout:g} s on {fl.slot.label}")
            self._replace(fl.pool, fl.slot, str(e))
            rec = self._retry_or_fail(fl, tasks, attempts, groups, e)
            if rec is not None:
                results[fl.index] = rec
                made += 1
        return made

    def _check_starved(self, pools: dict[str | None, _Pool], groups: dict[str | None, deque[int]]) -> None:
        now = time.monotonic()
        for r, pool in pools.items():
            if (groups[r] and not any(s.ready for s in pool.slots)
                    and all(now - s.created >= self.startup_timeout for s in pool.slots)):
                what = f"resource {r!r}" if r else "the default pool"
                raise WorkerPoolError(
                    f"no evaluator actor for {what} started within {self.startup_timeout:g} s "
                    f"(asks {pool.options}); is the cluster full, or are other pools holding its CPUs?")


@contextmanager
def ray_backend(**kwargs: Any) -> Iterator[RayBackend]:
    """``with ray_backend(num_workers=4) as b:`` — a :class:`RayBackend` closed on exit."""
    b = RayBackend(**kwargs)
    try:
        yield b
    finally:
        b.close()
