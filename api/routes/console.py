"""The web console (``/``), the cookie session's read-back (``GET /v1/session``) and single files of a
finished search's bundle (``GET /v1/searches/{id}/artifacts/{path}``).

The console is plain HTML, CSS and JavaScript modules shipped in ``zennas_api/static``; nothing is
fetched from anywhere else. A strict Content-Security-Policy keeps it that way.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path, PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from zennas_api.auth import SESSION_COOKIE, read_session
from zennas_api.deps import PrincipalDep, QueueDep, SettingsDep
from zennas_api.problems import Problem
from zennas_api.schemas import SessionResponse

router = APIRouter()

STATIC = Path(__file__).resolve().parent.parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
CONSOLE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".ico": "image/x-icon"}


def _static(name: str) -> Response:
    p = STATIC / name
    if not name or "/" in name or name.startswith(".") or p.suffix not in _TYPES or not p.is_file():
        raise Problem(404, "Not found", f"no console file {name!r}", field="name")
    return FileResponse(p, media_type=_TYPES[p.suffix], headers=CONSOLE_HEADERS)


@router.get("/", include_in_schema=False)
def console_index() -> Response:
    return _static("index.html")


@router.get("/console/{name}", include_in_schema=False)
def console_file(name: str) -> Response:
    return _static(name)


@router.get("/v1/session", response_model=SessionResponse, tags=["session"],
            responses={401: {"description": "no valid session cookie"}})
def read_current_session(request: Request, settings: SettingsDep) -> SessionResponse:
    """The signed-in tenant and the session's CSRF token (stable for the cookie's lifetime), so a page
    reload can get the token again without keeping it anywhere but in memory."""
    if settings.dev_mode:
        return SessionResponse(tenant="dev", csrf_token="")
    cookie = request.cookies.get(SESSION_COOKIE)
    p = read_session(request.app.state.engine, cookie, settings.secret_key) if cookie else None
    if p is None or p.csrf is None:
        raise Problem(401, "Unauthorized", "no valid session; sign in with an API key (POST /v1/session)",
                      field="session")
    return SessionResponse(tenant=p.tenant, csrf_token=p.csrf)


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if (not path or "\\" in path or "\x00" in path or rel.is_absolute()
            or any(part in ("", ".", "..") for part in path.split("/"))):
        raise Problem(404, "Not found", f"no artifact {path!r}", field="path")
    return rel


@router.get("/v1/searches/{search_id}/artifacts/{path:path}", tags=["searches"],
            responses={200: {"description": "one file of the search's bundle"}, 404: {}, 409: {}})
def download_artifact(search_id: str, path: Annotated[str, PathParam(max_length=500)], queue: QueueDep,
                      principal: PrincipalDep, settings: SettingsDep) -> Response:
    """One file of a succeeded search's bundle, e.g. ``mmdet/gfl_gfpn_config.py`` or ``report.html``
    (``manifest.json`` lists them). Always sent as an attachment."""
    job = queue.get(search_id, principal.tenant)  # another tenant's job is simply not found
    if job is None:
        raise Problem(404, "Not found", f"no search {search_id!r}", field="search_id")
    rel = _safe_relative(path)
    if job.state != "succeeded" or job.result is None:
        raise Problem(409, "Conflict", f"search {search_id} is {job.state}; its files are ready once it succeeds",
                      field="state")
    directory = (settings.artifacts_dir / search_id).resolve()
    if not (directory / "manifest.json").exists():
        from zennas_api.bundle import write_bundle

        write_bundle(directory, {"id": job.id, "tenant": job.tenant, "spec": job.spec}, job.result)
    target = (directory / rel).resolve()
    if not target.is_relative_to(directory) or not target.is_file():
        raise Problem(404, "Not found", f"search {search_id} has no artifact {path!r}", field="path")
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if media.startswith("text/") or target.suffix in (".py", ".json", ".txt", ".html"):
        media = "text/plain; charset=utf-8" if target.suffix not in (".json",) else "application/json"
    return FileResponse(target, media_type=media, filename=target.name,
                        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
