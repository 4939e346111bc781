"""Headless Chromium for the browser tests: Debian's build, driven by Playwright."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS, node_uri
from tests.serve import ADMIN_PASSWORD, Server, running_server

# Playwright's own browser download does not work here; Debian's chromium does.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


# axe-core, vendored with its licence; it is injected as an inline script, so the tab checked
# must come from a context made with bypass_csp=True.
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
AXE_RUN = """async () => (await axe.run(document)).violations.map(
  (v) => `${v.id} (${v.impact}): ${v.help}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`
)"""


def accessibility_violations(tab: Page) -> list[str]:
    """What axe-core finds wrong with the page as it is now."""
    tab.add_script_tag(path=AXE)
    return tab.evaluate(AXE_RUN)


def log_in(tab: Page, url: str, name: str, password: str) -> None:
    """Log in through the login form and land on the overview."""
    tab.goto(f"{url}/login")
    tab.get_by_label("User name").fill(name)
    tab.get_by_label("Password").fill(password)
    tab.get_by_role("button", name="Log in").click()
    tab.wait_for_url(f"{url}/")
    expect(tab.locator(".whoami")).to_contain_text(name)


def logged_in_tab(
    browser: Browser, server: Server, name: str, password: str, **context: object
) -> Page:
    """A tab of a new browser context (its own login) of this user, 1280 x 900."""
    viewport = {"width": 1280, "height": 900}
    tab = browser.new_context(viewport=viewport, **context).new_page()  # type: ignore[arg-type]
    tab.set_default_timeout(10_000)
    log_in(tab, server.url, name, password)
    return tab


def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot under tests/artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


@contextmanager
def server_with_host(workdir: Path, name: str, uri: str) -> Iterator[Server]:
    """`virtdeck serve` with the CLI-made admin and one host, synced. A node file's state is
    private to each libvirt connection, so the worker runs inside the server, sharing its
    connection with the actions."""
    env = {"VIRTDECK_DEFAULT_HOST_URI": "", "VIRTDECK_SYNC_INTERVAL": "1"}
    with running_server(workdir, env, worker="inside") as running:
        running.add_host(name, uri)
        yield running


def host_server(name: str, node: str, *, scope: str = "module"):
    """A `server` fixture: `virtdeck serve` with the admin and the host `name` of the node file
    `node` (tests/data), synced. Scope "function" gives each test a server of its own."""

    @pytest.fixture(scope=scope, name="server")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        with server_with_host(tmp_path_factory.mktemp("serve"), name, node_uri(node)) as running:
            yield running

    return server


# Counts the page's event stream (re)connections and the live messages it received.
COUNT_STREAM = """
window.streamOpens = 0;
window.liveMessages = 0;
document.addEventListener("htmx:sseOpen", () => window.streamOpens++);
document.addEventListener("htmx:sseMessage", () => window.liveMessages++);
"""


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def admin_tabs(
    browser: Browser, server: Server, count: int, *, height: int = 900, width: int = 1280
) -> Iterator[list[Page]]:
    """Tabs in separate browser contexts (separate logins) of the admin; JavaScript errors on
    their pages fail the test."""
    errors: list[str] = []
    viewport = {"width": width, "height": height}
    contexts = [browser.new_context(viewport=viewport) for _ in range(count)]
    tabs = []
    for context in contexts:
        tab = context.new_page()
        tab.set_default_timeout(5_000)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.add_init_script(COUNT_STREAM)
        log_in(tab, server.url, "admin", ADMIN_PASSWORD)
        tabs.append(tab)
    yield tabs
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


def wait_for_stream(tab: Page, opens: int = 1) -> None:
    """Until the tab's event stream has opened this many times."""
    # A function, not an expression: Playwright polls expressions with eval(), which the CSP
    # forbids.
    tab.wait_for_function(f"() => window.streamOpens >= {opens}", timeout=10_000)


def shows(tab: Page, selector: str, state: str, *, timeout: float) -> None:
    """Wait until the element's data-state is state; fails after timeout seconds."""
    expect(tab.locator(selector)).to_have_attribute("data-state", state, timeout=timeout * 1000)


@contextmanager
def admin_tab(server: Server, *, height: int = 900) -> Iterator[Page]:
    """A tab logged in as the admin; JavaScript errors on its pages fail the test."""
    with chromium() as browser, admin_tabs(browser, server, 1, height=height) as (tab,):
        yield tab


def fits_and_passes_axe(
    server: Server, open_page: Callable[[Page], None], name: str
) -> tuple[list[str], dict[int, int]]:
    """What axe-core finds wrong with the page open_page opens, in the light and the dark theme
    (the system's setting picks one), and its scroll width at a phone's 390 px and a desktop's
    1440 px (screenshots <name>-<width>.png, and <name>-dark.png)."""
    widths = {}
    with chromium() as browser:
        checked = logged_in_tab(browser, server, "admin", ADMIN_PASSWORD, bypass_csp=True)
        open_page(checked)
        found = accessibility_violations(checked)
        checked.emulate_media(color_scheme="dark")
        found += [f"dark: {violation}" for violation in accessibility_violations(checked)]
        screenshot(checked, f"{name}-dark.png")
        for width in (390, 1440):
            with admin_tabs(browser, server, 1, width=width) as (tab,):
                open_page(tab)
                screenshot(tab, f"{name}-{width}.png")
                widths[width] = tab.evaluate("document.documentElement.scrollWidth")
    return found, widths
