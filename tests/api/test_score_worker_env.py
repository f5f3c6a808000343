"""A score worker (a spawned process running user-chosen structures) never inherits the service's
secrets (issue 10, exposure): read from the worker's own /proc environment."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from zennas_api.scoring import SECRET_ENV, ScorePool

pytestmark = pytest.mark.timeout(240)


def test_score_worker_does_not_inherit_the_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in SECRET_ENV:
        monkeypatch.setenv(k, "do-not-leak-" + k)
    pool = ScorePool(workers=1, timeout=120.0, per_tenant=1, memory_cap=None)
    try:
        w = pool._start()
        environ = Path(f"/proc/{w.proc.pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        assert not names & set(SECRET_ENV)
        assert "PATH" in names  # the rest of the environment is inherited
        for k in SECRET_ENV:  # and the service's own environment is restored
            assert os.environ[k] == "do-not-leak-" + k
        w.kill()
    finally:
        for x in pool._all:
            x.kill()
    asyncio.run(asyncio.sleep(0))
