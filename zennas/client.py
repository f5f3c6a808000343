"""A small Python client of the zennas service (httpx): submit, get, wait, cancel, download."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from zennas.errors import ZenNASError

FINISHED = ("succeeded", "failed", "cancelled")


class ServiceError(ZenNASError):
    """The service answered with a problem document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        errors = problem.get("errors") or []
        field = errors[0].get("field") if errors else None
        super().__init__(f"HTTP {status}: {problem.get('detail') or problem.get('title')}", field=field)
        self.status = status
        self.problem = problem


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self._etags: dict[str, tuple[str, dict[str, Any]]] = {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"detail": r.text}
            raise ServiceError(r.status_code, body)
        return r

    def submit(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._check(self.http.post("/v1/searches", json=spec, headers=headers)).json()  # type: ignore[no-any-return]

    def get(self, search_id: str) -> dict[str, Any]:
        """The job; uses If-None-Match so an unchanged job costs a 304."""
        cached = self._etags.get(search_id)
        headers = {"If-None-Match": cached[0]} if cached else {}
        r = self.http.get(f"/v1/searches/{search_id}", headers=headers)
        if r.status_code == 304 and cached:
            return cached[1]
        job: dict[str, Any] = self._check(r).json()
        if "etag" in r.headers:
            self._etags[search_id] = (r.headers["etag"], job)
        return job

    def list(self, *, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._check(self.http.get("/v1/searches", params=params)).json()["items"]  # type: ignore[no-any-return]

    def cancel(self, search_id: str) -> dict[str, Any]:
        return self._check(self.http.post(f"/v1/searches/{search_id}/cancel")).json()  # type: ignore[no-any-return]

    def wait(self, search_id: str, *, interval: float = 0.5, timeout: float | None = None,
             progress: bool | Callable[[dict[str, Any]], None] = False) -> dict[str, Any]:
        """Poll until the search finishes; ``progress=True`` shows a progress bar on a terminal."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        if progress is True:
            from rich.progress import Progress

            bar = Progress()
            bar.start()
            task = bar.add_task(f"search {search_id[:8]}", total=None)
        try:
            while True:
                job = self.get(search_id)
                p = job.get("progress") or {}
                if bar is not None:
                    bar.update(task, total=p.get("iterations") or None, completed=p.get("iteration", 0))
                elif callable(progress):
                    progress(job)
                if job["state"] in FINISHED:
                    return job
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"search {search_id} still {job['state']} after {timeout} s")
                time.sleep(interval)
        finally:
            if bar is not None:
                bar.stop()

    def download(self, search_id: str, path: str | Path, *, format: str = "zip") -> Path:
        r = self._check(self.http.get(f"/v1/searches/{search_id}/backbone", params={"format": format}))
        p = Path(path)
        p.write_bytes(r.content)
        return p

    def score(self, structure: Any, **kw: Any) -> dict[str, Any]:
        return self._check(self.http.post("/v1/score", json={"structure": structure, **kw})).json()  # type: ignore[no-any-return]
