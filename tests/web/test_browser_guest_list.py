"""The Guests page in headless Chromium: a click on a column heading sorts the table and a second
click turns it, and its filters narrow the table in place and stay in the address (that it passes
axe-core and fits a phone: test_browser_every_page.py)."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser import admin_tabs, chromium, host_server
from tests.serve import Server

pytestmark = pytest.mark.browser

# `virtdeck serve` with an admin and the host "alpha", synced.
server = host_server("alpha", "node-alpha.xml")


def open_guests(tab: Page, server: Server) -> None:
    """The Guests page, its table shown."""
    tab.goto(f"{server.url}/guests")
    expect(tab.locator("#fleet-guests tr[data-uuid]")).to_have_count(3)


def names(tab: Page):
    """The guests' name cells, top to bottom."""
    return tab.locator("#fleet-guests tr[data-uuid] td:first-child")


def test_a_heading_sorts_the_table_and_a_second_click_turns_it(server: Server) -> None:
    with chromium() as browser, admin_tabs(browser, server, 1) as (tab,):
        open_guests(tab, server)
        expect(names(tab)).to_have_text(["db-1", "web-1", "web-2"])

        tab.get_by_role("link", name="Memory").click()
        expect(tab).to_have_url(re.compile(r"[?&]sort=memory\b"))
        expect(names(tab)).to_have_text(["web-1", "web-2", "db-1"])  # 1.5, 2 and 8 GiB in use
        expect(tab.locator("th[aria-sort='ascending']")).to_contain_text("Memory")

        tab.get_by_role("link", name="Memory").click()
        expect(tab).to_have_url(re.compile(r"[?&]sort=-memory\b"))
        expect(names(tab)).to_have_text(["db-1", "web-2", "web-1"])
        expect(tab.locator("th[aria-sort='descending']")).to_contain_text("Memory")


def test_the_filters_narrow_the_table_in_place_keeping_the_sort(server: Server) -> None:
    with chromium() as browser, admin_tabs(browser, server, 1) as (tab,):
        tab.goto(f"{server.url}/guests?sort=-vcpus")
        expect(names(tab)).to_have_text(["db-1", "web-2", "web-1"])  # ties the same way

        tab.get_by_role("searchbox", name="Search guests").fill("web")
        expect(names(tab)).to_have_text(["web-2", "web-1"])
        expect(tab).to_have_url(re.compile(r"[?&]q=web\b.*sort=-vcpus|sort=-vcpus.*[?&]q=web\b"))

        tab.get_by_role("searchbox", name="Search guests").fill("")
        tab.get_by_role("combobox", name="State").select_option("shutoff")
        expect(names(tab)).to_have_text(["db-1"])
        tab.get_by_role("combobox", name="Host").select_option("alpha")
        expect(names(tab)).to_have_text(["db-1"])
        expect(tab.locator("#fleet-guests .pager")).to_contain_text("1 guest")
