"""The web console in a real headless browser (Debian's chromium driven by Playwright) against a real
``zennas serve`` process: sign in, start a search from the form, follow it live, download its
bundle, field-level errors, tenant isolation, cancel, the NSGA-II Pareto plot, latency profiles and a
latency-verified search's predicted-vs-measured table, and screenshots of
the job page at desktop and phone widths (written to ``test-artifacts/``, not committed).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package only)")
expect = sync_api.expect

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
FINISHED = ("succeeded", "failed", "cancelled")

if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium; scripts/setup.sh does it)", allow_module_level=True)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    url: str
    keys: dict[str, str]
    log: Path

    def client(self, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[tenant]}"}, timeout=30)

    def submit(self, tenant: str, **spec: Any) -> str:
        with self.client(tenant) as c:
            r = c.post("/v1/searches", json=spec)
            assert r.status_code == 202, r.text
            return str(r.json()["id"])

    def wait(self, tenant: str, jid: str, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client(tenant) as c:
            while time.monotonic() < deadline:
                job: dict[str, Any] = c.get(f"/v1/searches/{jid}").json()
                if job["state"] in FINISHED:
                    return job
                time.sleep(0.2)
        raise AssertionError(f"search {jid} did not finish in {timeout} s:\n{self.log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``zennas serve`` (HTTP + dispatcher) on SQLite, dev mode off, with keys for tenants a and b."""
    tmp = tmp_path_factory.mktemp("console")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENNAS_")}
    env.update({"ZENNAS_DATABASE_URL": f"sqlite:///{tmp / 'zennas.db'}", "ZENNAS_ARTIFACTS_DIR": str(tmp / "artifacts"),
                "ZENNAS_DEV_MODE": "false", "ZENNAS_POLL_SECONDS": "0.2", "ZENNAS_HEARTBEAT_SECONDS": "0.5",
                "PYTHONUNBUFFERED": "1"})
    keys = {}
    for tenant in ("a", "b"):
        r = subprocess.run([sys.executable, "-m", "zennas.cli", "keys", "create", "--tenant", tenant], env=env,
                           cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        keys[tenant] = r.stdout.strip()
    port = _free_port()
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "zennas.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in 120 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        yield Service(url, keys, log_path)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its dispatcher: the whole group
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A browser page in its own context (own cookies) that records script errors and any request
    leaving the service (the console must fetch nothing from elsewhere)."""

    def __init__(self, browser: Any, service: Service, width: int = 1280, height: int = 900) -> None:
        self.ctx = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        self.ctx.set_default_timeout(30_000)
        self.page = self.ctx.new_page()
        self.service = service
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("request", lambda r: None if r.url.startswith((service.url, "data:")) else self.foreign.append(r.url))

    def sign_in(self, tenant: str) -> None:
        p = self.page
        p.goto(self.service.url + "/")
        field = p.get_by_label("API key")
        expect(field).to_be_focused()
        p.keyboard.type(self.service.keys[tenant])  # keyboard only: the field has focus, Enter submits
        p.keyboard.press("Enter")
        expect(p.get_by_role("heading", level=1)).to_have_text("Searches")
        expect(p.locator("#tenant-name")).to_have_text(tenant)

    def close(self) -> None:
        self.ctx.close()


def _console_errors(errors: list[str]) -> list[str]:
    # a 404/401 fetch the page handles still logs "Failed to load resource" in chromium: not a script error
    return [e for e in errors if "Failed to load resource" not in e]


@pytest.mark.timeout(300)
def test_sign_in_search_live_plots_and_downloads(service: Service, browser: Any) -> None:
    t0 = time.monotonic()
    ui = Page(browser, service)
    page = ui.page
    ui.sign_in("a")

    # the key became an HttpOnly SameSite=Strict cookie; nothing in the URL or web storage
    cookie = next(c for c in ui.ctx.cookies() if c["name"] == "zennas_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert service.keys["a"] not in page.url and service.keys["a"] not in page.content()

    # the form comes from the schema: every input has a label
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New search").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New search")
    form = page.locator("form.new-search")
    expect(form).to_be_visible()
    for inp in form.locator("input:visible, select:visible").all():
        iid = inp.get_attribute("id")
        assert iid and (page.locator(f"label[for='{iid}']").count() == 1 or inp.get_attribute("type") == "checkbox"), iid
    page.get_by_label("Search space").select_option("detection-k1kxk1")
    page.get_by_label("Zero-shot score").select_option("entropy-analytic")
    page.get_by_label("Population").fill("32")
    page.get_by_label("Iterations").fill("3000")
    page.get_by_label("FLOPs", exact=True).fill("188e8")
    page.get_by_label("Layers").fill("91")
    page.get_by_role("button", name="Start search").click()
    page.wait_for_url(re.compile(r"#/searches/[0-9a-f]+$"))
    jid = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", level=1)).to_contain_text(jid)
    expect(page.locator("#progress-live")).to_have_attribute("aria-live", "polite")

    # live from the SSE stream until it succeeds
    expect(page.locator("#job-state [data-state]")).to_have_attribute("data-state", "succeeded", timeout=180_000)
    expect(page.locator("#progress-text")).to_contain_text("3,000 / 3,000")
    assert page.locator("#job-progress").evaluate("e => e.value") == 100
    expect(page.locator("#counts-text")).to_contain_text("Evaluated")
    expect(page.locator("#counts-chart svg rect.seg-eval")).to_have_count(1)
    expect(page.locator("#best-chart svg path.line")).to_have_count(1)
    expect(page.locator("#population-chart svg rect.range-box")).to_have_count(1)
    with service.client("a") as c:
        job = c.get(f"/v1/searches/{jid}").json()
    blocks = job["result"]["best"]["structure"]["blocks"]
    assert job["spec"]["budgets"]["flops"] == 188e8 and job["spec"]["population"] == 32
    expect(page.locator("#backbone-chart svg rect.block")).to_have_count(len(blocks))
    expect(page.locator("#backbone-chart svg text.stage-label.neck")).to_have_count(6)  # C3, C4, C5: two lines each
    assert page.locator("#backbone-chart svg title").first.text_content() == "Chosen backbone"
    expect(page.locator("#pareto-chart")).to_have_count(0)  # evolution: no Pareto front

    # downloads: bundle zip, structure JSON, MMDetection config (when the mmdet extra made one)
    expect(page.locator("#dl-bundle")).to_be_visible()
    with page.expect_download() as dl:
        page.locator("#dl-bundle").click()
    data = Path(dl.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = set(z.namelist())
        assert {"structure.json", "manifest.json", "search.json"} <= names, names
        assert json.loads(z.read("structure.json"))["blocks"] == blocks
        assert "report.html" in names and z.read("report.html").count(b"data:image/png;base64,") >= 2
    with page.expect_download() as dl:
        page.locator("#dl-structure").click()
    assert json.loads(Path(dl.value.path()).read_text())["blocks"] == blocks
    if "mmdet/gfl_gfpn_config.py" in names:
        expect(page.locator("#dl-mmdet")).to_be_visible()
        with page.expect_download() as dl:
            page.locator("#dl-mmdet").click()
        assert dl.value.suggested_filename.endswith("gfl_gfpn_config.py")
        assert Path(dl.value.path()).read_bytes() == z_read(data, "mmdet/gfl_gfpn_config.py")

    # screenshots at desktop and phone widths; nothing overflows sideways on the phone
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "console-job-1280x900.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function("() => document.querySelector('#backbone-chart svg').getAttribute('width') < 400")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SHOTS / "console-job-390x844.png"), full_page=True)

    # a reload keeps the session: the CSRF token is read back from GET /v1/session, not from storage
    page.set_viewport_size({"width": 1280, "height": 900})
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_contain_text(jid)
    page.get_by_role("link", name="← All searches").click()
    row = page.locator(f"tr[data-id='{jid}']")
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("detection-k1kxk1")
    expect(row.locator("progress")).to_have_attribute("value", "100")
    page.screenshot(path=str(SHOTS / "console-list-1280x900.png"), full_page=True)

    assert _console_errors(ui.errors) == []
    assert ui.foreign == []
    ui.close()
    print(f"\nconsole search flow: {time.monotonic() - t0:.1f} s")


def z_read(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.read(name)


@pytest.mark.timeout(300)
def test_form_errors_are_shown_next_to_their_fields(service: Service, browser: Any) -> None:
    ui = Page(browser, service, 390, 844)
    page = ui.page
    ui.sign_in("a")
    page.goto(service.url + "/#/new")
    page.get_by_label("Population").fill("1")
    page.get_by_label("FLOPs", exact=True).fill("-5")
    page.get_by_role("button", name="Start search").click()
    pop_err = page.locator("[data-error-for='population']")
    expect(pop_err).to_be_visible()
    expect(pop_err).to_contain_text(re.compile("population", re.I))
    expect(page.get_by_label("Population")).to_have_attribute("aria-invalid", "true")
    flops_err = page.locator("[data-error-for='budgets.flops']")
    expect(flops_err).to_contain_text(re.compile("flops", re.I))
    summary = page.locator("#form-errors")
    expect(summary).to_be_visible()
    expect(summary).to_be_focused()
    expect(summary.locator("li")).to_have_count(2)
    summary.get_by_role("link", name=re.compile("Population")).click()
    expect(page.get_by_label("Population")).to_be_focused()
    # a fixed field loses its error on the next submission; the service's own limit (not the schema's)
    page.get_by_label("Population").fill("32")
    page.get_by_label("FLOPs", exact=True).fill("")
    page.get_by_label("Iterations").fill("99999999")
    page.get_by_role("button", name="Start search").click()
    it_err = page.locator("[data-error-for='iterations']")
    expect(it_err).to_contain_text(re.compile("iterations", re.I))
    expect(pop_err).to_be_empty()
    assert page.url.endswith("#/new")  # nothing was created
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "console-form-errors-390x844.png"), full_page=True)
    page.get_by_role("link", name="Searches", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Searches")
    expect(page.locator("table.jobs, .empty")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SHOTS / "console-list-390x844.png"), full_page=True)
    assert _console_errors(ui.errors) == []
    ui.close()


@pytest.mark.timeout(300)
def test_another_tenant_cannot_open_the_job_page(service: Service, browser: Any) -> None:
    jid = service.submit("a", population=16, iterations=320, budgets={"flops": 188e8, "layers": 91})
    ui = Page(browser, service)
    page = ui.page
    ui.sign_in("b")
    page.goto(f"{service.url}/#/searches/{jid}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Search not found")
    expect(page.locator("#not-found")).to_contain_text("Not found")
    expect(page.locator("#job-state")).to_have_count(0)
    page.goto(f"{service.url}/#/")
    expect(page.locator(f"tr[data-id='{jid}']")).to_have_count(0)
    # the same from b's browser session at the API: the artifacts of a's search are not found either
    service.wait("a", jid)
    r = page.request.get(f"{service.url}/v1/searches/{jid}/artifacts/structure.json")
    assert r.status == 404
    ui.close()


@pytest.mark.timeout(300)
def test_cancel_a_running_search_from_its_page(service: Service, browser: Any) -> None:
    ui = Page(browser, service)
    page = ui.page
    ui.sign_in("a")
    jid = service.submit("a", population=64, iterations=1_000_000)
    page.goto(f"{service.url}/#/searches/{jid}")
    expect(page.locator("#job-state [data-state]")).to_have_attribute("data-state", "running", timeout=60_000)
    # live progress: the bar moves and an ETA is shown
    page.wait_for_function("() => document.querySelector('#job-progress').value > 0", timeout=60_000)
    expect(page.locator("#progress-text")).to_contain_text("ETA")
    expect(page.locator("#best-chart svg path.line")).to_have_count(1, timeout=30_000)
    page.get_by_role("button", name="Cancel search").click()  # a cookie POST: it needs (and has) the CSRF token
    expect(page.locator("#job-state [data-state]")).to_have_attribute("data-state", "cancelled", timeout=120_000)
    expect(page.get_by_role("button", name="Cancel search")).to_be_hidden()
    expect(page.locator("#downloads")).to_contain_text("Nothing to download")
    assert _console_errors(ui.errors) == []
    ui.close()


@pytest.mark.timeout(300)
def test_nsga2_job_page_draws_the_pareto_front(service: Service, browser: Any) -> None:
    jid = service.submit("a", population=16, iterations=480, sampler="nsga2", objectives=["flops"],
                         budgets={"flops": 188e8, "layers": 91})
    job = service.wait("a", jid)
    assert job["state"] == "succeeded", job
    front = job["result"]["pareto_front"]
    ui = Page(browser, service)
    page = ui.page
    ui.sign_in("a")
    page.goto(f"{service.url}/#/searches/{jid}")
    expect(page.locator("#job-state [data-state]")).to_have_attribute("data-state", "succeeded")
    expect(page.locator("#pareto-chart svg circle.dot")).to_have_count(len(front))
    expect(page.locator("#pareto-chart svg circle.chosen-ring")).to_have_count(1)
    expect(page.locator("#population-chart")).to_have_count(0)  # NSGA-II keeps no evolution population
    chosen = max(front, key=lambda p: p["score"])
    expect(page.locator("#pareto-chart svg")).to_contain_text(f"chosen #{chosen['number']}")
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "console-nsga2-1280x900.png"), full_page=True)
    assert _console_errors(ui.errors) == []
    ui.close()


@pytest.mark.timeout(300)
def test_latency_profiles_and_the_verified_candidates(service: Service, browser: Any) -> None:
    """The tenant's profiles are listed; a latency-verified search shows predicted vs measured."""
    pytest.importorskip("scipy")
    from zennas.cost import costs
    from zennas.latency import BuildSpec, Predictor, build_profile
    from zennas.space.space import get_space

    # a real profile, tiny (torch eager, the S2D space at 64x64, a coarse grid, the CPU clock: ~8 s;
    # the settings of tests/api/conftest.py's profile_doc, which says why)
    prof = build_profile(BuildSpec(runtime="torch", space="giraffe-s2d", height=64, width=64, grid_ratio=4.0,
                                   plan_samples=20, calibration=6, warmup=1, min_runs=5, max_runs=5, min_time_s=0.0,
                                   network_runs=5, clock="cpu"))
    with service.client("a") as c:
        assert c.post("/v1/profiles", json={"name": "cpu-tiny", "profile": prof.to_dict()}).status_code == 201
    # FLOPs and layers capped at the start's, the latency budget twice its prediction: room for the
    # measured winner on a loaded machine (tests/api/test_profile_search.py's body() says why)
    start = get_space("giraffe-s2d").start
    c = costs(start, 64, 64)
    budgets = {"latency_ms": 2.0 * Predictor(prof).predict(start), "flops": c.flops, "layers": c.layers}
    jid = service.submit("a", space="giraffe-s2d", resolution=64, population=16, iterations=320,
                         budgets=budgets, latency={"profile": "cpu-tiny", "verify_top_k": 3})
    job = service.wait("a", jid)
    assert job["state"] == "succeeded", job
    lat = job["result"]["latency"]
    ui = Page(browser, service)
    page = ui.page
    ui.sign_in("a")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Latency profiles").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Latency profiles")
    row = page.locator("#profiles-table tr[data-name='cpu-tiny']")
    expect(row).to_contain_text("torch")
    expect(row).to_contain_text("giraffe-s2d")
    expect(row).to_contain_text("64×64, batch 1")
    page.goto(f"{service.url}/#/searches/{jid}")
    expect(page.locator("#job-state [data-state]")).to_have_attribute("data-state", "succeeded")
    rows = page.locator("#latency-table tbody tr")
    expect(rows).to_have_count(len(lat["candidates"]))
    expect(page.locator("#latency-table tr.winner")).to_have_count(1)
    expect(page.locator("#latency-table tr.winner")).to_contain_text("meets (result)")
    winner = lat["candidates"][lat["winner"]]
    expect(page.locator("#latency-table tr.winner")).to_contain_text(str(winner["number"]))
    expect(page.locator("#latency-panel")).to_contain_text("cpu-tiny")
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "console-latency-1280x900.png"), full_page=True)
    assert _console_errors(ui.errors) == []
    ui.close()


