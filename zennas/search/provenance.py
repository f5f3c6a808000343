"""What every search output carries: versions and platform, so a result can be traced and redone."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

import zennas

_PACKAGES = ("torch", "numpy", "optuna", "ray", "sqlalchemy", "mmdet", "mmcv", "mmengine")


def package_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance() -> dict[str, Any]:
    return {"zennas": zennas.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "packages": package_versions()}
