"""The zennas search service (installed as ``zennas_api``): a FastAPI job API over a durable queue."""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    from zennas_api.app import create_app as _create

    return _create(*args, **kwargs)
