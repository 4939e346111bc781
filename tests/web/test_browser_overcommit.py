"""The overcommit page in headless Chromium: sorting the contributions, editing the policy."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser import screenshot
from tests.serve import Server

pytestmark = pytest.mark.browser


def guest_rows(page: Page):
    """The guests of the contributions table, top to bottom."""
    return page.locator("#guest-loads tbody tr td:first-child a")


def test_the_overview_card_leads_to_the_overcommit_page_whose_columns_sort(
    server: Server, page: Page
) -> None:
    card = page.locator('#host-cards .card[data-host="alpha"]')
    expect(card.locator('[data-gauge="CPU"] .gauge-value')).to_have_text("0.50:1")
    expect(card.locator('[data-gauge="Memory"] .gauge-value')).to_have_text("0.25:1")
    expect(page.locator('[data-fleet="cpu-ratio"]')).to_have_text("0.50:1")
    screenshot(page, "overview-ratios.png")

    card.get_by_role("link", name="Overcommit on alpha").click()
    page.wait_for_url(f"{server.url}/hosts/*/overcommit")
    expect(page.locator("h1")).to_have_text("Overcommit on alpha")
    expect(page.locator("#overcommit-cpu .ratio").first).to_have_text("0.50:1")
    expect(guest_rows(page)).to_have_text(["db-1", "web-1", "web-2"])

    page.locator("#guest-loads").get_by_role("link", name="Memory (max)").click()
    expect(guest_rows(page)).to_have_text(["db-1", "web-2", "web-1"])
    expect(page).to_have_url(f"{page.url.split('?')[0]}?sort=memory")
    page.locator("#guest-loads").get_by_role("link", name="Guest").click()
    expect(guest_rows(page)).to_have_text(["db-1", "web-1", "web-2"])
    page.locator("#guest-loads").get_by_role("link", name="vCPUs").click()
    expect(page.locator('#guest-loads th[aria-sort="descending"]')).to_contain_text("vCPUs")
    expect(guest_rows(page)).to_have_text(["db-1", "web-1", "web-2"])
    screenshot(page, "overcommit.png")


def test_a_memory_preset_and_a_host_override_change_the_states_in_place(
    server: Server, page: Page
) -> None:
    host_id = server.api("GET", "/hosts").json()[0]["id"]
    page.goto(f"{server.url}/hosts/{host_id}/overcommit")
    memory_badge = page.locator("#overcommit-memory h2 .badge")
    expect(memory_badge).to_have_text("ok")

    override = page.locator("#policy-host")
    override.get_by_label("Memory ratio").fill("0.26")
    override.get_by_role("button", name="Save override").click()
    expect(memory_badge).to_have_text("near")
    expect(page.locator(".live-note")).to_contain_text("this host's override")

    override = page.locator("#policy-host")
    override.get_by_label("CPU ratio").fill("150")
    override.get_by_role("button", name="Save override").click()
    error = page.locator('#policy-host .field-error[data-field="cpu"]')
    expect(error).to_have_text("a ratio from 0.1 to 100")
    screenshot(page, "overcommit-policy-refused.png")

    page.locator("#policy-host").get_by_role("button", name="Use global policy").click()
    expect(page.locator(".live-note")).to_contain_text("(global)")
    page.locator("#policy-global").get_by_role("button", name="1.50:1").click()
    expect(page.locator(".live-note")).to_contain_text("1.50:1 memory")
    expect(memory_badge).to_have_text("ok")
