"""Every page in headless Chromium, at a phone's 390 x 844 and a desktop's 1440 x 900, in the
light and the dark theme: nothing spills sideways, nothing reaches the console as an error, and
axe-core finds no violation (of any impact, so the pages' own tests need not repeat it). The
pages are the app's own HTML routes, each section of a page with sections among them, so a new
page is swept without a change here; screenshots go to tests/artifacts/every-<page>-<width>.png
(and every-<page>-dark.png, at 390 px)."""

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.responses import HTMLResponse
from fastapi.routing import iter_route_contexts
from playwright.sync_api import Browser, Page

from app import web
from app.db import make_engine, make_session_factory, transaction
from app.models import Job
from app.models.base import utcnow
from app.services.jobs import JobKind
from tests.backups import add_backup
from tests.browser import AXE, chromium, log_in, screenshot
from tests.conftest import node_uri
from tests.serve import ADMIN_PASSWORD, Server, create_admin, running_server

pytestmark = pytest.mark.browser
DESK = "e1000000-0000-4000-8000-000000000001"  # running, with a screen and a serial line
SIZES = ((390, 844), (1440, 900))
PARAM = re.compile(r"\{(\w+)\}")
# Served at the app's origin by the tab itself, so the CSP ('self') lets axe-core in while it
# still blocks (and reports) anything else the page tries.
AXE_URL = "/__sweep/axe.min.js"
AXE_RUN = """async (options) => (
  await axe.run(document, {resultTypes: ["violations"], ...options})
).violations.map(
  (v) => `${v.id} (${v.impact}): ${v.help}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`
)"""
COLOUR_RULES = ["color-contrast", "link-in-text-block"]
# Counts htmx's requests in flight, so a page is checked once what it loads after itself is in.
WATCH_HTMX = """
window.htmxBusy = 0;
window.htmxQuietSince = 0;
document.addEventListener("htmx:beforeRequest", () => window.htmxBusy++);
document.addEventListener("htmx:afterRequest", () => {
  window.htmxBusy--;
  window.htmxQuietSince = performance.now();
});
"""
SETTLED = """() => document.readyState === "complete" && window.htmxBusy === 0
  && performance.now() - window.htmxQuietSince > 200"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`virtdeck serve` with no user yet (so its first-admin form shows) and its worker inside
    (a node file's state is private to each libvirt connection)."""
    env = {"VIRTDECK_DEFAULT_HOST_URI": "", "VIRTDECK_SYNC_INTERVAL": "1"}
    with running_server(tmp_path, env, admin=None, worker="inside") as running:
        yield running


def fill_up(server: Server) -> tuple[Server, dict[str, str]]:
    """The server with an admin (and their token) and the host "sweep", synced; and a value for
    each path parameter of its pages: real objects, made cheaply (a snapshot and a schedule
    through the API, a finished backup and its job as the service leaves them)."""
    server = replace(server, token=create_admin("admin", env=server.env))
    host = {"id": server.add_host("sweep", node_uri("node-sweep.xml")), "name": "sweep"}
    snapshot = server.api("POST", f"/guests/{DESK}/snapshots", json={"name": "before-upgrade"})
    assert snapshot.status_code == 201, snapshot.text
    schedule = server.api(
        "POST", "/backup-schedules",
        json={"name": "nightly", "scope": "all", "frequency": "daily", "time": "02:30",
              "keep_last": 7},
    )  # fmt: skip
    assert schedule.status_code == 201, schedule.text
    engine = make_engine(server.env["VIRTDECK_DATABASE_URL"])
    sessions = make_session_factory(engine)
    finished = utcnow() - timedelta(hours=1)
    with transaction(sessions) as session:
        job = Job(
            kind=JobKind.BACKUP, status="succeeded", host_id=host["id"], guest_uuid=DESK,
            created_by="admin", started_at=finished, finished_at=finished, progress=1.0,
        )  # fmt: skip
        session.add(job)
        session.flush()
        job_id = job.id
    backup_id = add_backup(sessions, host, guest_uuid=DESK, guest_name="desk-1", job_id=job_id)
    engine.dispose()
    return server, {
        "host_id": str(host["id"]), "uuid": DESK, "pool": "images", "job_id": str(job_id),
        "backup_id": str(backup_id), "schedule_id": str(schedule.json()["id"]),
    }  # fmt: skip


