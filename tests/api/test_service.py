"""The search service end to end, against real ``zennas serve`` processes on SQLite and PostgreSQL:
submit, poll with ETags, download, the Python client, listing, cancel, delete, idempotency, tenants,
API keys, browser sessions, SSE progress, metrics, spaces and synchronous scoring."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from service_helpers import FINISHED, LONG, ROOT, SMALL, assert_problem, cli, wait_state

from zennas.client import Client, ServiceError

pytestmark = pytest.mark.slow


def submit(c: httpx.Client, spec: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    r = c.post("/v1/searches", json={**SMALL, **(spec or {})}, **kw)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def tenant() -> str:
    return "t" + uuid.uuid4().hex[:10]


def all_ids(c: httpx.Client, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        r = c.get("/v1/searches", params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        ids += [j["id"] for j in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return ids


@pytest.mark.timeout(180)
def test_submit_poll_etag_download(service: Any) -> None:
    with service.client("a") as c:
        r = c.post("/v1/searches", json={**SMALL, "seed": 3})
        assert r.status_code == 202, r.text
        job = r.json()
        jid = job["id"]
        assert job["state"] in ("queued", "running")
        assert r.headers["location"].endswith(f"/v1/searches/{jid}")
        assert job["spec"]["checkpoint_every"] == SMALL["checkpoint_every"]  # passed through to the spec
        assert set(job["links"]) >= {"self", "events", "trials", "cancel"}

        # poll with If-None-Match until it finishes: every answer is a 200 with a (new) ETag or a 304
        etag = None
        for _ in range(2000):
            r = c.get(f"/v1/searches/{jid}", headers={"If-None-Match": etag} if etag else {})
            if r.status_code == 304:
                assert r.headers["etag"] == etag and r.content == b""
            else:
                assert r.status_code == 200, r.text
                assert r.headers["etag"] != etag
                etag, job = r.headers["etag"], r.json()
                if job["state"] in FINISHED:
                    break
            time.sleep(0.05)
        assert job["state"] == "succeeded", job
        # a finished job no longer changes: the ETag answers 304; another tag a 200
        r = c.get(f"/v1/searches/{jid}", headers={"If-None-Match": etag})
        assert r.status_code == 304 and r.headers["etag"] == etag
        assert c.get(f"/v1/searches/{jid}", headers={"If-None-Match": '"other"'}).status_code == 200
        assert job["attempts"] == 1 and job["started_at"] and job["finished_at"] >= job["started_at"]
        assert "backbone" in job["links"]
        result = job["result"]
        assert result["counts"]["trials"] == SMALL["iterations"]
        assert job["progress"]["schema"] == "zennas.progress/1"
        assert job["progress"]["iteration"] == SMALL["iterations"]

        # the zip: structure, summary, manifest with checksums that match
        r = c.get(f"/v1/searches/{jid}/backbone")
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert f"zennas-{jid}.zip" in r.headers["content-disposition"]
        z = zipfile.ZipFile(io.BytesIO(r.content))
        names = set(z.namelist())
        assert {"structure.json", "structure.txt", "search.json", "manifest.json"} <= names
        manifest = json.loads(z.read("manifest.json"))
        assert manifest["format"] == "zennas.bundle/1" and manifest["job_id"] == jid
        assert manifest["seed"] == 3
        assert set(manifest["files"]) == names - {"manifest.json"}
        for rel, meta in manifest["files"].items():
            data = z.read(rel)
            assert hashlib.sha256(data).hexdigest() == meta["sha256"], rel
            assert len(data) == meta["bytes"], rel
        summary = json.loads(z.read("search.json"))
        assert summary["best"] == result["best"]
        structure_json = json.loads(z.read("structure.json"))

        # ?format=json: the best structure only
        r = c.get(f"/v1/searches/{jid}/backbone", params={"format": "json"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.json() == result["best"]["structure"] == structure_json
        assert_problem(c.get(f"/v1/searches/{jid}/backbone", params={"format": "tar"}), 422, "format")

        # the trial history
        r = c.get(f"/v1/searches/{jid}/trials", params={"limit": 100})
        assert r.status_code == 200
        page = r.json()
        assert [t["number"] for t in page["items"]] == list(range(100)) and page["next_offset"] == 100


@pytest.mark.timeout(180)
def test_status_document_is_rendered_per_version_and_host(service: Any) -> None:
    """The status poll serves a version of the job rendered once (the server caches the JSON per row
    version): every answer equals the document the listing renders afresh, a change (cancel, delete)
    shows at once, and the links are relative (the Host the client sent is never reflected)."""
    t = tenant()
    with service.server.client(service.new_key(t)) as c:
        jid = submit(c, LONG)["id"]
        try:
            wait_state(c, jid, ("running",), timeout=60, pred=lambda j: bool(j["progress"]))
            seen = set()
            for _ in range(20):  # a running job: progress every ~0.25 s, each GET a (new or cached) version
                r = c.get(f"/v1/searches/{jid}")
                assert r.status_code == 200 and r.headers["content-type"] == "application/json"
                doc = r.json()
                assert doc["state"] == "running" and doc["id"] == jid
                seen.add(doc["progress"]["iteration"])
                time.sleep(0.05)
            assert len(seen) >= 2  # the cached document did not freeze the progress
            assert c.post(f"/v1/searches/{jid}/cancel").status_code == 200
            job = wait_state(c, jid, timeout=60)
            assert job["state"] == "cancelled"
        finally:
            c.post(f"/v1/searches/{jid}/cancel")
        first, second = c.get(f"/v1/searches/{jid}"), c.get(f"/v1/searches/{jid}")  # rendered, then cached
        assert first.content == second.content and first.headers["etag"] == second.headers["etag"]
        listed = [j for j in c.get("/v1/searches").json()["items"] if j["id"] == jid]
        assert listed == [first.json()]
        # the same version asked for under another host name: the same document (links never reflect Host)
        host = f"localhost:{service.server.port}"
        other = c.get(f"/v1/searches/{jid}", headers={"Host": host}).json()
        assert other["links"]["self"] == f"/v1/searches/{jid}"
        assert other == first.json()
        assert c.delete(f"/v1/searches/{jid}").status_code == 204
        assert_problem(c.get(f"/v1/searches/{jid}"), 404, "search_id")


@pytest.mark.timeout(180)
def test_python_client(service: Any, tmp_path: Path) -> None:
    with Client(service.url, service.keys["a"]) as cl:
        job = cl.submit({**SMALL, "seed": 5})
        seen: list[str] = []
        done = cl.wait(job["id"], interval=0.1, timeout=150, progress=lambda j: seen.append(j["state"]))
        assert done["state"] == "succeeded" and seen[-1] == "succeeded"
        assert cl.get(job["id"])["state"] == "succeeded"  # served from the ETag cache (304)
        z = zipfile.ZipFile(cl.download(job["id"], tmp_path / "b.zip"))
        assert "structure.json" in z.namelist()
        js = json.loads(cl.download(job["id"], tmp_path / "b.json", format="json").read_text())
        assert js == done["result"]["best"]["structure"]
        assert job["id"] in [j["id"] for j in cl.list(state="succeeded", limit=200)]
        with pytest.raises(ServiceError) as e:
            cl.submit({"population": 1})
        assert e.value.status == 422 and e.value.field == "population"
        with pytest.raises(ServiceError) as e:
            cl.get("0" * 32)
        assert e.value.status == 404
    with Client(service.url, "zn_nope_nope") as bad, pytest.raises(ServiceError) as e:
        bad.list()
    assert e.value.status == 401


@pytest.mark.timeout(180)
def test_list_cursor_pagination_and_state_filter(service: Any) -> None:
    t = tenant()
    with service.server.client(service.new_key(t)) as c:
        ids = [submit(c, {"seed": i})["id"] for i in range(5)]
        pages: list[list[str]] = []
        cursor = None
        while True:
            r = c.get("/v1/searches", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            body = r.json()
            pages.append([j["id"] for j in body["items"]])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [i for p in pages for i in p] == ids[::-1]  # newest first, each exactly once
        for i in ids:
            wait_state(c, i)
        assert sorted(all_ids(c, state="succeeded")) == sorted(ids)
        assert all_ids(c, state="queued") == [] and all_ids(c, state="running") == []
        assert_problem(c.get("/v1/searches", params={"state": "bogus"}), 422, "state")
        assert_problem(c.get("/v1/searches", params={"limit": 0}), 422, "limit")
        assert_problem(c.get("/v1/searches", params={"cursor": "not-a-cursor"}), 400, "cursor")


@pytest.mark.timeout(240)
def test_cancel_queued_and_running_and_delete(service: Any) -> None:
    t = tenant()
    with service.server.client(service.new_key(t)) as c:
        long_ids: list[str] = []
        try:
            # two long searches take both slots (ZENNAS_MAX_CONCURRENT_SEARCHES=2) ...
            long_ids = [submit(c, {**LONG, "seed": i})["id"] for i in range(2)]
            for i in long_ids:
                wait_state(c, i, ("running",), timeout=60, pred=lambda j: bool(j["progress"]))
            # ... so a third one stays queued; cancelling it is immediate
            q = submit(c)
            assert q["state"] == "queued"
            assert c.get(f"/v1/searches/{q['id']}").json()["state"] == "queued"
            r = c.post(f"/v1/searches/{q['id']}/cancel")
            assert r.status_code == 200 and r.json()["state"] == "cancelled"
            assert r.json()["finished_at"] is not None
            # a running search cannot be deleted
            assert_problem(c.delete(f"/v1/searches/{long_ids[0]}"), 409, "state")
            # cancelling a running one: it stops at its next generation
            for i in long_ids:
                r = c.post(f"/v1/searches/{i}/cancel")
                assert r.status_code == 200 and r.json()["state"] in ("running", "cancelled")
            for i in long_ids:
                job = wait_state(c, i, timeout=30)
                assert job["state"] == "cancelled", job
                assert job["progress"]["iteration"] < LONG["iterations"]
            # cancelling a finished job changes nothing
            assert c.post(f"/v1/searches/{q['id']}/cancel").json()["state"] == "cancelled"
            assert_problem(c.get(f"/v1/searches/{q['id']}/backbone"), 409, "state")
        finally:
            for i in long_ids:
                c.post(f"/v1/searches/{i}/cancel")

        # delete a finished job: 204, then it is gone (404), with its trials and checkpoint
        done = submit(c)
        wait_state(c, done["id"])
        assert c.get(f"/v1/searches/{done['id']}/backbone").status_code == 200  # artifacts exist
        assert (service.artifacts / done["id"]).exists()
        for jid in (done["id"], q["id"], long_ids[0]):
            r = c.delete(f"/v1/searches/{jid}")
            assert r.status_code == 204, r.text
            assert_problem(c.get(f"/v1/searches/{jid}"), 404, "search_id")
            assert_problem(c.delete(f"/v1/searches/{jid}"), 404, "search_id")
        assert not (service.artifacts / done["id"]).exists()
        with service.db().connect() as conn:
            for table in ("search_trials", "search_checkpoints"):
                n = conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE search_id IN (:a, :b)"),
                                 {"a": done["id"], "b": long_ids[0]}).scalar_one()
                assert n == 0, table
            # the other cancelled search kept its trials (only what was deleted is gone)
            assert conn.execute(sa.text("SELECT count(*) FROM search_trials WHERE search_id = :a"),
                                {"a": long_ids[1]}).scalar_one() > 0


@pytest.mark.timeout(120)
def test_idempotency_key(service: Any) -> None:
    t = tenant()
    with service.server.client(service.new_key(t)) as c:
        r1 = c.post("/v1/searches", json=SMALL, headers={"Idempotency-Key": "k-1"})
        r2 = c.post("/v1/searches", json=SMALL, headers={"Idempotency-Key": "k-1"})
        assert r1.status_code == r2.status_code == 202
        assert r1.json()["id"] == r2.json()["id"]
        assert "idempotent-replayed" not in r1.headers and r2.headers["idempotent-replayed"] == "true"
        assert all_ids(c) == [r1.json()["id"]]
        r3 = c.post("/v1/searches", json=SMALL, headers={"Idempotency-Key": "k-2"})
        assert r3.json()["id"] != r1.json()["id"]
        # the same key with another spec is an error, not the first job (and creates nothing)
        p = assert_problem(c.post("/v1/searches", json={**SMALL, "seed": 7}, headers={"Idempotency-Key": "k-1"}),
                           422, "Idempotency-Key")
        assert r1.json()["id"] in p["detail"]

        # many simultaneous submissions with one key: one job
        ids: list[str] = []
        errors: list[str] = []
        barrier = threading.Barrier(8)

        def post() -> None:
            with service.server.client(service.keys[t]) as cc:
                barrier.wait()
                r = cc.post("/v1/searches", json=SMALL, headers={"Idempotency-Key": "k-race"})
                if r.status_code == 202:
                    ids.append(r.json()["id"])
                else:
                    errors.append(f"{r.status_code} {r.text}")

        threads = [threading.Thread(target=post) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        assert len(ids) == 8 and len(set(ids)) == 1
    with service.db().connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE tenant = :t AND idempotency_key = 'k-race'"),
                         {"t": t}).scalar_one()
        assert n == 1
        assert conn.execute(sa.text("SELECT count(*) FROM jobs WHERE tenant = :t"), {"t": t}).scalar_one() == 3
    # the key is scoped to the tenant: another tenant's same key is another job
    with service.server.client(service.new_key(tenant())) as other:
        assert other.post("/v1/searches", json=SMALL, headers={"Idempotency-Key": "k-1"}).json()["id"] != r1.json()["id"]


@pytest.mark.timeout(180)
def test_tenant_isolation_with_cli_keys(service: Any) -> None:
    with service.client("a") as a, service.client("b") as b:
        ja = submit(a)["id"]
        jb = submit(b)["id"]
        for method, path in (("GET", ""), ("POST", "/cancel"), ("DELETE", ""), ("GET", "/events"),
                             ("GET", "/trials"), ("GET", "/backbone")):
            assert_problem(b.request(method, f"/v1/searches/{ja}{path}"), 404, "search_id")
        assert a.get(f"/v1/searches/{ja}").status_code == 200
        ids_a, ids_b = set(all_ids(a)), set(all_ids(b))
        assert ja in ids_a and ja not in ids_b and jb in ids_b and jb not in ids_a
        with service.db().connect() as conn:
            rows = conn.execute(sa.text("SELECT id, tenant FROM jobs")).all()
        assert ids_a == {r[0] for r in rows if r[1] == "a"}
        assert ids_b == {r[0] for r in rows if r[1] == "b"}
        wait_state(a, ja)
        wait_state(b, jb)
        assert_problem(b.get(f"/v1/searches/{ja}/backbone"), 404)


@pytest.mark.timeout(120)
def test_missing_invalid_and_revoked_keys(service: Any) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as c:
        body = assert_problem(c.get("/v1/searches"), 401, "authorization")
        assert "Bearer" in c.get("/v1/searches").headers["www-authenticate"]
        assert body["instance"] == "/v1/searches"
        for header in ("Bearer zn_0000_nope", "Bearer garbage", "Basic YTpi", "Bearer zn_x",
                       "Bearer " + service.keys["a"] + "x"):
            assert_problem(c.get("/v1/searches", headers={"Authorization": header}), 401, "authorization")
        assert_problem(c.post("/v1/searches", json=SMALL), 401, "authorization")
        assert_problem(c.post("/v1/score", json={"structure": "x"}), 401)

    # a key made with the CLI works until it is revoked with the CLI
    key = cli(service.env, "keys", "create", "--tenant", "revokee").stdout.strip()
    assert key.startswith("zn_")
    kid = key.split("_")[1]
    with service.server.client(key) as c:
        assert c.get("/v1/searches").status_code == 200
        listed = cli(service.env, "keys", "list").stdout
        assert kid in listed and "revokee" in listed
        assert cli(service.env, "keys", "revoke", kid).returncode == 0
        assert_problem(c.get("/v1/searches"), 401, "authorization")
        assert_problem(c.post("/v1/searches", json=SMALL), 401, "authorization")
    assert any(kid in line and "revoked" in line for line in cli(service.env, "keys", "list").stdout.splitlines())
    assert cli(service.env, "keys", "revoke", kid, check=False).returncode != 0  # already revoked
    assert cli(service.env, "keys", "create", "--tenant", "bad tenant!", check=False).returncode != 0


@pytest.mark.timeout(120)
def test_browser_session_cookie_and_csrf(service: Any) -> None:
    t = tenant()
    key = service.new_key(t)
    with httpx.Client(base_url=service.url, timeout=30) as c:
        assert_problem(c.post("/v1/session", json={"api_key": "zn_nope_nope"}), 401, "api_key")
        assert_problem(c.post("/v1/session", json={"api_key": key, "x": 1}), 422, "x")
        r = c.post("/v1/session", json={"api_key": key})
        assert r.status_code == 200, r.text
        csrf = r.json()["csrf_token"]
        assert r.json()["tenant"] == t and csrf
        cookie = r.headers["set-cookie"]
        attrs = [a.strip().lower() for a in cookie.split(";")]
        assert attrs[0].startswith("zennas_session=")
        assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
        assert "secure" not in attrs  # plain http on loopback
        assert c.cookies.get("zennas_session")

        # reads work with the cookie alone
        assert c.get("/v1/searches").status_code == 200
        # state-changing requests need the CSRF token
        assert_problem(c.post("/v1/searches", json=SMALL), 403, "x-csrf-token")
        assert_problem(c.post("/v1/searches", json=SMALL, headers={"X-CSRF-Token": "wrong"}), 403, "x-csrf-token")
        r = c.post("/v1/searches", json=SMALL, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 202, r.text
        jid = r.json()["id"]
        assert_problem(c.post(f"/v1/searches/{jid}/cancel"), 403, "x-csrf-token")
        assert all_ids(c) == [jid]
        # a forged cookie is refused
        with httpx.Client(base_url=service.url, timeout=30, cookies={"zennas_session": "e30.deadbeef"}) as forged:
            assert_problem(forged.get("/v1/searches"), 401, "session")
        # signing out clears the cookie
        assert c.request("DELETE", "/v1/session").status_code == 204
        assert_problem(c.get("/v1/searches"), 401)

        # a session dies with its key
        key2 = service.new_key(t)
        r = c.post("/v1/session", json={"api_key": key2})
        assert c.get("/v1/searches").status_code == 200
        with service.db().begin() as conn:
            conn.execute(sa.text("UPDATE api_keys SET revoked_at = 1 WHERE id = :k"), {"k": key2.split("_")[1]})
        assert_problem(c.get("/v1/searches"), 401, "session")


def parse_sse(lines: list[str]) -> list[tuple[str, dict[str, Any], str | None]]:
    events: list[tuple[str, dict[str, Any], str | None]] = []
    name, data, eid = None, None, None
    for line in lines:
        if line == "":
            if name is not None:
                events.append((name, json.loads(data or "{}"), eid))
            name, data, eid = None, None, None
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line.startswith("id: "):
            eid = line[4:]
    return events


@pytest.mark.timeout(180)
def test_sse_progress_events(service: Any) -> None:
    with service.client("a") as c:
        jid = submit(c, {"population": 32, "iterations": 12_000, "checkpoint_every": 1024})["id"]
        lines: list[str] = []
        with c.stream("GET", f"/v1/searches/{jid}/events", timeout=150) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"
            for line in r.iter_lines():
                lines.append(line)
        events = parse_sse(lines)
        assert events, lines
        assert events[-1][0] == "end" and events[-1][1] == {"state": "succeeded"}
        progress = [e for e in events if e[0] == "progress"]
        assert progress and [e[0] for e in events[:-1]] == ["progress"] * (len(events) - 1)
        for _, data, eid in progress:
            assert data["schema"] == "zennas.progress/1", data
            assert data["state"] in ("queued", "running", "succeeded")
            assert eid is not None
        ids = [int(e[2]) for e in progress]  # type: ignore[arg-type]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        running = [d for _, d, _ in progress if "iteration" in d]
        assert running, progress
        its = [d["iteration"] for d in running]
        assert its == sorted(its)
        last = progress[-1][1]
        assert last["state"] == "succeeded" and last["iteration"] == last["iterations"] == 12_000
        for k in ("evaluated", "rejected", "candidates_per_s", "best_score", "best_structure", "generation"):
            assert k in last, k
        # a finished job's stream is short: one progress event, then the end
        with c.stream("GET", f"/v1/searches/{jid}/events") as r:
            again = parse_sse(list(r.iter_lines()))
        assert [e[0] for e in again] == ["progress", "end"]
        assert_problem(c.get(f"/v1/searches/{'0' * 32}/events"), 404, "search_id")


@pytest.mark.timeout(60)
def test_metrics(service: Any) -> None:
    with service.client("a") as c:
        assert c.get("/v1/searches").status_code == 200
        assert c.get(f"/v1/searches/{'0' * 32}").status_code == 404
    r = httpx.get(service.url + "/metrics", headers={"Authorization": "Bearer metrics-" + "1" * 24})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for state in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert f'zennas_jobs{{state="{state}"}}' in text
    assert "zennas_queue_depth" in text and "zennas_candidates_evaluated" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("zennas_request_seconds_")]
    ours = [ln for ln in lines if 'method="GET"' in ln and 'route="/v1/searches"' in ln]
    assert any(ln.startswith("zennas_request_seconds_bucket{") for ln in ours), lines
    count = [ln for ln in ours if ln.startswith("zennas_request_seconds_count{")]
    assert count and float(count[0].rsplit(" ", 1)[1]) >= 1
    # the route's template, not the path: one series for every search id
    one = [ln for ln in lines if ln.startswith("zennas_request_seconds_count{")
           and 'method="GET"' in ln and 'route="/v1/searches/{search_id}"' in ln]
    assert one and float(one[0].rsplit(" ", 1)[1]) >= 1, lines
    assert not any("0" * 32 in ln for ln in lines)


@pytest.mark.timeout(60)
def test_spaces(service: Any) -> None:
    with service.client("a") as c:
        r = c.get("/v1/spaces")
        assert r.status_code == 200
        spaces = {s["name"]: s for s in r.json()}
        assert {"detection-k1kxk1", "detection-dw", "giraffe-s2d"} <= set(spaces)
        for s in spaces.values():
            assert s["start_flops"] > 0 and s["start_layers"] > 0 and "budgets" in s
        r = c.get("/v1/spaces/detection-k1kxk1")
        assert r.status_code == 200
        doc = r.json()
        assert doc["name"] == "detection-k1kxk1" and {"start", "mutation", "budgets"} <= set(doc)
        assert_problem(c.get("/v1/spaces/nope"), 404, "name")
    assert_problem(httpx.get(service.url + "/v1/spaces"), 401)


MAEDET_S_SCORE = 1731.907009966715


@pytest.mark.timeout(60)
def test_score_maedet_s(service: Any) -> None:
    txt = (ROOT / "examples" / "maedet_s.txt").read_text()
    with service.client("a") as c:
        r = c.post("/v1/score", json={"structure": txt})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["score_type"] == "entropy-analytic"
        assert body["score"] == pytest.approx(MAEDET_S_SCORE, rel=1e-12, abs=0)
        assert body["flops"] > 0 and body["params"] > 0 and body["resolution"] == [480, 480]
        r = c.post("/v1/score", json={"structure": json.loads((ROOT / "examples" / "maedet_s.json").read_text())})
        assert r.status_code == 200, r.text
        assert r.json()["score"] == pytest.approx(MAEDET_S_SCORE, rel=1e-12, abs=0)
        r = c.post("/v1/score", json={"structure": txt, "score": "params"})
        assert r.status_code == 200 and r.json()["score_type"] == "params" and r.json()["params"] == body["params"]
        body = assert_problem(c.post("/v1/score", json={"structure": "not a structure"}), 422)
        assert body["errors"][0]["field"].startswith("structure")
        assert_problem(c.post("/v1/score", json={"structure": txt, "resolution": 16}), 422, "resolution")
