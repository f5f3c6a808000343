"""Device latency profiles: measured op tables, a predictor, and checks against whole backbones.

``zennas profile build`` times the ops a space's backbones are made of on the target machine (in
``onnxruntime`` or ``torch`` eager); a search with ``latency.profile`` then predicts each candidate's
latency from the table at the speed of a FLOPs count, and measures only its top candidates at the end.
Names are imported lazily: the predictor needs numpy and scipy, the runtimes torch and onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Op": "zennas.latency.ops",
    "TableKey": "zennas.latency.ops",
    "block_ops": "zennas.latency.ops",
    "structure_ops": "zennas.latency.ops",
    "Fingerprint": "zennas.latency.profile",
    "OpTable": "zennas.latency.profile",
    "Overhead": "zennas.latency.profile",
    "Profile": "zennas.latency.profile",
    "ProfileError": "zennas.latency.profile",
    "load_profile": "zennas.latency.profile",
    "loads_profile": "zennas.latency.profile",
    "profile_from_dict": "zennas.latency.profile",
    "require_fit": "zennas.latency.profile",
    "LatencyTerm": "zennas.latency.predict",
    "Predictor": "zennas.latency.predict",
    "BuildSpec": "zennas.latency.build",
    "build_profile": "zennas.latency.build",
    "CheckReport": "zennas.latency.check",
    "check_profile": "zennas.latency.check",
    "sample_structures": "zennas.latency.sample",
    "Runner": "zennas.latency.runtimes",
    "TimingSettings": "zennas.latency.runtimes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zennas.latency' has no attribute {name!r}")
