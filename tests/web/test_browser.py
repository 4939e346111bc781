"""The real `virtdeck serve` driven through headless Chromium: forms, live refresh, search.

The server is a subprocess on a fresh SQLite file, so these tests also prove that `serve`
applies the migrations itself. Tests run in file order: the first adds host "alpha" through
the form; later ones reuse it (or register it through the API when run on their own).
"""

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS, node_uri
from tests.serve import Server, running_server

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ALPHA_URI = node_uri("node-alpha.xml")
STARTUP_TIMEOUT = 20.0
# Long enough for a host's first sync (interval 1 s) plus a poll of the page (1 s while syncing).
SYNC_TIMEOUT = 10_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`virtdeck serve` on a free port and an empty SQLite file, with no default host."""
    env = {"VIRTDECK_DEFAULT_HOST_URI": "", "VIRTDECK_SYNC_INTERVAL": "1"}
    with running_server(tmp_path_factory.mktemp("serve"), env) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium (Playwright's own browser download is not available)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser tab; htmx errors would show as page errors and fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(5_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def alpha(server: Server) -> int:
    """The id of host alpha, synced; registered through the API unless a test already did."""
    hosts = {h["name"]: h for h in server.api("GET", "/hosts").json()}
    if "alpha" in hosts:
        host_id = hosts["alpha"]["id"]
    else:
        created = server.api("POST", "/hosts", json={"name": "alpha", "uri": ALPHA_URI})
        assert created.status_code == 201, created.text
        host_id = created.json()["id"]
    refreshed = server.api("POST", f"/hosts/{host_id}/refresh", params={"wait": 15})
    assert refreshed.status_code == 200, refreshed.text
    return host_id


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


def guest_names(page: Page):
    return page.locator("#guest-table tbody tr[data-uuid] td:first-child")


def guest_row(page: Page, name: str):
    return page.locator("#guest-table tbody tr[data-uuid]").filter(
        has=page.get_by_role("link", name=name, exact=True)
    )


def test_a_host_added_through_the_form_opens_its_page_which_fills_with_its_guests_by_itself(
    server: Server, page: Page
) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#host-cards")).to_contain_text("No hosts yet")

    form = page.locator("#host-form")
    form.locator('input[name="name"]').fill("alpha")
    form.locator('input[name="uri"]').fill(ALPHA_URI)
    form.get_by_role("button", name="Add host").click()

    page.wait_for_url(re.compile(r"/hosts/\d+$"))
    expect(page.locator("h1")).to_have_text("alpha")
    # No reload from here on: the guest table and facts panel re-poll until the first sync.
    expect(guest_names(page)).to_have_text(["db-1", "web-1", "web-2"], timeout=SYNC_TIMEOUT)
    expect(guest_row(page, "web-1").locator(".badge")).to_have_text("running")
    expect(guest_row(page, "web-2").locator(".badge")).to_have_text("running")
    expect(guest_row(page, "db-1").locator(".badge-shutoff")).to_have_text("shutoff")
    expect(page.locator("#host-facts .badge")).to_have_text("connected", timeout=SYNC_TIMEOUT)
    expect(page.locator("#host-facts")).to_contain_text("2 running / 3")
    screenshot(page, "host.png")

    page.locator(".topbar").get_by_role("link", name="Hosts").click()
    page.wait_for_url(server.url + "/")
    card = page.locator('#host-cards .card[data-host="alpha"]')
    expect(card.locator(".guest-count")).to_have_text("2 running / 3")
    expect(card.locator(".badge")).to_have_text("connected")
    screenshot(page, "overview.png")


def test_a_refused_uri_shows_the_reason_next_to_the_uri_field_and_adds_no_host(
    server: Server, alpha: int, page: Page
) -> None:
    page.goto(server.url + "/")
    cards = page.locator("#host-cards .card")
    expect(cards).to_have_count(1)

    name = f"bad-{uuid.uuid4().hex[:8]}"
    bad_uri = "qemu+ssh://-oProxyCommand=x/system"
    form = page.locator("#host-form")
    form.locator('input[name="name"]').fill(name)
    form.locator('input[name="uri"]').fill(bad_uri)
    form.get_by_role("button", name="Add host").click()

    uri_label = page.locator("#host-form label").filter(has=page.locator('input[name="uri"]'))
    error = uri_label.locator('.field-error[data-field="uri"]')
    expect(error).to_contain_text("is not valid")
    expect(error).to_contain_text("-oproxycommand=x")
    expect(uri_label.locator("input")).to_have_attribute("aria-invalid", "true")
    expect(uri_label.locator("input")).to_have_value(bad_uri)
    expect(page.locator('#host-form input[name="name"]')).to_have_value(name)
    expect(page.locator('.field-error[data-field="name"]')).to_have_count(0)
    screenshot(page, "overview-refused-uri.png")

    assert page.url == server.url + "/"
    expect(cards).to_have_count(1)
    assert [h["name"] for h in server.api("GET", "/hosts").json()] == ["alpha"]


def test_search_and_state_filter_narrow_the_guest_table_and_survive_its_refresh(
    server: Server, alpha: int, page: Page
) -> None:
    page.goto(f"{server.url}/hosts/{alpha}")
    expect(guest_names(page)).to_have_text(["db-1", "web-1", "web-2"])

    page.get_by_role("searchbox", name="Search guests").fill("web")
    expect(guest_names(page)).to_have_text(["web-1", "web-2"])
    expect(page).to_have_url(re.compile(r"[?&]q=web\b"))

    page.get_by_role("searchbox", name="Search guests").fill("")
    expect(guest_names(page)).to_have_text(["db-1", "web-1", "web-2"])
    page.get_by_role("combobox", name="State").select_option("shutoff")
    expect(guest_names(page)).to_have_text(["db-1"])
    expect(page.locator("#guest-table .pager")).to_contain_text("1 guest")

    # The table re-polls every 5 s; the new table (without the mark) must keep the filter.
    page.locator("#guest-table").evaluate("table => table.dataset.before = 'refresh'")
    expect(page.locator("#guest-table:not([data-before])")).to_have_count(1, timeout=8_000)
    expect(guest_names(page)).to_have_text(["db-1"])
    expect(page.get_by_role("combobox", name="State")).to_have_value("shutoff")


def test_a_guest_page_shows_its_vcpus_disk_source_and_domain_xml_as_text(
    server: Server, alpha: int, page: Page
) -> None:
    page.goto(f"{server.url}/hosts/{alpha}")
    page.get_by_role("link", name="web-1", exact=True).click()

    page.wait_for_url(re.compile(r"/guests/a1000000-0000-4000-8000-000000000001$"))
    expect(page.locator("h1")).to_have_text("web-1")
    expect(page.locator(".page-head .badge")).to_have_text("running")
    expect(page.locator("dt:text-is('vCPUs') + dd")).to_have_text("2")
    expect(page.locator("dt:text-is('Memory') + dd")).to_contain_text("1.5 GiB current of 2 GiB")
    expect(page.locator("table").first).to_contain_text("/var/lib/libvirt/images/web-1.qcow2")
    xml = page.locator("pre.xml")
    expect(xml).to_contain_text("<domain")
    expect(xml).to_contain_text("<name>web-1</name>")
    expect(xml.locator("*")).to_have_count(0)  # escaped text, not markup
    screenshot(page, "guest.png")
