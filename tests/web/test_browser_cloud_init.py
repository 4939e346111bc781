"""The wizard's disk from a base image, its cloud-init fields and its profiles in headless
Chromium: the choices save as a profile, the profile fills the next form, which creates."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser import host_server, screenshot
from tests.serve import Server

pytestmark = pytest.mark.browser

# `virtdeck serve` with an admin and the host "images" (golden.qcow2 and others, network lan).
server = host_server("images", "node-images.xml")


def test_choices_saved_as_a_profile_fill_the_next_form_which_creates_the_guest(
    server: Server, page: Page
) -> None:
    page.goto(f"{server.url}/guests/new")
    form = page.locator("#guest-form")
    form.locator('select[name="host_id"]').select_option(label="images")
    cloud_init = form.locator("fieldset.cloud-init")
    expect(cloud_init).to_be_hidden()

    form.get_by_label("From a base image").check()

    expect(cloud_init).to_be_visible()
    expect(form.get_by_label(re.compile("^Base image"))).to_be_visible()
    expect(form.get_by_label("Size (GiB)")).to_be_visible()
    form.get_by_label(re.compile("^Base image")).select_option(label="golden.qcow2 (8 GiB)")
    form.get_by_label("New disk").select_option("overlay")
    form.get_by_label("vCPUs", exact=True).fill("2")
    form.get_by_label("Network").select_option("lan")
    form.get_by_label("Profile name").fill("golden-small")
    form.get_by_role("button", name="Save these choices").click()

    expect(form.get_by_role("status")).to_have_text("Saved profile golden-small.")
    screenshot(page, "guest-new-profile-saved.png")

    page.goto(f"{server.url}/guests/new")
    form = page.locator("#guest-form")
    form.get_by_label("Start from").select_option(
        label="golden-small (2 vCPU, 512 MiB, 10 GiB, golden.qcow2)"
    )
    expect(form.get_by_label(re.compile("^Base image"))).to_have_value("images/golden.qcow2")
    expect(form.get_by_label("New disk")).to_have_value("overlay")
    expect(form.get_by_label("vCPUs", exact=True)).to_have_value("2")
    expect(form.get_by_label("Network")).to_have_value("lan")
    form.get_by_label(re.compile("^Name")).fill("vd-from-golden")
    form.get_by_label("Start after creating").uncheck()
    form.get_by_role("button", name="Create guest").click()

    page.wait_for_url(re.compile(r"/guests/[0-9a-f-]{36}$"), timeout=15_000)
    expect(page.locator("h1")).to_have_text("vd-from-golden")
    page.get_by_role("link", name="XML").click()
    expect(page.locator("pre.xml")).to_contain_text(
        "/var/lib/virtdeck-test/images/vd-from-golden.qcow2"
    )
