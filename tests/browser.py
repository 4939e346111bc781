"""Headless Chromium for the browser tests: Debian's build, driven by Playwright."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import ARTIFACTS
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


def log_in(tab: Page, url: str, name: str, password: str) -> None:
    """Log in through the login form and land on the overview."""
    tab.goto(f"{url}/login")
    tab.get_by_label("User name").fill(name)
    tab.get_by_label("Password").fill(password)
    tab.get_by_role("button", name="Log in").click()
    tab.wait_for_url(f"{url}/")
    expect(tab.locator(".whoami")).to_contain_text(name)


def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot under tests/artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


@contextmanager
def server_with_host(workdir: Path, name: str, uri: str) -> Iterator[Server]:
    """`virtdeck serve` with the CLI-made admin and one host, synced."""
    env = {"VIRTDECK_DEFAULT_HOST_URI": "", "VIRTDECK_SYNC_INTERVAL": "1"}
    with running_server(workdir, env) as running:
        created = running.api("POST", "/hosts", json={"name": name, "uri": uri})
        assert created.status_code == 201, created.text
        synced = running.api("POST", f"/hosts/{created.json()['id']}/refresh", params={"wait": 15})
        assert synced.status_code == 200, synced.text
        yield running


@contextmanager
def admin_tab(server: Server, *, height: int = 900) -> Iterator[Page]:
    """A tab logged in as the admin; JavaScript errors on its pages fail the test."""
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": height})
        tab.set_default_timeout(5_000)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        log_in(tab, server.url, "admin", ADMIN_PASSWORD)
        yield tab
        browser.close()
    assert not errors, f"JavaScript errors: {errors}"
