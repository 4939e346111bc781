"""The Content-Security-Policy holds in headless Chromium: every main page (and /docs with
Swagger UI) loads without a single CSP violation, and what used to be inline script still works:
htmx actions, the live view (SSE), the delete confirmation, a refused role change. And /docs
fits a phone and a desktop."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import admin_tabs, chromium, shows, wait_for_stream
from tests.serve import Server, running_server

pytestmark = pytest.mark.browser
WEB_1 = "a1000000-0000-4000-8000-000000000001"
# Collects the page's CSP violations where a test can read them (set before any script runs).
WATCH_CSP = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  const { violatedDirective, blockedURI, sourceFile, lineNumber } = event;
  window.cspViolations.push(`${violatedDirective} ${blockedURI} ${sourceFile}:${lineNumber}`);
});
"""

INJECT = """() => {
  const script = document.createElement("script");
  script.textContent = "window.injected = true";
  document.body.append(script);
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def watched(tab: Page) -> list[str]:
    """Console messages about the CSP, from now on; the page's own list covers the rest."""
    messages: list[str] = []
    tab.on(
        "console",
        lambda m: messages.append(m.text) if "Content Security Policy" in m.text else None,
    )
    tab.add_init_script(WATCH_CSP)
    tab.on("dialog", lambda dialog: dialog.accept())
    return messages


def violations(tab: Page, console: list[str]) -> list[str]:
    return [*tab.evaluate("window.cspViolations || []"), *console]


def main_pages(server: Server) -> dict[str, tuple[str, str]]:
    """Every main page: its path, and an element that shows it has loaded."""
    host_id = server.api("GET", "/hosts").json()[0]["id"]
    return {
        "overview": ("/", "#host-cards, .cards"),
        "host": (f"/hosts/{host_id}", f"#guest-row-{WEB_1}"),
        "guest": (f"/guests/{WEB_1}", "#guest-status"),
        "backups": ("/backups", "#backup-table"),
        "overcommit": (f"/hosts/{host_id}/overcommit", "main h1"),
        "users": ("/users", "main h1"),
        "tokens": ("/tokens", "main h1"),
        "audit": ("/audit", "main h1"),
        "docs": ("/docs", ".swagger-ui .info .title"),
    }


def test_every_main_page_loads_without_a_csp_violation(server: Server, browser: Browser) -> None:
    pages = main_pages(server)
    found, policies = {}, {}
    with admin_tabs(browser, server, 1) as (tab,):
        console = watched(tab)
        for name, (path, ready) in pages.items():
            policies[name] = tab.goto(f"{server.url}{path}").headers["content-security-policy"]
            expect(tab.locator(ready).first).to_be_visible()
            if name != "docs":
                wait_for_stream(tab)
            tab.wait_for_timeout(300)  # late scripts, swaps and styles
            found[name] = violations(tab, console)
            console.clear()
        expect(tab.locator("#operations-tag-hosts")).to_be_visible()
        # The watch sees what the policy blocks: an inline script does not run.
        tab.evaluate(INJECT)
        injected = (tab.evaluate("window.injected"), violations(tab, console))
    assert found == {name: [] for name in pages}
    assert {policy.split("; ")[1] for policy in policies.values()} == {"script-src 'self'"}
    assert injected[0] is None
    assert [v for v in injected[1] if v.startswith("script-src-elem")] != []


def test_the_login_and_setup_pages_load_without_a_csp_violation(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    found = {}
    with running_server(tmp_path, {"VIRTDECK_DEFAULT_HOST_URI": ""}, admin=None) as fresh:
        for name, url in (("login", f"{server.url}/login"), ("setup", f"{fresh.url}/setup")):
            context = browser.new_context()
            tab = context.new_page()
            console = watched(tab)
            policy = tab.goto(url).headers["content-security-policy"]
            expect(tab.get_by_label("Password").first).to_be_visible()
            tab.wait_for_timeout(300)
            found[name] = (policy.split("; ")[1], violations(tab, console))
            context.close()
    assert found == {"login": ("script-src 'self'", []), "setup": ("script-src 'self'", [])}


def test_htmx_actions_the_live_view_and_the_moved_handlers_still_work(
    server: Server, browser: Browser
) -> None:
    with admin_tabs(browser, server, 1) as (tab,):
        console = watched(tab)
        hardware = f"{server.url}/guests/{WEB_1}?section=hardware"  # with the delete form
        policy = tab.goto(hardware).headers["content-security-policy"]
        wait_for_stream(tab)
        shows(tab, "#guest-status", "running", timeout=5)

        # An htmx action button swaps in the new status.
        tab.locator('#guest-status button[data-action="suspend"]').click()
        shows(tab, "#guest-status", "paused", timeout=5)
        # A change made elsewhere arrives through the event stream.
        resumed = server.api("POST", f"/guests/{WEB_1}/actions/resume")
        assert resumed.status_code == 200, resumed.text
        shows(tab, "#guest-status", "running", timeout=5)

        # The delete form's submit button waits for the guest's name (was hx-on:input).
        form = tab.locator("#guest-delete-form")
        submit = form.get_by_role("button", name="Delete guest")
        expect(submit).to_be_disabled()
        form.locator('input[name="confirm"]').fill("web-1")
        expect(submit).to_be_enabled()
        form.locator('input[name="confirm"]').fill("web-")
        expect(submit).to_be_disabled()

        # A refused role change puts the select back (was hx-on::after-request): the only admin
        # cannot become a viewer.
        tab.goto(f"{server.url}/users")
        role = tab.get_by_label("Role of admin")
        role.select_option("viewer")
        expect(tab.locator("#toasts")).to_contain_text("admin")
        expect(role).to_have_value("admin")
        found = violations(tab, console)
    assert "script-src 'self'" in policy
    assert found == []


def test_the_api_docs_fit_a_phone_and_a_desktop_without_scrolling_sideways(
    server: Server, browser: Browser
) -> None:
    # The app's own pages: test_browser_every_page.py.
    path, ready = main_pages(server)["docs"]
    widths = {}
    for width in (390, 1440):
        with admin_tabs(browser, server, 1, width=width) as (tab,):
            tab.goto(f"{server.url}{path}")
            expect(tab.locator(ready).first).to_be_visible()
            widths[width] = tab.evaluate("document.documentElement.scrollWidth")

    assert widths[390] <= 390 and widths[1440] <= 1440
