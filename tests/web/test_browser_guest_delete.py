"""Deleting a guest from its page in headless Chromium: the typed name, then the host page."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser import host_server
from tests.conftest import ARTIFACTS
from tests.serve import Server

pytestmark = pytest.mark.browser

DB_1 = "a1000000-0000-4000-8000-000000000003"  # shut off, on alpha


# A server of its own for each test: the test deletes a guest.
server = host_server("alpha", "node-alpha.xml", scope="function")


def test_the_button_waits_for_the_name_then_the_host_page_shows_the_toast(
    server: Server, page: Page
) -> None:
    page.goto(f"{server.url}/guests/{DB_1}?section=hardware")
    panel = page.locator("#guest-delete")
    expect(panel.locator("tr[data-disk]")).to_contain_text("/var/lib/libvirt/images/db-1.qcow2")
    button = panel.get_by_role("button", name="Delete guest")
    confirm = panel.locator('input[name="confirm"]')

    expect(button).to_be_disabled()
    confirm.fill("db-2")
    expect(button).to_be_disabled()
    confirm.fill("db-1")
    expect(button).to_be_enabled()
    ARTIFACTS.mkdir(exist_ok=True)
    panel.screenshot(path=ARTIFACTS / "guest-delete.png")
    button.click()

    page.wait_for_url(re.compile(r"/hosts/\d+$"))
    expect(page.locator(".toast")).to_contain_text("db-1 deleted")
    expect(page.locator("h1")).to_have_text("alpha")
    expect(page.locator("#guest-table")).not_to_contain_text("db-1")
    assert server.api("GET", f"/guests/{DB_1}").json()["status"] == "gone"