@pytest.mark.timeout(300)
def test_session_read_back_and_artifact_paths(service: Service) -> None:
    """GET /v1/session returns the same CSRF token for a cookie; the artifact route is tenant-checked
    and refuses paths that leave the bundle."""
    with httpx.Client(base_url=service.url, timeout=30) as c:
        assert c.get("/v1/session").status_code == 401
        r = c.post("/v1/session", json={"api_key": service.keys["a"]})
        assert r.status_code == 200
        csrf = r.json()["csrf_token"]
        for _ in range(2):
            s = c.get("/v1/session")
            assert s.status_code == 200 and s.json() == {"tenant": "a", "csrf_token": csrf}
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert c.get("/console/console.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/console/..%2Fapp.py").status_code == 404
        assert c.get("/docs").status_code == 200  # the console's `/` shadows nothing
    jid = service.submit("a", population=16, iterations=320)
    assert service.wait("a", jid)["state"] == "succeeded"
    with service.client("a") as a, service.client("b") as b:
        ok = a.get(f"/v1/searches/{jid}/artifacts/structure.json")
        assert ok.status_code == 200 and ok.json()["blocks"]
        assert "attachment" in ok.headers["content-disposition"]
        manifest = a.get(f"/v1/searches/{jid}/artifacts/manifest.json").json()
        assert "report.html" in manifest["files"]
        for bad in ("..%2F..%2Fzennas.db", "%2E%2E/zennas.db", "mmdet/..%2F..%2Fzennas.db", "%2Fetc%2Fpasswd",
                    "nope.txt"):
            r = a.get(f"/v1/searches/{jid}/artifacts/{bad}")
            assert r.status_code == 404, (bad, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        assert b.get(f"/v1/searches/{jid}/artifacts/structure.json").status_code == 404


@pytest.mark.timeout(300)
def test_report_command_for_a_service_job(service: Service, tmp_path: Path) -> None:
    """``zennas report JOB --url --api-key``: the job's summary and its trial history from the service."""
    pytest.importorskip("matplotlib")
    jid = service.submit("a", population=16, iterations=320)
    assert service.wait("a", jid)["state"] == "succeeded"
    out = tmp_path / "job-report.html"
    cmd = [sys.executable, "-m", "zennas.cli", "report", jid, "--url", service.url, "--out", str(out)]
    r = subprocess.run([*cmd, "--api-key", service.keys["a"]], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "320 trials" in r.stdout
    html = out.read_text()
    assert html.count('<img src="data:image/png;base64,') >= 3 and f"zennas search {jid}" in html
    r = subprocess.run([*cmd, "--api-key", service.keys["b"]], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 2 and "404" in r.stderr, r.stderr  # another tenant's job is not found
