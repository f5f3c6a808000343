"""Building a latency profile on a Ray worker of the target device (``zennas profile build --resource``).

A :class:`ProfileBuilder` actor is placed on a node holding the Ray resource label (the same labels the
latency-measuring evaluators use), runs :func:`zennas.latency.build_profile` there in a thread, and
answers ``poll()`` with the latest progress event and the latest saved snapshot, so the driver shows
a progress bar and keeps a resumable copy of the partial profile while the build runs remotely.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from zennas.errors import SpecError


class ProfileBuilder:
    def __init__(self) -> None:
        self._progress: dict[str, Any] | None = None
        self._snapshot: dict[str, Any] | None = None
        self._snap_seq = 0
        self._lock = threading.Lock()

    def build(self, spec: dict[str, Any], resume: dict[str, Any] | None) -> dict[str, Any]:
        from zennas.latency.build import BuildSpec, build_profile
        from zennas.latency.profile import profile_from_dict

        def save(p: Any) -> None:
            with self._lock:
                self._snapshot, self._snap_seq = p.to_dict(), self._snap_seq + 1

        def progress(ev: dict[str, Any]) -> None:
            with self._lock:
                self._progress = ev

        bs = BuildSpec(**spec)
        p = build_profile(bs, resume=profile_from_dict(resume) if resume else None, save=save, progress=progress)
        return p.to_dict()

    def poll(self, seen: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int]:
        """(latest progress, the snapshot if newer than ``seen``, its number)."""
        with self._lock:
            snap = self._snapshot if self._snap_seq > seen else None
            return self._progress, snap, self._snap_seq


def build_profile_on_ray(spec: Any, resume: dict[str, Any] | None, *, resource: str | None, address: str | None,
                         progress: Callable[[dict[str, Any]], None] | None = None,
                         save: Callable[[dict[str, Any]], None] | None = None, poll_s: float = 1.0) -> dict[str, Any]:
    """Run the build on a node that offers ``resource`` (any node without one); returns the profile document."""
    from zennas_workers.backend import RESOURCE_UNIT, ray_init

    ray_init(address)
    options: dict[str, Any] = {"num_cpus": spec.threads, "max_concurrency": 2, "max_restarts": 0}
    if resource is not None:
        if not any(n.get("Alive") and n.get("Resources", {}).get(resource, 0) > 0 for n in ray.nodes()):
            raise SpecError(f"no Ray node offers resource {resource!r}; start the device's node with "
                            f"`ray start --resources='{{\"{resource}\": 1}}'`", field="resource")
        options["resources"] = {resource: RESOURCE_UNIT}
    actor: Any = ray.remote(ProfileBuilder).options(**options).remote()  # type: ignore[attr-defined]
    try:
        done = actor.build.remote({f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}, resume)
        seen = 0
        while True:
            ready, _ = ray.wait([done], timeout=poll_s)
            ev, snap, seq = ray.get(actor.poll.remote(seen))
            if snap is not None and save is not None:
                save(snap)
                seen = seq
            if ev is not None and progress is not None:
                progress(ev)
            if ready:
                return ray.get(done)  # type: ignore[no-any-return]
            time.sleep(0)
    finally:
        ray.kill(actor)
