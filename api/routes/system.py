"""Spaces, synchronous scoring, sessions, health and metrics."""

from __future__ import annotations

import hmac
import time
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from zennas_api.auth import SESSION_COOKIE, SESSION_SECONDS, make_session, revoke_session, verify_key
from zennas_api.deps import PrincipalDep, QueueDep, SettingsDep
from zennas_api.problems import Problem
from zennas_api.schemas import ScoreRequest, ScoreResponse, SessionRequest, SessionResponse

from zennas.cost import costs
from zennas.errors import StructureError
from zennas.score import score_kind
from zennas.space import get_space, space_names
from zennas.space.formats import parse_structure, structure_from_obj

router = APIRouter()


@router.get("/v1/spaces", tags=["spaces"])
def list_spaces(_: PrincipalDep) -> list[dict[str, Any]]:
    out = []
    for name in space_names():
        sp = get_space(name)
        c = costs(sp.start, sp.budgets.height, sp.budgets.width)
        out.append({"name": name, "description": sp.description, "start_flops": c.flops, "start_layers": c.layers,
                    "budgets": sp.to_dict()["budgets"]})
    return out


@router.get("/v1/spaces/{name}", tags=["spaces"])
def get_space_doc(name: str, _: PrincipalDep) -> dict[str, Any]:
    if name not in space_names():  # an unknown resource is a 404, not an invalid input
        raise Problem(404, "Not found", f"no space {name!r} (shipped: {', '.join(space_names())})", field="name")
    return get_space(name).to_dict()


@router.post("/v1/score", response_model=ScoreResponse, tags=["score"])
async def score_structure(body: ScoreRequest, _: PrincipalDep) -> ScoreResponse:
    try:
        s = parse_structure(body.structure) if isinstance(body.structure, str) else structure_from_obj(body.structure)
    except StructureError as e:
        raise StructureError(f"structure: {e.message}", field=f"structure.{e.field}" if e.field else "structure") from e
    h = body.height or body.resolution or 480
    w = body.width or body.resolution or h
    kind = score_kind(body.score)
    if kind.sized_by_input:
        settings: dict[str, Any] = {"height": h, "width": w}
    else:  # the request's settings go to the scores whose factory takes them (the registry says which)
        accepted = set(kind.settings())
        offered = {"seed": body.seed, "resolution": body.score_resolution}
        settings = {k: v for k, v in offered.items() if v is not None and k in accepted}
    scorer = kind.build(**settings)
    r = await run_in_threadpool(scorer, s)  # forward passes must not block the event loop
    c = costs(s, h, w)
    return ScoreResponse(score=r.score, score_type=r.name, stage_scores=list(r.stage_scores),
                         stage_scores_weighted=list(r.stage_scores_weighted), flops=c.flops, params=c.params,
                         layers=c.layers, resolution=[h, w],
                         score_resolution=list(r.resolution) if r.resolution else None, seconds=r.seconds)


@router.post("/v1/session", response_model=SessionResponse, tags=["session"])
def create_session(body: SessionRequest, request: Request, response: Response, settings: SettingsDep) -> SessionResponse:
    p = verify_key(request.app.state.engine, body.api_key)
    if p is None:
        raise Problem(401, "Unauthorized", "the API key is not valid (or was revoked)", field="api_key")
    cookie, csrf = make_session(p, settings.secret_key, request.app.state.engine)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return SessionResponse(tenant=p.tenant, csrf_token=csrf)


@router.delete("/v1/session", status_code=204, tags=["session"])
def delete_session(request: Request, settings: SettingsDep) -> Response:
    """Sign out: the session ends server-side (a copy of the cookie stops working too) and the cookie
    is cleared."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        revoke_session(request.app.state.engine, cookie, settings.secret_key)
    r = Response(status_code=204)
    r.delete_cookie(SESSION_COOKIE, path="/")
    return r


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
def readyz(request: Request) -> Response:
    """200 when the database answers and (under ``zennas serve``) a healthy dispatcher holds the queue."""
    try:
        with request.app.state.engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
    except Exception as e:
        raise Problem(503, "Not ready", f"database unreachable: {type(e).__name__}") from e
    sup = getattr(request.app.state, "supervisor", None)
    if sup is not None:
        ok, why = sup.healthy()
        if not ok:
            raise Problem(503, "Not ready", why, headers={"Retry-After": "1"})
    return Response('{"status":"ready"}', media_type="application/json")


@router.get("/metrics", tags=["health"])
def metrics(request: Request, queue: QueueDep, settings: SettingsDep) -> Response:
    """Prometheus metrics. The service's own figures (request latency) are open; the figures about
    searches (jobs by state, queue depth, candidates evaluated), which add up every tenant's activity,
    are shown only with ``Authorization: Bearer <ZENNAS_METRICS_TOKEN>`` (or in development mode)."""
    m = request.app.state.metrics
    token = settings.metrics_token
    if not settings.dev_mode:
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        allowed = token is not None and scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode())
        if sent and not allowed:
            detail = ("wrong metrics token (ZENNAS_METRICS_TOKEN)" if token is not None else
                      "this service has no metrics token (set ZENNAS_METRICS_TOKEN); the job figures are not served")
            raise Problem(401, "Unauthorized", detail, field="authorization", headers={"WWW-Authenticate": "Bearer"})
        if not allowed:
            return Response(generate_latest(m["public"]), media_type=CONTENT_TYPE_LATEST)
    counts = queue.counts()
    for state, n in counts.items():
        m["jobs"].labels(state=state).set(n)
    m["queue_depth"].set(counts.get("queued", 0))
    m["evaluated"].set(queue.evaluated_total())
    m["scraped"].set(time.time())
    return Response(generate_latest(m["registry"]), media_type=CONTENT_TYPE_LATEST)
