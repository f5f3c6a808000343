"""Soak: one ``zennas serve`` process tree (SQLite, embedded Ray) holds up for a lifetime of jobs.

For at least ``ZENNAS_SOAK_SECONDS`` (default 180) past the first job that uses Ray, rounds of searches
run, each round's jobs overlapping (two run at once, the rest queue): analytic searches, forward-pass
searches on the embedded Ray (``entropy`` at score resolution 32), a latency-budgeted search (measured), a
search under a predicted latency budget with a stored profile (its top candidates verified) in every round, an
NSGA-II search, a cancelled one and a deleted one; the dispatcher is SIGKILLed once, mid-search.
Meanwhile a client sends hostile requests (from the service issue's list: a non-ASCII session cookie,
200k-deep structures, an overflowing offset, unknown/NaN/absurd settings, a 900 KB name, a non-UTF-8
body, a foreign Host header, an oversized or chunked body) and a watcher polls ``/readyz`` and
samples both processes' peak RSS (``VmHWM``).

At the end: every job is in its expected state (the killed one resumed to success); the dispatcher
was started exactly twice (the kill and the supervisor's restart); ``/readyz`` answered 200 except
between the kill and the restart, where it answered 503; peak RSS of the HTTP process <= 1.5 GB and
of each dispatcher <= 2 GB; after SIGTERM no process of any dispatcher's run (Ray included) is left;
no hostile request got a 5xx or no answer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import Server, base_env, cli, wait_state
from zennas_api.supervisor import TOKEN_ENV

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("ZENNAS_SOAK_SECONDS", "180"))
HTTP_RSS_LIMIT_KB = 1.5 * 1024 * 1024
DISPATCHER_RSS_LIMIT_KB = 2.0 * 1024 * 1024

BASE: dict[str, Any] = {"space": "detection-k1kxk1", "resolution": 480, "budgets": {"flops": 1.88e10, "layers": 91}}
ANALYTIC = {**BASE, "score": "entropy-analytic", "population": 16, "iterations": 480, "generation": 16}
FORWARD = {**BASE, "score": "entropy", "score_settings": {"resolution": 32}, "population": 8, "iterations": 24,
           "generation": 8}
LATENCY = {**BASE, "score": "entropy-analytic", "resolution": 128, "budgets": {"layers": 91, "latency_ms": 5000},
           "latency": {"runs": 2, "warmup": 0}, "population": 8, "iterations": 16, "generation": 8}
NSGA2 = {**ANALYTIC, "sampler": "nsga2", "objectives": ["flops"], "population": 16, "iterations": 160}
LONG = {**ANALYTIC, "population": 64, "iterations": 1_000_000, "checkpoint_every": 4096}  # the service limit
TINY = {"population": 4, "iterations": 8, "generation": 4}  # hostile specs, should any be accepted and run


def hostile_requests(job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, httpx.request kwargs) for each hostile request; none may get a 5xx."""
    deep = "[" * 200_000 + "]" * 200_000
    search = {**BASE, **TINY, "score": "entropy-analytic"}
    raw = json.dumps(search)[:-1]
    return [
        ("non-ASCII session cookie", {"method": "GET", "url": "/v1/searches",
                                      "headers": {"Cookie": "zennas_session=\u00e9\u00e8".encode()}}),
        ("200k-deep structure (JSON)", {"method": "POST", "url": "/v1/score",
                                        "content": '{"structure": ' + deep + ', "score": "params"}',
                                        "headers": {"Content-Type": "application/json"}}),
        ("200k-deep structure (text)", {"method": "POST", "url": "/v1/score",
                                        "json": {"structure": deep, "score": "params"}}),
        ("offset beyond int64", {"method": "GET", "url": f"/v1/searches/{job_id}/trials?offset=9223372036854775808"}),
        ("unknown analytic setting", {"method": "POST", "url": "/v1/searches",
                                      "json": {**search, "score": "params", "score_settings": {"evil": 1}}}),
        ("NaN stage weight", {"method": "POST", "url": "/v1/searches",
                              "content": raw + ', "score_settings": {"stage_weights": [NaN, 0, 1, 1, 6]}}',
                              "headers": {"Content-Type": "application/json"}}),
        ("latency budget 1e-300", {"method": "POST", "url": "/v1/searches",
                                   "json": {**search, "resolution": 64, "budgets": {"latency_ms": 1e-300}}}),
        ("layer budget 1e30", {"method": "POST", "url": "/v1/searches", "json": {**search, "budgets": {"layers": 1e30}}}),
        ("seed as a string", {"method": "POST", "url": "/v1/searches", "json": {**search, "seed": "3"}}),
        ("seed as a bool", {"method": "POST", "url": "/v1/searches", "json": {**search, "seed": True}}),
        ("900 KB space name with control characters", {
            "method": "POST", "url": "/v1/searches",
            "json": {**search, "space": "inline", "space_doc": {"name": "\x01\x07" * 450_000}}}),
        ("negative threads", {"method": "POST", "url": "/v1/searches",
                              "json": {**search, "score": "entropy", "score_settings": {"threads": -5}}}),
        ("non-UTF-8 body", {"method": "POST", "url": "/v1/searches", "content": b'{"space": "\xff\xfe"}',
                            "headers": {"Content-Type": "application/json"}}),
        ("foreign Host header", {"method": "GET", "url": "/v1/searches", "headers": {"Host": "evil.example"}}),
        ("oversized body", {"method": "POST", "url": "/v1/searches", "content": b"{" + b" " * 2_000_000 + b"}",
                            "headers": {"Content-Type": "application/json"}}),
    ]


