"""The guest page's Edit section in headless Chromium: the settings and the hardware part load
from the host, pass axe-core, and fit a phone and a desktop without spilling sideways."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser import fits_and_passes_axe, host_server
from tests.serve import Server

pytestmark = pytest.mark.browser
WEB_1 = "a1000000-0000-4000-8000-000000000001"  # running on alpha

# `virtdeck serve` with an admin and the host "alpha", synced.
server = host_server("alpha", "node-alpha.xml")


def open_edit(tab: Page, server: Server) -> None:
    """The guest page with its Edit section and hardware part loaded."""
    tab.goto(f"{server.url}/guests/{WEB_1}")
    expect(tab.locator("#guest-hardware tr[data-target='vda']")).to_be_visible()
    expect(tab.locator("#edit-boot-0")).to_have_value("hd")


def test_the_edit_section_passes_axe_and_fits_a_phone_and_a_desktop(server: Server) -> None:
    found, widths = fits_and_passes_axe(server, lambda tab: open_edit(tab, server), "guest-edit")

    assert found == []
    assert widths[390] <= 390 and widths[1440] <= 1440
