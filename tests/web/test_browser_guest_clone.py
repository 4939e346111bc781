"""The guest page's Clone section in headless Chromium: it loads the host's pools, passes
axe-core, and submitting it opens the job's page with its progress bar."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser import accessibility_violations, chromium, host_server, logged_in_tab
from tests.serve import ADMIN_PASSWORD, Server

pytestmark = pytest.mark.browser

# `virtdeck serve` with an admin and the host "storage" (pool "images"), synced.
server = host_server("storage", "node-storage.xml")


def test_the_clone_section_passes_axe_and_submitting_it_opens_the_jobs_page(
    server: Server,
) -> None:
    host_id = server.api("GET", "/hosts").json()[0]["id"]
    disk = {"pool": "images", "volume": "golden.qcow2", "format": "qcow2"}
    body = {"host_id": host_id, "name": "golden", "vcpus": 1, "memory_mib": 128, "disk": disk}
    created = server.api("POST", "/guests", json=body)
    assert created.status_code == 201, created.text
    with chromium() as browser:
        tab = logged_in_tab(browser, server, "admin", ADMIN_PASSWORD, bypass_csp=True)
        tab.goto(f"{server.url}/guests/{created.json()['uuid']}?section=hardware")
        expect(tab.locator("#clone-pool")).to_have_value("images")
        expect(tab.locator("#clone-name")).to_have_value("golden-clone")
        found = accessibility_violations(tab)
        tab.get_by_label("Name of the clone").fill("golden-2")
        tab.locator("#guest-clone").get_by_role("button", name="Clone").click()
        tab.wait_for_url(re.compile(r"/jobs/\d+$"))
        expect(tab.locator("progress")).to_be_attached()
        heading = tab.locator("h1").inner_text()

    assert found == []
    assert heading.endswith(": guest.clone")
