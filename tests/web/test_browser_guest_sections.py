"""The guest page's sections in headless Chromium: each loads what it reads from the host, the
navigation and the browser's back button move between them, and a failed action shows on an open
Overview at once (passing axe-core) and goes when an action succeeds. That each section passes
axe-core and fits a phone and a desktop: test_browser_every_page.py."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser import admin_tab, fits_and_passes_axe, host_server, wait_for_stream
from tests.serve import Server

pytestmark = pytest.mark.browser
DESK = "d1000000-0000-4000-8000-000000000001"  # running, with a screen and a serial line
SLEEPY = (
    "d1000000-0000-4000-8000-000000000002"  # suspended to memory: the test driver won't resume it
)
# What each section shows once it has loaded what it reads from the host.
LOADED = {
    "overview": ("#guest-details dl",),
    "console": ("[data-console=serial]",),
    "hardware": ("#guest-hardware tr[data-target='vda']", "#edit-boot-0",
                 "#guest-clone:not([hx-get])", "#guest-delete-form"),
    "snapshots": ("#snapshot-form",),
    "backups": ("#guest-backups table",),
    "activity": ("#guest-activity table",),
    "xml": ("pre.xml",),
}  # fmt: skip

# `virtdeck serve` with an admin and the host "delta", synced.
server = host_server("delta", "node-sections.xml")


def test_each_section_loads_what_it_reads_from_the_host(server: Server) -> None:
    with admin_tab(server) as tab:
        for section, loaded in LOADED.items():
            tab.goto(f"{server.url}/guests/{DESK}?section={section}")
            for part in loaded:
                expect(tab.locator(part), f"{section}: {part}").to_be_visible()


def test_the_links_and_the_back_button_move_between_sections(server: Server) -> None:
    with admin_tab(server) as tab:
        tab.goto(f"{server.url}/guests/{DESK}")
        nav = tab.get_by_role("navigation", name="Guest sections")
        current = nav.locator("[aria-current=page]")
        expect(current).to_have_text("Overview")

        nav.get_by_role("link", name="Snapshots").click()
        tab.wait_for_url(re.compile(r"\?section=snapshots$"))
        expect(tab.locator("#guest-snapshots")).to_be_visible()
        nav.get_by_role("link", name="Activity").click()
        tab.wait_for_url(re.compile(r"\?section=activity$"))
        expect(current).to_have_text("Activity")
        expect(tab.locator("#guest-snapshots")).to_have_count(0)
        tab.go_back()
        expect(current).to_have_text("Snapshots")
        expect(tab.locator("#guest-snapshots")).to_be_visible()
        tab.go_back()
        tab.wait_for_url(re.compile(f"/guests/{DESK}$"))
        expect(current).to_have_text("Overview")


def test_a_failure_shows_on_an_open_overview_passes_axe_and_goes_when_an_action_succeeds(
    server: Server,
) -> None:
    def open_overview(tab: Page) -> None:
        tab.goto(f"{server.url}/guests/{SLEEPY}")
        expect(tab.locator("#guest-failure strong")).to_have_text("sleepy-1 did not resume.")
        tab.locator("#guest-failure summary").click()  # the whole of libvirt's words
        expect(tab.locator("#guest-failure .more-rest")).to_contain_text("virDomainPMWakeup")

    with admin_tab(server) as tab:
        tab.goto(f"{server.url}/guests/{SLEEPY}")
        wait_for_stream(tab)
        failure = tab.locator("#guest-failure .failure")
        expect(failure).to_have_count(0)
        refused = server.api("POST", f"/guests/{SLEEPY}/actions/resume")
        assert refused.status_code == 409, refused.text
        expect(failure.locator("strong")).to_have_text("sleepy-1 did not resume.", timeout=3_000)
    found, widths = fits_and_passes_axe(server, open_overview, "guest-overview-error")
    with admin_tab(server) as tab:
        tab.goto(f"{server.url}/guests/{SLEEPY}")
        wait_for_stream(tab)
        failure = tab.locator("#guest-failure .failure")
        expect(failure).to_have_count(1)

        tab.once("dialog", lambda dialog: dialog.accept())
        tab.locator('#guest-status button[data-action="force_off"]').click()

        expect(tab.locator("#guest-status .badge")).to_have_text("shut off")
        expect(failure).to_have_count(0, timeout=3_000)
    assert found == []
    assert widths[390] <= 390 and widths[1440] <= 1440
