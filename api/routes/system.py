"""Spaces, synchronous scoring, sessions, health and metrics."""

from __future__ import annotations

import hmac
import time
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from zennas_api.auth import SESSION_COOKIE, SESSION_SECONDS, make_session, revoke_session, verify_key
from zennas_api.deps import PrincipalDep, QueueDep, SettingsDep
from zennas_api.problems import Problem
from zennas_api.schemas import ScoreRequest, ScoreResponse, SessionRequest, SessionResponse
from zennas_api.scoring import ScorePool
from zennas_api.settings import Settings

from zennas.admission import admit_scorer, check_structure
from zennas.cost import costs
from zennas.errors import SpecError, StructureError
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


def score_pool(request: Request) -> ScorePool:
    """The app's pool of score worker processes (created on first use)."""
    pool: ScorePool | None = getattr(request.app.state, "score_pool", None)
    if pool is None:
        st: Settings = request.app.state.settings
        cap = st.score_worker_memory
        pool = ScorePool(workers=st.score_workers, timeout=st.score_timeout_seconds, per_tenant=st.max_scoring_per_tenant,
                         memory_cap=int(cap) if cap is not None else int(st.max_score_memory) + (2 << 30))
        request.app.state.score_pool = pool
    return pool


@router.post("/v1/score", response_model=ScoreResponse, tags=["score"],
             responses={422: {"description": "invalid, or over this service's limits"},
                        429: {"description": "this tenant's score evaluations are at their cap"},
                        503: {"description": "the evaluation timed out, ran out of memory, or no worker was free"}})
async def score_structure(body: ScoreRequest, request: Request, principal: PrincipalDep,
                          settings: SettingsDep) -> ScoreResponse:
    try:
        s = parse_structure(body.structure) if isinstance(body.structure, str) else structure_from_obj(body.structure)
    except StructureError as e:
        raise StructureError(f"structure: {e.message}", field=f"structure.{e.field}" if e.field else "structure") from e
    limits = settings.limits
    check_structure(s, limits, "structure")  # blocks, units, channels, kernels: before any cost is computed
    h = body.height or body.resolution or 480
    w = body.width or body.resolution or h
    kind = score_kind(body.score)
    if kind.sized_by_input:
        score_settings: dict[str, Any] = {"height": h, "width": w}
    else:  # the request's settings go to the scores whose factory takes them (the registry says which)
        accepted = set(kind.settings())
        offered = {"seed": body.seed, "resolution": body.score_resolution}
        score_settings = {k: v for k, v in offered.items() if v is not None and k in accepted}
    try:
        scorer = kind.build(**score_settings)
    except SpecError as e:
        f = {"height": "score_resolution", "width": "score_resolution", "resolution": "score_resolution"}.get(
            e.field or "", e.field or "score")
        raise SpecError(e.message, field=f) from e
    c = costs(s, h, w)
    if kind.forward_pass:  # the size and cost checks first: they name the block at fault
        admit_scorer(scorer, s, limits, structure_field="structure",
                     setting_field=lambda n: "score_resolution" if n in ("height", "width", "resolution") else None,
                     scaled=body.score_resolution is not None)
    weights = getattr(scorer, "stage_weights", None)
    n_stages = len(s.stages())  # the one stage rule (Structure.stages)
    if weights is not None and len(weights) != n_stages:
        raise StructureError(f"structure has {n_stages} stages (a stage ends before each stride-2 block and at the "
                             f"last block); score {body.score!r} weighs {len(weights)}", field="structure")
    if kind.forward_pass:  # estimated and admitted above; run in a worker process, never here
        r = await score_pool(request).run(principal.tenant, {
            "structure": [b.to_dict() for b in s.blocks], "score": body.score, "settings": score_settings})
    else:
        r = scorer(s).to_dict()  # closed form: microseconds
    return ScoreResponse(score=r["score"], score_type=r["name"], stage_scores=r["stage_scores"],
                         stage_scores_weighted=r["stage_scores_weighted"], flops=c.flops, params=c.params,
                         layers=c.layers, resolution=[h, w], score_resolution=r["resolution"], seconds=r["seconds"])


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
