"""``/v1/searches``: submit, read, list, cancel, delete, stream progress, page trials, download."""

from __future__ import annotations

import asyncio
import json
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from zennas_api import storage
from zennas_api.bundle import ensure_bundle, remove_artifacts, zip_bundle
from zennas_api.deps import PrincipalDep, QueueDep, SettingsDep
from zennas_api.problems import Problem
from zennas_api.queue import FINISHED, STATES, Job, encode_cursor, etag
from zennas_api.routes.profiles import profile_for_search
from zennas_api.schemas import BudgetsIn, SearchCreate, SearchList, SearchPublic

from zennas.admission import admit_spec
from zennas.detector import DetectorSettings
from zennas.errors import SpecError, StructureError
from zennas.latency.profile import Profile
from zennas.search import SearchSpec, check_feasible
from zennas.search.driver import PROGRESS_SCHEMA, latency_term
from zennas.search.spec import BUDGET_FIELDS, Budgets, LatencySpec
from zennas.search.store import SearchStore
from zennas.space.formats import parse_structure, structure_from_obj

router = APIRouter(prefix="/v1/searches", tags=["searches"])
MAX_TRIAL_NUMBER = 2**31 - 1  # trial numbers are 32-bit in the store


class DocCache:
    """Rendered ``GET /v1/searches/{id}`` bodies, least recently used first, bounded in entries and bytes
    (of the bodies and of the row versions they were rendered from).

    An entry is valid for one version of the job's row: the raw values of every column the document
    shows (not just the ETag's, so a change the ETag would miss still renders anew), and one base URL
    (the links in the document start with it). Used from the event loop only: no locking."""

    COLUMNS = ("state", "spec", "progress", "progress_seq", "created_at", "started_at", "finished_at", "updated_at",
               "attempts", "error", "result")

    def __init__(self, max_entries: int = 512, max_bytes: int = 16 << 20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.entries: OrderedDict[str, tuple[str, tuple[Any, ...], bytes, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def _version(self, row: Any) -> tuple[Any, ...]:
        m = row._mapping
        return tuple(m[c] for c in self.COLUMNS)

    def get(self, jid: str, base: str, row: Any) -> bytes | None:
        e = self.entries.get(jid)
        if e is not None and e[0] == base and e[1] == self._version(row):
            self.entries.move_to_end(jid)
            self.hits += 1
            return e[2]
        self.misses += 1
        return None

    def put(self, jid: str, base: str, row: Any, body: bytes) -> None:
        self._drop(jid)
        version = self._version(row)
        size = len(body) + sum(len(v) for v in version if isinstance(v, str))  # the row's text is kept too
        if size > self.max_bytes // 8:
            return  # a huge result: not worth evicting everything else for
        self.entries[jid] = (base, version, body, size)
        self.bytes += size
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def _drop(self, jid: str) -> None:
        e = self.entries.pop(jid, None)
        if e is not None:
            self.bytes -= e[3]


def link(request: Request, name: str, **params: str) -> str:
    """A link to one of the service's routes: absolute under ``ZENNAS_PUBLIC_URL`` when it is set, else
    relative to the server's root. Never built from the request's Host header, which the client controls
    (a spoofed Host must not end up in links, ``Location`` or a cached document)."""
    path = request.app.url_path_for(name, **params)
    public_url = request.app.state.settings.public_url
    return f"{public_url}{path}" if public_url else f"{request.scope.get('root_path', '')}{path}"


def public(job: Job, request: Request) -> SearchPublic:
    base = link(request, "get_search", search_id=job.id)
    links = {"self": base, "events": base + "/events", "trials": base + "/trials", "cancel": base + "/cancel"}
    if job.state == "succeeded":
        links["backbone"] = base + "/backbone"
    return SearchPublic(id=job.id, state=job.state, spec=job.spec, progress=job.progress,  # type: ignore[arg-type]
                        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                        updated_at=job.updated_at, attempts=job.attempts, error=job.error, result=job.result,
                        links=links)


def to_spec(body: SearchCreate, settings: SettingsDep, profile: Profile | None = None) -> SearchSpec:
    """Validate everything a search needs before anything is stored (no half-jobs). ``profile``: the
    stored profile ``latency.profile`` names (its checksum is pinned in the spec)."""
    h = body.height or body.resolution or 480
    w = body.width or body.resolution or h
    start = None
    if body.start is not None:
        try:
            start = parse_structure(body.start) if isinstance(body.start, str) else structure_from_obj(body.start)
        except StructureError as e:
            raise SpecError(f"start: {e.message}", field=f"start.{e.field}" if e.field else "start") from e
    # a size that came from ``resolution`` is reported under that name
    h_name = "height" if body.height is not None or body.resolution is None else "resolution"
    w_name = "width" if body.width is not None or body.resolution is None else "resolution"
    for name, value, limit in (("population", body.population, settings.max_population),
                               ("iterations", body.iterations, settings.max_iterations),
                               (h_name, h, settings.max_resolution), (w_name, w, settings.max_resolution)):
        if value > limit:
            raise SpecError(f"{name} = {value} is above this service's limit of {limit}", field=name)
    spec = SearchSpec(
        space=body.space if body.space_doc is None else str(body.space_doc.get("name", "inline")),
        space_doc=body.space_doc, score=body.score, score_settings=dict(body.score_settings), height=h, width=w,
        budgets=_budgets(body.budgets), population=body.population, iterations=body.iterations,
        generation=body.generation, checkpoint_every=body.checkpoint_every, sampler=body.sampler,
        latency=LatencySpec(**body.latency.model_dump(),
                            profile_checksum=profile.checksum if profile is not None else None),
        objectives=tuple(body.objectives), seed=body.seed, start=start, limits=settings.limits,
        detector=DetectorSettings.from_dict(body.detector.model_dump(exclude_none=True))
        if body.detector is not None else None)
    admit_spec(spec, settings.limits)  # score settings, sizes, and the start's forward passes: before it is stored
    space = check_feasible(spec)
    if profile is not None:  # the search's own check: space, input size, batch; a budget the prediction can meet
        latency_term(spec, space, spec.start_structure(space), spec.effective_budgets(space), profile)
    return spec


def _budgets(given: BudgetsIn) -> Budgets:
    """A budget absent from the request falls back to the space's default; one given as ``null``
    explicitly is removed."""
    removed = tuple(f for f in BUDGET_FIELDS if f in given.model_fields_set and getattr(given, f) is None)
    return Budgets(**given.model_dump(), removed=removed)


def _load(queue: QueueDep, principal: PrincipalDep, search_id: str) -> Job:
    job = queue.get(search_id, principal.tenant)  # another tenant's job is simply not found
    if job is None:
        raise Problem(404, "Not found", f"no search {search_id!r}", field="search_id")
    return job


# OpenAPI links from a created search to the operations on it (clients and stateful fuzzing follow them)
_LINKED = {"GetSearch": "get_search_v1_searches__search_id__get",
           "CancelSearch": "cancel_search_v1_searches__search_id__cancel_post",
           "SearchTrials": "search_trials_v1_searches__search_id__trials_get",
           "DownloadBackbone": "download_backbone_v1_searches__search_id__backbone_get",
           "DeleteSearch": "delete_search_v1_searches__search_id__delete"}
_LINKS = {name: {"operationId": op, "parameters": {"search_id": "$response.body#/id"}} for name, op in _LINKED.items()}


@router.post("", status_code=202, response_model=SearchPublic,
             responses={202: {"description": "accepted; poll Location", "links": _LINKS},
                        422: {"description": "invalid spec"}})
def create_search(body: SearchCreate, request: Request, response: Response, queue: QueueDep,
                  principal: PrincipalDep, settings: SettingsDep,
                  idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> SearchPublic:
    profile = None
    if body.latency.profile is not None:
        profile = profile_for_search(request.app.state.engine, principal.tenant, body.latency.profile)
    spec = to_spec(body, settings, profile)
    pinned = (profile.checksum, profile.to_json()) if profile is not None else None  # the search keeps this copy
    need = storage.estimate(spec) + (len(pinned[1]) if pinned is not None else 0)
    job, created = queue.create(principal.tenant, spec.to_dict(), idempotency_key=idempotency_key,
                                max_queued=settings.max_queued_per_tenant,
                                storage=(need, settings.max_storage_per_tenant), profile=pinned)
    response.headers["Location"] = link(request, "get_search", search_id=job.id)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return public(job, request)


@router.get("", response_model=SearchList)
def list_searches(request: Request, queue: QueueDep, principal: PrincipalDep, settings: SettingsDep,
                  state: Annotated[str | None, Query(pattern="^(" + "|".join(STATES) + ")$")] = None,
                  cursor: Annotated[str | None, Query(max_length=200)] = None,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50) -> SearchList:
    """Newest first. A page ends at ``limit`` searches or once its documents reach
    ``ZENNAS_MAX_PAGE_BYTES`` (at least one per page: a search over a large structure carries it in its
    spec, progress and result); ``next_cursor`` continues."""
    items, nxt = queue.list(principal.tenant, state=state, cursor=cursor, limit=limit)
    out: list[SearchPublic] = []
    size = 0
    for j in items:
        doc = public(j, request)
        size += len(doc.model_dump_json())
        if out and size > settings.max_page_bytes:
            nxt = encode_cursor(out[-1].created_at, out[-1].id)
            break
        out.append(doc)
    return SearchList(items=out, next_cursor=nxt)


@router.get("/{search_id}", response_model=SearchPublic, name="get_search",
            responses={304: {"description": "not modified since the ETag"}, 404: {"description": "not found"}})
async def get_search(search_id: str, request: Request, queue: QueueDep, principal: PrincipalDep,
                     if_none_match: Annotated[str | None, Header()] = None) -> Any:
    # The status poll: the hot path of every client (the console, `zennas remote wait`, scripts polling
    # twice a second). One primary-key read, then either a 304, or the JSON of a version of the job
    # already rendered (most polls between two progress updates), or a fresh render.
    #
    # The read runs on the event loop, not in the threadpool: it is one indexed row (~0.1 ms on SQLite,
    # one round trip on PostgreSQL), cheaper than the thread hop, and under CPU contention every hop is
    # one more wait for a core (bench_api, same session, a loaded 2-core machine: p99 16 ms vs 187 ms
    # through the threadpool on SQLite, 45 vs 417 ms on PostgreSQL). SQLite readers never wait for the
    # writer (WAL).
    row = queue.get_row(search_id, principal.tenant)
    if row is None:
        raise Problem(404, "Not found", f"no search {search_id!r}", field="search_id")
    m = row._mapping
    tag = etag(m["id"], m["state"], m["progress_seq"], m["updated_at"])
    if if_none_match is not None and if_none_match == tag:
        return Response(status_code=304, headers={"ETag": tag})
    docs: DocCache = request.app.state.docs
    base = request.app.state.settings.public_url or request.scope.get("root_path", "")  # what links depend on
    body = docs.get(search_id, base, row)
    if body is None:
        body = JSONResponse(None).render(public(Job.from_row(row), request).model_dump(mode="json"))
        docs.put(search_id, base, row, body)
    return Response(body, media_type="application/json", headers={"ETag": tag})


@router.post("/{search_id}/cancel", response_model=SearchPublic)
def cancel_search(search_id: str, request: Request, queue: QueueDep, principal: PrincipalDep) -> SearchPublic:
    _load(queue, principal, search_id)
    job = queue.cancel(search_id, principal.tenant)
    assert job is not None
    return public(job, request)


@router.delete("/{search_id}", status_code=204, responses={409: {"description": "still queued or running"}})
def delete_search(search_id: str, queue: QueueDep, principal: PrincipalDep, settings: SettingsDep) -> Response:
    job = _load(queue, principal, search_id)
    if job.state not in FINISHED:
        raise Problem(409, "Conflict", f"search {search_id} is {job.state}; cancel it first", field="state")
    queue.delete(search_id, principal.tenant)
    remove_artifacts(settings.artifacts_dir, search_id)
    return Response(status_code=204)


@router.get("/{search_id}/events", responses={200: {"content": {"text/event-stream": {}}}})
async def search_events(search_id: str, request: Request, queue: QueueDep, principal: PrincipalDep) -> StreamingResponse:
    _load(queue, principal, search_id)

    async def stream() -> AsyncIterator[bytes]:
        seq = -1
        while True:
            job = await asyncio.to_thread(queue.get, search_id, principal.tenant)
            if job is None:
                return
            if job.progress_seq != seq:
                seq = job.progress_seq
                data = {"schema": PROGRESS_SCHEMA, "state": job.state, **(job.progress or {})}
                yield f"id: {seq}\nevent: progress\ndata: {json.dumps(data)}\n\n".encode()
            if job.state in FINISHED:
                yield f"event: end\ndata: {json.dumps({'state': job.state})}\n\n".encode()
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.25)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/{search_id}/trials", responses={200: {"description": "a page of trials, bounded in bytes"}})
def search_trials(search_id: str, request: Request, queue: QueueDep, principal: PrincipalDep, settings: SettingsDep,
                  offset: Annotated[int, Query(ge=0, le=MAX_TRIAL_NUMBER)] = 0,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  front: bool = False) -> Response:
    """Trials in number order from ``offset``: at most ``limit`` of them, and the page ends once its
    JSON reaches ``ZENNAS_MAX_PAGE_BYTES`` (at least one trial per page). ``next`` links the next page
    (``next_offset`` is its offset), absent on the last."""
    job = _load(queue, principal, search_id)
    if front:
        points = (job.result or {}).get("pareto_front") or (job.progress or {}).get("pareto_front") or []
        return JSONResponse({"pareto_front": points})
    store = SearchStore(request.app.state.engine, create=False)
    # Trial numbers run 0, 1, 2, ... so ``offset`` is the first number: read by key (no OFFSET scan),
    # in slices, so a page of large structures never decodes much more than it sends.
    items: list[bytes] = []
    size, pos, more = 0, offset, False
    while True:
        want = min(limit - len(items), 50)
        rows = store.trials(search_id, after=pos - 1, limit=want + 1)  # one more: is there a next page?
        full = False
        for r in rows[:want]:
            r.pop("search_id", None)
            item = json.dumps(r, separators=(",", ":")).encode()
            if items and size + len(item) > settings.max_page_bytes:
                full = True
                break
            items.append(item)
            size += len(item) + 1
            pos = r["number"] + 1
        if full or (len(rows) > want and len(items) >= limit):
            more = True
            break
        if len(rows) <= want:
            break  # the history ended
    head: dict[str, Any] = {"next_offset": pos if more else None}
    if more:
        head["next"] = link(request, "search_trials", search_id=search_id) + f"?offset={pos}&limit={limit}"
    body = b'{"items":[' + b",".join(items) + b"]," + json.dumps(head)[1:].encode()
    return Response(body, media_type="application/json")


@router.get("/{search_id}/backbone", responses={200: {"content": {"application/zip": {}}}, 409: {},
                                                 422: {"description": "bad option, or over the service's limits"},
                                                 429: {"description": "over the tenant's storage quota"}})
def download_backbone(search_id: str, request: Request, queue: QueueDep, principal: PrincipalDep,
                      settings: SettingsDep, format: Annotated[str, Query(pattern="^(zip|json)$")] = "zip",
                      onnx: Annotated[str | None, Query(
                          pattern="^detector$",
                          description="detector: add the whole detector (backbone + neck + head of the bundle's "
                                      "config) as ONNX, raw head outputs, no NMS, with its parity check; built "
                                      "once (seconds), then served from disk")] = None) -> Response:
    job = _load(queue, principal, search_id)
    if job.state != "succeeded" or job.result is None:
        raise Problem(409, "Conflict", f"search {search_id} is {job.state}; the backbone is ready once it succeeds",
                      field="state")
    if format == "json":
        if onnx is not None:
            raise Problem(422, "Invalid input", "onnx is an option of the zip bundle (format=zip)", field="onnx")
        return JSONResponse(job.result["best"]["structure"])
    meta = {"id": job.id, "tenant": job.tenant, "spec": job.spec}
    if onnx is not None:
        from zennas_api.onnx_bundle import ensure_onnx_bundle

        path = ensure_onnx_bundle(settings.artifacts_dir, request.app.state.engine, settings, meta, job.result)
    else:
        path = zip_bundle(ensure_bundle(settings.artifacts_dir / search_id, meta, job.result))
    f = path.open("rb")  # opened now: a concurrent expiry may unlink the name, not this file

    def chunks() -> Iterator[bytes]:
        with f:
            while chunk := f.read(1 << 16):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="zennas-{search_id}{"-onnx" if onnx else ""}.zip"',
        "Content-Length": str(os.fstat(f.fileno()).st_size)})
