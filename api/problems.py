"""Every error as an RFC 9457 problem (``application/problem+json``) naming the field at fault."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from zennas_api.queue import QueueLimit

from zennas.admission import AdmissionError
from zennas.errors import ZenNASError

PROBLEM = "application/problem+json"
BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's detail (fastapi/routing.py)


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.field, self.headers = status, title, detail, field, headers


def problem(status: int, title: str, detail: str, *, instance: str | None = None,
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    # the first element says where the value came from (a field may itself be named "path" or "body")
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else loc)]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        errors = [{"field": exc.field, "message": exc.detail}] if exc.field else None
        return problem(exc.status, exc.title, exc.detail, instance=request.url.path, errors=errors,
                       headers=exc.headers)

    @app.exception_handler(ZenNASError)
    async def _zennas(request: Request, exc: ZenNASError) -> JSONResponse:
        errors = [{"field": exc.field, "message": exc.message}] if exc.field else None
        detail = f"{exc.field}: {exc.message}" if exc.field and exc.field not in exc.message else exc.message
        title = "Over this service's limits" if isinstance(exc, AdmissionError) else "Invalid input"
        return problem(422, title, detail, instance=request.url.path, errors=errors)

    @app.exception_handler(QueueLimit)
    async def _limit(request: Request, exc: QueueLimit) -> JSONResponse:
        status = exc.status or (429 if exc.field == "tenant" else 400)
        title = {429: "Limit reached", 422: "Invalid input"}.get(status, "Bad request")
        return problem(status, title, str(exc), instance=request.url.path,
                       errors=[{"field": exc.field, "message": str(exc)}])

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": "body", "message": f"{e.get('msg', 'invalid')} at character {e['loc'][-1]}"}
                  if e.get("type") == "json_invalid" else  # loc is ("body", offset): the offset is no field
                  {"field": _loc(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem(422, "Invalid input", detail, instance=request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 401: "Unauthorized",
                  403: "Forbidden"}
        errors = None
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            # FastAPI's answer to a body json.loads could not read (not UTF-8, nested too deep)
            errors = [{"field": "body", "message": "not a JSON document this service can read (UTF-8, "
                                                   "nested at most a few hundred levels)"}]
        return problem(exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail),
                       instance=request.url.path, errors=errors, headers=getattr(exc, "headers", None))
