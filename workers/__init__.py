"""Ray workers for zennas searches (installed as ``zennas_workers``).

The library (``zennas``) never imports this package; the CLI and the service compose the two:
``ray_init(address)`` then ``Search(spec, backend=RayBackend(num_workers=...))``.
"""

from zennas_workers.actors import Evaluator, EvaluatorActor
from zennas_workers.backend import (
    WORKER_LOST,
    RayBackend,
    RayConnectError,
    VersionMismatchError,
    WorkerPoolError,
    ray_backend,
    ray_init,
)

__all__ = ["WORKER_LOST", "Evaluator", "EvaluatorActor", "RayBackend", "RayConnectError", "VersionMismatchError", "WorkerPoolError",
           "ray_backend", "ray_init"]
