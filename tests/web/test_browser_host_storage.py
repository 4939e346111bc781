"""The host page's Storage pools and networks section in headless Chromium: opened, it loads the
pools, a pool's volumes and the networks from the host, passes axe-core, and fits a phone and a
desktop without spilling sideways."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser import fits_and_passes_axe, host_server
from tests.serve import Server

pytestmark = pytest.mark.browser

# `virtdeck serve` with an admin and the host "storage", synced.
server = host_server("storage", "node-storage.xml")


def open_storage(tab: Page, server: Server) -> None:
    """The host page with its storage section and the pool images' volumes open."""
    tab.goto(f"{server.url}/hosts/1")
    tab.get_by_text("Storage pools and networks").click()
    expect(tab.locator("#host-storage table").first).to_be_visible()
    tab.get_by_text("Volumes of images").click()
    expect(tab.get_by_role("cell", name="golden.qcow2")).to_be_visible()


def test_the_storage_section_passes_axe_and_fits_a_phone_and_a_desktop(server: Server) -> None:
    found, widths = fits_and_passes_axe(server, lambda tab: open_storage(tab, server), "storage")

    assert found == []
    assert widths[390] <= 390 and widths[1440] <= 1440
