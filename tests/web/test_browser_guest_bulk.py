"""The Guests page's bulk bar in headless Chromium: tick guests (or all on the page), press an
action, and a table says what became of each; the page with it passes axe-core and fits a phone
and a desktop."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser import admin_tabs, chromium, fits_and_passes_axe, host_server
from tests.serve import Server

pytestmark = pytest.mark.browser

# `virtdeck serve` with an admin and the host "alpha" (db-1 shut off, web-1 and web-2 running).
server = host_server("alpha", "node-alpha.xml")


def start_picked(tab: Page, server: Server, *names: str) -> None:
    """The Guests page, these guests ticked (all of them with none named), then "start"."""
    tab.goto(f"{server.url}/guests")
    expect(tab.locator("#fleet-guests tr[data-uuid]")).to_have_count(3)
    if names:
        for name in names:
            tab.get_by_role("checkbox", name=f"Select {name}").check()
    else:
        tab.get_by_role("checkbox", name="All on this page").check()
    tab.locator("#bulk-form").get_by_role("button", name="start").click()
    expect(tab.locator("#bulk-results tr[data-guest]")).not_to_have_count(0)


def test_ticked_guests_start_together_and_each_gets_its_result(server: Server) -> None:
    with chromium() as browser, admin_tabs(browser, server, 1) as (tab,):
        start_picked(tab, server)

        results = tab.locator("#bulk-results tr[data-guest]")
        expect(results).to_have_text([
            "db-1 ok now running",
            "web-1 refused cannot start web-1: it is running",
            "web-2 refused cannot start web-2: it is running",
        ], use_inner_text=True)  # fmt: skip
        expect(tab.locator("#bulk-results h2")).to_have_text("Start: 1 ok, 2 refused")
        expect(tab.locator("#toasts")).to_contain_text("Start: 1 ok, 2 refused")
        db_1 = tab.locator("#fleet-guests tr[data-uuid]", has_text="db-1")
        expect(db_1.locator(".badge-running")).to_be_visible()  # its row follows, live
        expect(tab.get_by_role("checkbox", name="Select db-1")).to_be_checked()  # still ticked


def test_the_guests_page_with_its_bulk_bar_and_results_passes_axe_and_fits(
    server: Server,
) -> None:
    found, widths = fits_and_passes_axe(
        server, lambda tab: start_picked(tab, server, "web-2"), "guest-bulk"
    )

    assert found == []
    assert widths[390] <= 390 and widths[1440] <= 1440
