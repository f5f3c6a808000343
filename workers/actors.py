"""The Ray actor that evaluates search tasks.

An :class:`Evaluator` wraps the library's :class:`zennas.search.task.TaskRunner`, the very code the
in-process :class:`~zennas.search.task.LocalBackend` runs, so records from Ray equal local ones
(except ``worker``, ``seconds`` and ``attempts``). Tasks and records are plain dicts.

:data:`EvaluatorActor` is the Ray actor class (``num_cpus=1``, no restarts: the backend replaces a
lost actor itself and decides whether to retry its task). The backend sets ``num_cpus`` and custom
resources per pool with ``.options(...)`` at creation.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import ray


def _versions() -> dict[str, str]:
    import torch

    import zennas

    return {"zennas": zennas.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "ray": ray.__version__}


def worker_label(node_id: str | None, actor_id: str | None) -> str:
    """``"<node id[:8]>/<actor id[:8]>"``, the ``worker`` of every record (``local/<pid>`` outside Ray)."""
    if node_id is None:
        return f"local/{os.getpid()}"
    return f"{node_id[:8]}/{(actor_id or str(os.getpid()))[:8]}"


class Evaluator:
    """Runs tasks with one :class:`TaskRunner` (its scorers and inputs are reused between tasks).

    Plain Python class; :data:`EvaluatorActor` is its Ray actor form. Records carry ``worker`` =
    ``"<node id[:8]>/<actor id[:8]>"`` (the Ray node's id: nodes may share an IP); outside Ray (unit
    tests) it falls back to ``local/<pid>``.
    """

    def __init__(self, threads: int = 1) -> None:
        import torch

        from zennas.search.task import TaskRunner

        self.threads = threads
        torch.set_num_threads(threads)  # explicit: the scores' float sums depend on the thread count
        self.runner = TaskRunner(threads=threads)
        self.evaluations = 0
        self.node_id: str | None = None
        self.actor_id: str | None = None
        self.node_ip = "local"
        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            self.node_id = ctx.get_node_id()
            self.actor_id = ctx.get_actor_id()
            self.node_ip = ray.util.get_node_ip_address()
        # the node's id, not its IP: several Ray nodes may share one IP (one machine, containers)
        self.worker = worker_label(self.node_id, self.actor_id)

    def evaluate(self, task: dict[str, Any]) -> dict[str, Any]:
        rec = self.runner.run(task)
        rec["worker"] = self.worker
        self.evaluations += 1
        return rec

    def ping(self) -> dict[str, Any]:
        """Who and what this worker is: node, process, versions (the backend refuses a node whose Ray,
        Python or zennas differs from the driver's), the GPUs Ray gave it."""
        import torch

        gpus = [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
        return {"worker": self.worker, "node_id": self.node_id, "node_ip": self.node_ip,
                "actor_id": self.actor_id, "pid": os.getpid(), "threads": self.threads,
                "torch_threads": torch.get_num_threads(), "evaluations": self.evaluations,
                "gpus": gpus, "versions": _versions()}


# max_restarts=0 / max_task_retries=0: Ray must not silently re-run a task on a restarted actor; the
# backend counts attempts and replaces actors itself.
EvaluatorActor: Any = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(Evaluator)