class Watcher:
    """Polls /readyz and samples the HTTP process's and each dispatcher's peak RSS, in the background."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stop = threading.Event()
        self.ready: list[tuple[float, int]] = []
        self.peak_kb: dict[str, float] = {"http": 0.0}
        self.dispatchers: dict[int, str] = {}  # pid -> run token
        self.threads = [threading.Thread(target=self._ready, daemon=True),
                        threading.Thread(target=self._memory, daemon=True)]

    def __enter__(self) -> Watcher:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def _ready(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=10) as c:
            while not self.stop.is_set():
                try:
                    code = c.get("/readyz").status_code
                except httpx.TransportError:
                    code = -1
                self.ready.append((time.monotonic(), code))
                self.stop.wait(0.25)

    @staticmethod
    def _hwm_kb(pid: int) -> float | None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
        except OSError:
            return None
        return None

    def _memory(self) -> None:
        assert self.server.proc is not None
        http = self.server.proc.pid
        while not self.stop.is_set():
            kb = self._hwm_kb(http)
            if kb is not None:
                self.peak_kb["http"] = max(self.peak_kb["http"], kb)
            for rec_path in self.server.run_dir.glob("dispatcher-*.json"):
                try:
                    rec = json.loads(rec_path.read_text())
                except (OSError, ValueError):
                    continue
                self.dispatchers[int(rec["pid"])] = str(rec["token"])
            for pid in self.dispatchers:
                kb = self._hwm_kb(pid)
                if kb is not None:
                    key = f"dispatcher {pid}"
                    self.peak_kb[key] = max(self.peak_kb.get(key, 0.0), kb)
            self.stop.wait(0.5)


class Hostile:
    """Sends the hostile requests in a loop; records 5xx answers and requests that got no answer."""

    def __init__(self, server: Server, key: str, job_id: str) -> None:
        self.server, self.key, self.job_id = server, key, job_id
        self.stop = threading.Event()
        self.bad: dict[str, str] = {}
        self.sent = 0
        self.accepted: set[str] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        auth = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.server.url, timeout=60) as c:
            while not self.stop.is_set():
                for name, req in hostile_requests(self.job_id):
                    if self.stop.is_set():
                        return
                    headers = dict(req.get("headers", {}))
                    if name != "non-ASCII session cookie":
                        headers = {**auth, **headers}
                    kw = {k: v for k, v in req.items() if k != "headers"}
                    try:
                        r = c.request(headers=headers, **kw)
                    except httpx.TransportError as e:
                        self.bad[name] = f"no answer: {type(e).__name__}"
                        continue
                    self.sent += 1
                    if r.status_code >= 500:
                        self.bad[name] = f"{r.status_code} {r.text[:200]}"
                    elif r.status_code == 202:  # a spec the service should have refused: keep it from running
                        self.accepted.add(name)
                        jid = r.json()["id"]
                        c.post(f"/v1/searches/{jid}/cancel", headers=auth)
                    self.stop.wait(0.3)


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A private, short Ray temp dir (its socket paths must stay under 107 characters), removed after."""
    d = Path(f"/tmp/zs_{uuid.uuid4().hex[:8]}")
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def processes_with_token(tokens: set[str]) -> list[int]:
    out = []
    wanted = {f"{TOKEN_ENV}={t}".encode() for t in tokens}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            env = set(Path(f"/proc/{name}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if env & wanted:
            out.append(int(name))
    return out


def predicted(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """A search under a predicted latency budget with the stored profile ``name`` (the ``profile_doc``
    fixture: giraffe-s2d at 64x64): twice the start's prediction, FLOPs and layers capped at the
    start's, so the verified winner meets it (as in tests/api/test_profile_search.py)."""
    from zennas.cost import costs
    from zennas.latency import Predictor
    from zennas.latency.profile import profile_from_dict
    from zennas.space.space import get_space

    start = get_space("giraffe-s2d").start
    c = costs(start, 64, 64)
    budget = 2.0 * Predictor(profile_from_dict(doc)).predict(start)
    return {"space": "giraffe-s2d", "resolution": 64, "population": 8, "iterations": 64, "generation": 8,
            "budgets": {"latency_ms": budget, "flops": c.flops, "layers": c.layers},
            "latency": {"profile": name, "verify_top_k": 2}}


def test_soak(spawn: Callable[..., Server], tmp_path: Path, ray_tmp: Path, profile_doc: dict[str, Any]) -> None:
    env = base_env(f"sqlite:///{tmp_path / 'z.db'}", tmp_path / "artifacts", search_workers=1,
                   max_concurrent_searches=2, max_queued_per_tenant=1000, lease_seconds=10,
                   heartbeat_seconds=0.5, restart_backoff_max=2)
    env["RAY_TMPDIR"] = str(ray_tmp)
    key = cli(env, "keys", "create", "--tenant", "soak").stdout.strip()
    server = spawn(env)
    expected: dict[str, str] = {}  # job id -> the state it must end in ("deleted": gone)
    seed = iter(range(1, 10_000))

    with Watcher(server) as watch, server.client(key) as c:
        def submit(spec: dict[str, Any], want: str = "succeeded") -> str:
            r = c.post("/v1/searches", json={**spec, "seed": next(seed)})
            assert r.status_code == 202, r.text
            jid = str(r.json()["id"])
            expected[jid] = want
            return jid

        def finish(jids: list[str]) -> None:
            for jid in jids:
                job = wait_state(c, jid, timeout=300)
                assert job["state"] == expected[jid], (job["state"], job.get("error"), job["spec"])

        assert c.post("/v1/profiles", json={"name": "soak", "profile": profile_doc}).status_code == 201
        PREDICTED = predicted(profile_doc, "soak")
        first = submit(ANALYTIC)
        finish([first])
        hostile = Hostile(server, key, first)
        hostile.thread.start()

        ray_job = submit(FORWARD)  # the first job that uses Ray
        wait_state(c, ray_job, states=("running", "succeeded", "failed"), timeout=120)
        t_ray = time.monotonic()
        finish([ray_job])

        killed: dict[str, Any] = {}
        rounds = 0
        while time.monotonic() - t_ray < SOAK_SECONDS or rounds < 3:
            jobs = [submit(FORWARD), submit(ANALYTIC), submit(PREDICTED)]  # the last: a predicted latency budget
            if rounds == 0:
                jobs += [submit(LATENCY), submit(NSGA2)]
            if rounds == 1:  # kill the dispatcher mid-search; the job resumes after the restart
                victim = submit({**FORWARD, "iterations": 64})  # long enough to be caught mid-run
                wait_state(c, victim, states=("running",), timeout=120,
                           pred=lambda j: (j.get("progress") or {}).get("iteration", 0) > 0)
                pid = server.dispatcher_pid()
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                killed = {"pid": pid, "at": time.monotonic(), "job": victim}
                jobs.append(victim)
            if rounds == 2:
                cancel = submit(LONG, "cancelled")
                wait_state(c, cancel, states=("running",), timeout=120)
                assert c.post(f"/v1/searches/{cancel}/cancel").status_code in (200, 202)
                gone = submit(ANALYTIC, "deleted")
                jobs += [cancel, gone]
            for jid in jobs:
                if expected[jid] == "deleted":
                    expected[jid] = "succeeded"
                    finish([jid])
                    assert c.delete(f"/v1/searches/{jid}").status_code == 204
                    expected[jid] = "deleted"
                else:
                    finish([jid])
            rounds += 1
        soaked = time.monotonic() - t_ray
        hostile.stop.set()
        hostile.thread.join(timeout=120)

        # every job in its expected state, read once more at the end
        for jid, want in expected.items():
            r = c.get(f"/v1/searches/{jid}")
            if want == "deleted":
                assert r.status_code == 404, r.text
            else:
                assert r.status_code == 200 and r.json()["state"] == want, (jid, want, r.text[:300])
        victim_job = c.get(f"/v1/searches/{killed['job']}").json()
        assert victim_job["attempts"] >= 2  # resumed by the restarted dispatcher

    # the dispatcher changed only through the supervisor's one restart
    assert len(watch.dispatchers) == 2 and killed["pid"] in watch.dispatchers, watch.dispatchers
    assert server.log(tail=None).count("dispatcher started (pid") == 2
    # /readyz: 503 between the kill and the restart, 200 before and after, always answering
    codes = watch.ready
    assert all(code in (200, 503) for _, code in codes), sorted({code for _, code in codes})
    before = [code for t, code in codes if t < killed["at"]]
    after_kill = [(t, code) for t, code in codes if t >= killed["at"]]
    assert set(before) == {200}
    first_503 = next((t for t, code in after_kill if code == 503), None)
    assert first_503 is not None and first_503 - killed["at"] < 5, "no 503 after the dispatcher was killed"
    back = next(t for t, code in after_kill if t > first_503 and code == 200)
    assert all(code == 200 for t, code in after_kill if t > back), "/readyz flapped after the restart"
    # memory
    http_kb = watch.peak_kb["http"]
    disp_kb = max(v for k, v in watch.peak_kb.items() if k.startswith("dispatcher"))
    assert http_kb <= HTTP_RSS_LIMIT_KB, f"HTTP process peak RSS {http_kb / 1024:.0f} MB"
    assert disp_kb <= DISPATCHER_RSS_LIMIT_KB, f"dispatcher peak RSS {disp_kb / 1024:.0f} MB"
    # stopping the service stops every process its dispatchers started
    tokens = set(watch.dispatchers.values())
    assert processes_with_token(tokens), "the running dispatcher's processes should be found by its token"
    assert server.terminate(timeout=120) == 0
    left = processes_with_token(tokens)
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left]
    print(f"soak: {soaked:.0f} s past the first Ray job, {rounds} rounds, {len(expected)} jobs, "
          f"{hostile.sent} hostile requests; peak RSS http {http_kb / 1024:.0f} MB, dispatcher {disp_kb / 1024:.0f} MB; "
          f"hostile specs accepted: {sorted(hostile.accepted)}")
    assert not hostile.bad, f"hostile requests answered 5xx or not at all: {hostile.bad}"
