"""Dependencies shared by the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from zennas_api.auth import SESSION_COOKIE, Principal, read_session, verify_key
from zennas_api.problems import Problem
from zennas_api.queue import JobQueue
from zennas_api.settings import Settings

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the
# threadpool, one thread hop per dependency per request, which for these one-liners cost more than the
# status poll that uses them. The key lookup is one primary-key read, done on the event loop like the
# status poll's own read (see ``routes.searches.get_search``). It is not cached: a key revoked, by any
# process, is refused from the very next request on.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue  # type: ignore[no-any-return]


DEV = Principal("dev", None)


async def get_principal(request: Request) -> Principal:
    settings: Settings = request.app.state.settings
    if settings.dev_mode:
        return DEV
    engine = request.app.state.engine
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        p = verify_key(engine, token.strip()) if scheme.lower() == "bearer" else None
        if p is None:
            raise Problem(401, "Unauthorized", "the API key is not valid (or was revoked)", field="authorization",
                          headers={"WWW-Authenticate": "Bearer"})
        return p
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        p = read_session(engine, cookie, settings.secret_key)
        if p is None:
            raise Problem(401, "Unauthorized", "the session expired or was revoked; sign in again", field="session")
        if request.method in UNSAFE and request.headers.get("x-csrf-token") != p.csrf:
            raise Problem(403, "Forbidden", "missing or wrong X-CSRF-Token header for a cookie session",
                          field="x-csrf-token")
        return p
    raise Problem(401, "Unauthorized", "send 'Authorization: Bearer <API key>' (create one with `zennas keys create`)",
                  field="authorization", headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
