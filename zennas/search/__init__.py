"""The search: an Optuna-driven evolution (or NSGA-II / random) under FLOPs, params, layers and
latency budgets, evaluated in the driver or on Ray workers, checkpointed per generation.

Names are imported lazily, so a Ray worker importing :mod:`zennas.search.task` does not pay for
Optuna and SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PROGRESS_SCHEMA": "zennas.search.driver",
    "Search": "zennas.search.driver",
    "SearchResult": "zennas.search.driver",
    "run_search": "zennas.search.driver",
    "Evolution": "zennas.search.sampler",
    "EvolutionSampler": "zennas.search.sampler",
    "StructureCodec": "zennas.search.sampler",
    "Budgets": "zennas.search.spec",
    "LatencySpec": "zennas.search.spec",
    "SearchSpec": "zennas.search.spec",
    "check_feasible": "zennas.search.spec",
    "SearchStore": "zennas.search.store",
    "LocalBackend": "zennas.search.task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zennas.search' has no attribute {name!r}")
