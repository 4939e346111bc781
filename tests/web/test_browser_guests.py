"""Creating a guest with the wizard in headless Chromium, then starting it from its page."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser import host_server, screenshot
from tests.serve import Server

pytestmark = pytest.mark.browser


# `virtdeck serve` with an admin and the host "store" (pool images, network lan), synced.
server = host_server("store", "node-storage.xml")


def test_choosing_a_host_loads_its_storage_and_the_disk_kind_shows_its_fields(
    server: Server, page: Page
) -> None:
    page.goto(f"{server.url}/guests/new")
    choices = page.locator("#guest-choices")
    expect(choices).to_contain_text("Choose a host")

    page.locator('select[name="host_id"]').select_option(label="store")

    pool = page.locator('select[name="disk_pool"]')
    volume = page.locator('select[name="disk_volume"]')
    expect(pool.locator("option")).to_have_text([re.compile(r"^images \(\d+\.\d GiB free\)$")])
    expect(page.get_by_label("Boot media").locator("option")).to_have_text(
        ["none", "debian-12.iso"]
    )
    expect(page.get_by_label("Network").locator("option")).to_have_text(["none", "lan"])
    expect(volume).to_be_hidden()
    page.get_by_label("Existing volume").check()
    expect(volume).to_be_visible()
    expect(pool).to_be_hidden()
    expect(volume.locator("option")).to_have_text(["golden.qcow2 (8 GiB)"])
    page.get_by_label("No disk").check()
    expect(volume).to_be_hidden()


def test_the_wizard_refuses_a_bad_name_in_place_then_creates_the_guest_which_then_starts(
    server: Server, page: Page
) -> None:
    page.goto(f"{server.url}/")
    page.get_by_role("link", name="store").first.click()
    page.get_by_role("link", name="New guest").click()
    page.wait_for_url(re.compile(r"/guests/new\?host_id=\d+$"))
    form = page.locator("#guest-form")
    form.get_by_label(re.compile("^Name")).fill("-rf")
    form.get_by_label("vCPUs", exact=True).fill("2")
    form.get_by_label("Memory (MiB)").fill("256")
    form.get_by_label("Size (GiB)").fill("2")
    form.get_by_label("Boot media").select_option(label="debian-12.iso")
    form.get_by_label("Network").select_option("lan")
    form.get_by_label("Start after creating").uncheck()
    form.get_by_role("button", name="Create guest").click()

    error = page.locator('.field-error[data-field="name"]')
    expect(error).to_contain_text("not starting with '.' or '-'")
    expect(page.get_by_label(re.compile("^Name"))).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label(re.compile("^Name"))).to_have_value("-rf")
    expect(page.get_by_label("Boot media")).to_have_value("images/debian-12.iso")
    expect(page.get_by_label("Size (GiB)")).to_have_value("2")
    expect(page.get_by_label("Start after creating")).not_to_be_checked()
    screenshot(page, "guest-new-refused.png")

    page.get_by_label(re.compile("^Name")).fill("vd-web-1")
    page.get_by_role("button", name="Create guest").click()

    page.wait_for_url(re.compile(r"/guests/[0-9a-f-]{36}$"), timeout=15_000)
    expect(page.locator("h1")).to_have_text("vd-web-1")
    status = page.locator("#guest-status")
    expect(status.locator(".badge")).to_have_text("shut off")
    expect(page.locator("dt:text-is('vCPUs') + dd")).to_have_text("2")
    screenshot(page, "guest-new-created.png")
    page.get_by_role("link", name="XML").click()
    xml = page.locator("pre.xml")
    expect(xml).to_contain_text("/var/lib/virtdeck-test/images/vd-web-1.qcow2")
    expect(xml).to_contain_text("/var/lib/virtdeck-test/images/debian-12.iso")
    expect(xml).to_contain_text("network='lan'")

    status.get_by_role("button", name="start", exact=True).click()
    expect(status.locator(".badge")).to_have_text("running")
    guests = server.api("GET", "/guests", params={"q": "vd-web-1"}).json()["items"]
    assert [(g["name"], g["status"], g["vcpus"]) for g in guests] == [("vd-web-1", "running", 2)]

    # Then the whole way out: force it off, and delete it with its new disk.
    page.once("dialog", lambda dialog: dialog.accept())
    status.get_by_role("button", name="force off", exact=True).click()
    expect(status.locator(".badge")).to_have_text("shut off")
    page.get_by_role("link", name="Hardware").click()
    panel = page.locator("#guest-delete")
    expect(panel.locator("tr[data-disk]").first).to_contain_text("vd-web-1.qcow2")
    panel.get_by_label(re.compile("also delete", re.I)).check()
    panel.locator('input[name="confirm"]').fill("vd-web-1")
    panel.get_by_role("button", name="Delete guest").click()
    page.wait_for_url(re.compile(r"/hosts/\d+$"))
    expect(page.locator(".toast").last).to_contain_text("vd-web-1 deleted; removed 1 disk")
    expect(page.locator("#guest-table")).not_to_contain_text("vd-web-1")
    host_id = page.url.rsplit("/", 1)[1]
    volumes = server.api("GET", f"/hosts/{host_id}/pools/images/volumes").json()
    assert "vd-web-1.qcow2" not in [v["name"] for v in volumes]