def html_routes() -> list[str]:
    """The path of each GET route of the web routers that answers in HTML (so not the event
    stream)."""
    return [
        context.path_format
        for context in iter_route_contexts(web.router.routes)
        if "GET" in (context.methods or ())
        and getattr(context.route, "response_class", None) is HTMLResponse
    ]


def filled(path: str, objects: dict[str, str]) -> str:
    """The path with each parameter filled from objects; fails naming one it has no value for."""
    missing = [name for name in PARAM.findall(path) if name not in objects]
    if missing:
        pytest.fail(
            f"{path}: the sweep has nothing for its parameter {missing[0]!r}; "
            "make such an object in fill_up() of this file"
        )
    return PARAM.sub(lambda match: objects[match.group(1)], path)


def find_pages(tab: Page, server: Server, paths: list[str]) -> list[str]:
    """Of these paths, the pages: what a plain GET answers with a whole HTML document; with
    each section of a page that links to its sections (?section=). A path answering neither a
    page, a fragment nor a redirect fails the test."""
    pages = []
    for path in paths:
        answer = tab.request.get(f"{server.url}{path}", max_redirects=0)
        body = answer.text()
        assert answer.status == 200 or 300 <= answer.status < 400, (
            f"GET {path} answered {answer.status}: its parameters name no object it can show"
        )
        if answer.status == 200 and body.lstrip().lower().startswith("<!doctype html"):
            sections = re.findall(rf'href="({re.escape(path)}\?section=\w+)"', body)
            pages += [path, *dict.fromkeys(sections)]
    return pages


def page_name(path: str) -> str:
    """A file name for the page's screenshots."""
    return re.sub(r"[^\w]+", "-", path).strip("-") or "overview"


def problems(tab: Page, url: str, console: list[str], width: int, name: str) -> list[str]:
    """What is wrong with the page at url as the tab shows it, in the light and the dark
    theme; its screenshots saved."""
    console.clear()
    tab.emulate_media(color_scheme="light")
    tab.goto(url)
    tab.wait_for_function(SETTLED)
    found = []
    scroll_width, inner_width = tab.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    if scroll_width > inner_width:
        found.append(f"{scroll_width} px wide")
    tab.add_script_tag(url=AXE_URL)
    found += tab.evaluate(AXE_RUN, {})
    screenshot(tab, f"every-{name}-{width}.png")
    # The theme changes colours only, so the dark one is checked for what colours decide.
    tab.emulate_media(color_scheme="dark")
    dark = tab.evaluate(AXE_RUN, {"runOnly": COLOUR_RULES})
    found += [f"dark: {violation}" for violation in dark]
    if width == SIZES[0][0]:
        screenshot(tab, f"every-{name}-dark.png")
    return found + [f"console: {message}" for message in console]


def sweep_tab(browser: Browser, width: int, height: int) -> tuple[Page, list[str]]:
    """A tab of a new context at this size that serves axe-core at AXE_URL; and the list its
    console errors and uncaught exceptions go to."""
    tab = browser.new_context(viewport={"width": width, "height": height}).new_page()
    tab.set_default_timeout(10_000)
    console: list[str] = []
    tab.on(
        "console", lambda message: console.append(message.text) if message.type == "error" else None
    )
    tab.on("pageerror", lambda exc: console.append(str(exc)))
    tab.add_init_script(WATCH_HTMX)
    tab.route(f"**{AXE_URL}", lambda route: route.fulfill(path=AXE))
    return tab, console


def sweep(browser: Browser, server: Server, paths: list[str], *, admin: bool) -> dict:
    """Each page among these paths at each size, as the admin or nobody: {"<page> at
    <width>": [what is wrong]} for those with something wrong."""
    found, pages = {}, []
    for width, height in SIZES:
        tab, console = sweep_tab(browser, width, height)
        if admin:
            log_in(tab, server.url, "admin", ADMIN_PASSWORD)
        pages = pages or find_pages(tab, server, paths)
        for path in pages:
            wrong = problems(tab, f"{server.url}{path}", console, width, page_name(path))
            if wrong:
                found[f"{path} at {width}"] = wrong
        tab.context.close()
    return found


def test_every_page_fits_a_phone_and_a_desktop_logs_no_error_and_passes_axe(
    server: Server,
) -> None:
    routes = html_routes()
    with chromium() as browser:
        # Before the first user the first-admin form is the one page; the others send there.
        found = sweep(browser, server, [r for r in routes if not PARAM.search(r)], admin=False)
        server, objects = fill_up(server)
        found |= sweep(browser, server, [filled(r, objects) for r in routes], admin=True)

    assert found == {}
