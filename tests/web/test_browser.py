"""The real `virtdeck serve` driven through headless Chromium: setup, login, forms, live refresh.

The server is a subprocess on a fresh SQLite file with no users, so these tests also prove that
`serve` applies the migrations itself. Tests run in file order and share one browser context
(the admin's session): the first creates the admin through /setup and adds host "alpha" through
the form; later ones reuse both, or make them (admin with the command line, alpha through the
API) when run on their own.
"""

import json
import re
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from app.deps import SESSION_COOKIE
from tests.browser import CHROMIUM, CHROMIUM_ARGS, log_in, screenshot
from tests.conftest import DATA, post_login
from tests.nodes import add_domain, new_node
from tests.serve import Server, running_server, virtdeck

pytestmark = pytest.mark.browser

STARTUP_TIMEOUT = 20.0
# Long enough for a host's first sync (interval 1 s) plus a poll of the page (1 s while syncing).
SYNC_TIMEOUT = 10_000
ADMIN, ADMIN_PASSWORD = "ada", "ada's long password"
# Set for the server, as an operator may; without it the code is only in the server's log.
SETUP_CODE = "browser tests' setup code"
VIEWER, VIEWER_PASSWORD = "vic", "vic's long password"
# libvirt refuses '/' in domain names, so the name cannot close a <script>; an attribute
# breakout with an event handler is the name's payload, the others carry <script>.
XSS_GUEST = '"><img src=x onerror=alert(1)>'
XSS_DISK = "/tmp/<script>alert(2)</script>.qcow2"
XSS_NETWORK = "<img src=x onerror=alert(3)>"
XSS_LOGIN = "<script>alert(4)</script>"
XSS_URI_FILE = "<img/src=x/onerror=alert(5)>.xml"
XSS_UUID = "e0000000-0000-4000-8000-0000000000e1"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's test-driver directory, with a copy of node-alpha.xml."""
    directory = tmp_path_factory.mktemp("nodes")
    shutil.copy(DATA / "node-alpha.xml", directory)
    return directory


@pytest.fixture(scope="module")
def alpha_uri(nodes: Path) -> str:
    return f"test://{nodes}/node-alpha.xml"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, nodes: Path) -> Iterator[Server]:
    """`virtdeck serve` on a free port and an empty SQLite file: no default host, no users."""
    env = {
        "VIRTDECK_DEFAULT_HOST_URI": "",
        "VIRTDECK_SYNC_INTERVAL": "1",
        "VIRTDECK_SETUP_CODE": SETUP_CODE,
        "VIRTDECK_TEST_DRIVER_DIR": str(nodes),
        # The audit log test records more than a page (100) of anonymous refusals.
        "VIRTDECK_AUDIT_ANONYMOUS_PER_MINUTE": "1000",
    }
    with running_server(tmp_path_factory.mktemp("serve"), env, admin=None) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: Server) -> Server:
    """The server with an API token of the admin, who is made here unless /setup made them."""
    first = httpx.get(f"{server.url}/login", follow_redirects=False)
    if first.headers.get("location") == "/setup":
        virtdeck("create-user", ADMIN, "--role", "admin", env=server.env, stdin=ADMIN_PASSWORD)
    token = virtdeck("create-token", ADMIN, "--name", "browser-tests", env=server.env)
    return replace(server, token=token)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium (Playwright's own browser download is not available)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(5_000)
    return context


@pytest.fixture(scope="module")
def context(browser: Browser) -> Iterator[BrowserContext]:
    """The admin's browser: its cookies (the session) last for the whole module."""
    shared = new_context(browser)
    yield shared
    shared.close()


@pytest.fixture
def dialogs() -> list[str]:
    """Every alert, confirm or prompt a test's tabs opened, as 'type: message'."""
    return []


def watch(tab: Page, *, errors: list[str], dialogs: list[str]) -> Page:
    """Record JavaScript errors and dialogs; confirmations (hx-confirm) are accepted."""
    tab.on("pageerror", lambda exc: errors.append(str(exc)))

    def answer(dialog) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    tab.on("dialog", answer)
    return tab


@pytest.fixture
def page(context: BrowserContext, dialogs: list[str]) -> Iterator[Page]:
    """A new tab of the admin's browser; JavaScript errors (htmx's too) fail the test."""
    errors: list[str] = []
    tab = watch(context.new_page(), errors=errors, dialogs=dialogs)
    yield tab
    tab.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def admin_page(admin: Server, page: Page) -> Page:
    """A tab logged in as the admin (through the login form, if the browser is not yet)."""
    if not any(c["name"] == SESSION_COOKIE for c in page.context.cookies()):
        log_in(page, admin.url, ADMIN, ADMIN_PASSWORD)
    return page


@pytest.fixture
def alpha(admin: Server, alpha_uri: str) -> int:
    """The id of host alpha, synced; registered through the API unless a test already did."""
    hosts = {h["name"]: h for h in admin.api("GET", "/hosts").json()}
    if "alpha" in hosts:
        host_id = hosts["alpha"]["id"]
    else:
        created = admin.api("POST", "/hosts", json={"name": "alpha", "uri": alpha_uri})
        assert created.status_code == 201, created.text
        host_id = created.json()["id"]
    refreshed = admin.api("POST", f"/hosts/{host_id}/refresh", params={"wait": 15})
    assert refreshed.status_code == 200, refreshed.text
    return host_id


def guest_names(page: Page):
    return page.locator("#guest-table tbody tr[data-uuid] td:first-child")


def guest_row(page: Page, name: str):
    return page.locator("#guest-table tbody tr[data-uuid]").filter(
        has=page.get_by_role("link", name=name, exact=True)
    )


def csrf_token(tab: Page) -> str:
    """The session's CSRF token, as the page hands it to htmx."""
    return json.loads(tab.locator("body").get_attribute("hx-headers"))["X-CSRF-Token"]


def test_the_first_visit_creates_the_admin_whose_host_added_through_the_form_fills_by_itself(
    server: Server, page: Page, alpha_uri: str
) -> None:
    page.goto(server.url + "/")
    page.wait_for_url(server.url + "/setup")
    page.get_by_label("Setup code").fill(SETUP_CODE)
    page.locator('input[name="name"]').fill(ADMIN)
    page.locator('input[name="password"]').fill(ADMIN_PASSWORD)
    page.locator('input[name="password_again"]').fill(ADMIN_PASSWORD)
    screenshot(page, "setup.png")
    page.get_by_role("button", name="Create admin and log in").click()

    page.wait_for_url(server.url + "/")
    expect(page.locator(".whoami")).to_contain_text(f"{ADMIN} (admin)")
    expect(page.locator("#host-cards")).to_contain_text("No hosts yet")

    form = page.locator("#host-form")
    form.locator('input[name="name"]').fill("alpha")
    form.locator('input[name="uri"]').fill(alpha_uri)
    form.get_by_role("button", name="Add host").click()

    page.wait_for_url(re.compile(r"/hosts/\d+$"))
    expect(page.locator("h1")).to_have_text("alpha")
    # No reload from here on: the guest table and facts panel re-poll until the first sync.
    expect(guest_names(page)).to_have_text(["db-1", "web-1", "web-2"], timeout=SYNC_TIMEOUT)
    expect(guest_row(page, "web-1").locator(".badge")).to_have_text("running")
    expect(guest_row(page, "web-2").locator(".badge")).to_have_text("running")
    expect(guest_row(page, "db-1").locator(".badge-shutoff")).to_have_text("shut off")
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
    admin: Server, alpha: int, admin_page: Page
) -> None:
    page = admin_page
    page.goto(admin.url + "/")
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

    assert page.url == admin.url + "/"
    expect(cards).to_have_count(1)
    assert [h["name"] for h in admin.api("GET", "/hosts").json()] == ["alpha"]


def test_search_and_state_filter_narrow_the_guest_table_and_survive_its_refresh(
    admin: Server, alpha: int, admin_page: Page
) -> None:
    page = admin_page
    page.goto(f"{admin.url}/hosts/{alpha}")
    expect(guest_names(page)).to_have_text(["db-1", "web-1", "web-2"])

    page.get_by_role("searchbox", name="Search guests").fill("web")
    expect(guest_names(page)).to_have_text(["web-1", "web-2"])
    expect(page).to_have_url(re.compile(r"[?&]q=web\b"))

    page.get_by_role("searchbox", name="Search guests").fill("")
    expect(guest_names(page)).to_have_text(["db-1", "web-1", "web-2"])
    page.get_by_role("combobox", name="State").select_option("shutoff")
    expect(guest_names(page)).to_have_text(["db-1"])
    expect(page.locator("#guest-table .pager")).to_contain_text("1 guest")

    # A change of one of the host's guests refreshes the table (live events); the new table
    # (without the mark) must keep the filter.
    page.locator("#guest-table").evaluate("table => table.dataset.before = 'refresh'")
    db_1 = "a1000000-0000-4000-8000-000000000003"
    changed = admin.api("POST", f"/guests/{db_1}/actions/autostart_on")
    assert changed.status_code == 200, changed.text
    try:
        expect(page.locator("#guest-table:not([data-before])")).to_have_count(1, timeout=3_000)
        expect(guest_names(page)).to_have_text(["db-1"])
        expect(page.get_by_role("combobox", name="State")).to_have_value("shutoff")
    finally:
        admin.api("POST", f"/guests/{db_1}/actions/autostart_off")


def test_a_guest_page_shows_its_vcpus_disk_source_and_domain_xml_as_text(
    admin: Server, alpha: int, admin_page: Page
) -> None:
    page = admin_page
    page.goto(f"{admin.url}/hosts/{alpha}")
    page.get_by_role("link", name="web-1", exact=True).click()

    page.wait_for_url(re.compile(r"/guests/a1000000-0000-4000-8000-000000000001$"))
    expect(page.locator("h1")).to_have_text("web-1")
    expect(page.locator("#guest-status .badge")).to_have_text("running")
    expect(page.locator("dt:text-is('vCPUs') + dd")).to_have_text("2")
    expect(page.locator("dt:text-is('Memory') + dd")).to_contain_text("1.5 GiB current of 2 GiB")
    screenshot(page, "guest.png")
    sections = page.get_by_role("navigation", name="Guest sections")
    sections.get_by_role("link", name="Hardware").click()
    page.wait_for_url(re.compile(r"\?section=hardware$"))
    disk = page.locator("#guest-hardware tr[data-target='vda']")
    expect(disk).to_contain_text("/var/lib/libvirt/images/web-1.qcow2")
    sections.get_by_role("link", name="XML").click()
    xml = page.locator("pre.xml")
    expect(xml).to_contain_text("<domain")
    expect(xml).to_contain_text("<name>web-1</name>")
    expect(xml.locator("*")).to_have_count(0)  # escaped text, not markup
    page.go_back()  # the browser's history holds each section
    expect(disk).to_contain_text("/var/lib/libvirt/images/web-1.qcow2")
    expect(sections.locator("[aria-current=page]")).to_have_text("Hardware")


def write_xss_node(path: Path) -> None:
    """A test-driver host whose one guest carries markup in its name, disk and network."""
    node = new_node(4 * 1024 * 1024)
    devices = add_domain(node, XSS_GUEST, XSS_UUID, running=True, memory_mib=512)
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "source", file=XSS_DISK)
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    nic = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(nic, "mac", address="52:54:00:e0:00:01")
    ET.SubElement(nic, "source", network=XSS_NETWORK)
    ET.ElementTree(node).write(path, encoding="utf-8", xml_declaration=True)


def add_host_through_the_form(page: Page, url: str, name: str, uri: str) -> int:
    page.goto(url + "/")
    form = page.locator("#host-form")
    form.locator('input[name="name"]').fill(name)
    form.locator('input[name="uri"]').fill(uri)
    form.get_by_role("button", name="Add host").click()
    page.wait_for_url(re.compile(r"/hosts/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def assert_inert(page: Page, dialogs: list[str]) -> None:
    """No markup from the data became elements, and nothing opened a dialog."""
    page.wait_for_timeout(500)  # time for an injected onerror to fire
    # The pictures the server draws are svg.chart, and a running guest's screenshot is
    # img[data-screenshot]; no other svg or img may appear.
    injected = page.locator(
        "main img:not([data-screenshot]), main script, main svg:not(.chart), main iframe"
    )
    expect(injected).to_have_count(0)
    assert dialogs == [], f"{page.url} opened {dialogs}"


def test_markup_in_names_paths_uris_and_logins_is_shown_as_text_and_never_runs(
    admin: Server, admin_page: Page, dialogs: list[str], nodes: Path
) -> None:
    page = admin_page
    write_xss_node(nodes / "xss.xml")
    # The URI check refuses markup; the refused value is shown back in the form, as text.
    broken_uri = f"test://{nodes}/{XSS_URI_FILE}"
    # A login attempt's name lands in the audit log's target as typed.
    with httpx.Client(base_url=admin.url) as stranger:
        assert post_login(stranger, XSS_LOGIN, "not it").status_code == 401

    host_ids = []
    try:
        host_ids.append(
            add_host_through_the_form(page, admin.url, "xss", f"test://{nodes}/xss.xml")
        )
        page.goto(admin.url + "/")
        form = page.locator("#host-form")
        form.locator('input[name="name"]').fill("xss-uri")
        form.locator('input[name="uri"]').fill(broken_uri)
        form.get_by_role("button", name="Add host").click()
        expect(page.locator('.field-error[data-field="uri"]')).to_contain_text("not allowed")
        expect(page.locator('#host-form input[name="uri"]')).to_have_value(broken_uri)
        assert_inert(page, dialogs)

        page.goto(admin.url + "/")
        expect(page.locator('.card[data-host="xss-uri"]')).to_have_count(0)
        expect(page.locator('.card[data-host="xss"]')).to_be_visible()
        assert_inert(page, dialogs)
        screenshot(page, "xss-overview.png")

        page.goto(f"{admin.url}/hosts/{host_ids[0]}")
        link = page.locator("#guest-table").get_by_role("link", name=XSS_GUEST, exact=True)
        expect(link).to_be_visible(timeout=SYNC_TIMEOUT)
        assert_inert(page, dialogs)

        page.goto(f"{admin.url}/hosts/{host_ids[0]}/overcommit")
        loads = page.locator("#guest-loads").get_by_role("link", name=XSS_GUEST, exact=True)
        expect(loads).to_be_visible()
        assert_inert(page, dialogs)

        page.goto(f"{admin.url}/hosts/{host_ids[0]}")
        link.click()
        page.wait_for_url(re.compile(f"/guests/{XSS_UUID}$"))
        expect(page.locator("h1")).to_have_text(XSS_GUEST)
        assert XSS_GUEST in page.title()
        page.goto(f"{admin.url}/guests/{XSS_UUID}?section=hardware")
        expect(page.locator("#guest-hardware tr[data-target='vda'] code")).to_have_text(XSS_DISK)
        expect(page.locator("#guest-hardware tr[data-mac]")).to_contain_text(XSS_NETWORK)
        assert_inert(page, dialogs)
        page.goto(f"{admin.url}/guests/{XSS_UUID}?section=xml")
        xml = page.locator("pre.xml")
        expect(xml).to_contain_text("<name>&quot;&gt;&lt;img src=x onerror=alert(1)&gt;</name>")
        expect(xml.locator("*")).to_have_count(0)
        assert_inert(page, dialogs)
        screenshot(page, "xss-guest.png")

        page.goto(f"{admin.url}/audit")
        login_row = page.locator('#audit-table tr[data-action="login"]').filter(has_text=XSS_LOGIN)
        expect(login_row.first.locator("td.target")).to_have_text(f"user:{XSS_LOGIN}")
        expect(login_row.first.locator(".badge")).to_have_text("denied")
        added = page.locator('#audit-table tr[data-action="host.add"]')
        # The host by its name, a link to its page, its id beside it.
        target = added.filter(has_text=f"host {host_ids[0]}").first.locator("td.target")
        expect(target).to_have_text(f"xss host {host_ids[0]}")
        expect(target.get_by_role("link", name="xss")).to_have_attribute(
            "href", f"/hosts/{host_ids[0]}"
        )
        refused = added.filter(has_text="not allowed").first
        expect(refused.locator(".badge")).to_have_text("failed")
        assert_inert(page, dialogs)

        page.goto(f"{admin.url}/tokens")
        expect(page.locator("h1")).to_have_text("API tokens")
        assert_inert(page, dialogs)
    finally:
        for host_id in host_ids:
            admin.api("DELETE", f"/hosts/{host_id}")


def test_a_viewer_sees_no_admin_controls_and_a_forged_removal_is_refused(
    admin: Server, alpha: int, browser: Browser
) -> None:
    virtdeck("create-user", VIEWER, "--role", "viewer", env=admin.env, stdin=VIEWER_PASSWORD)
    context = new_context(browser)
    errors: list[str] = []
    tab = watch(context.new_page(), errors=errors, dialogs=[])
    try:
        log_in(tab, admin.url, VIEWER, VIEWER_PASSWORD)
        expect(tab.locator(".whoami")).to_contain_text(f"{VIEWER} (viewer)")
        nav = tab.locator(".topbar nav")
        expect(nav.get_by_role("link", name="API tokens")).to_be_visible()
        expect(nav.get_by_role("link", name="Users")).to_have_count(0)
        expect(nav.get_by_role("link", name="Audit")).to_have_count(0)
        expect(tab.locator('.card[data-host="alpha"]')).to_be_visible()
        expect(tab.get_by_role("heading", name="Add a host")).to_have_count(0)
        expect(tab.locator("#host-form")).to_have_count(0)

        tab.goto(f"{admin.url}/hosts/{alpha}")
        expect(tab.locator("h1")).to_have_text("alpha")
        expect(guest_names(tab)).to_have_text(["db-1", "web-1", "web-2"])
        expect(tab.get_by_role("button", name="Remove host")).to_have_count(0)
        screenshot(tab, "viewer-host.png")

        forged = tab.request.post(
            f"{admin.url}/hosts/{alpha}/delete", headers={"X-CSRF-Token": csrf_token(tab)}
        )
        assert forged.status == 403
        assert "your role (viewer) does not allow this" in forged.text()
        assert admin.api("GET", f"/hosts/{alpha}").status_code == 200

        tab.goto(f"{admin.url}/tokens")
        roles = tab.locator('#token-form select[name="role"] option')
        expect(roles).to_have_text(["viewer"])
        for path in ("/users", "/audit"):
            response = tab.goto(admin.url + path)
            assert response is not None and response.status == 403
    finally:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"
    denied = admin.api("GET", "/audit", params={"username": VIEWER, "result": "denied"}).json()
    assert "host.remove" in [e["action"] for e in denied["items"]]


def test_a_new_token_is_shown_once_then_works_until_revoked_in_its_row(
    admin: Server, admin_page: Page, dialogs: list[str]
) -> None:
    page = admin_page
    page.goto(f"{admin.url}/tokens")
    form = page.locator("#token-form")
    form.locator('input[name="name"]').fill("<b>bold</b>")
    form.get_by_role("button", name="Create token").click()
    expect(page.locator('.field-error[data-field="name"]')).to_contain_text("letters, digits")
    expect(page.locator(".secret-box")).to_have_count(0)

    form.locator('input[name="name"]').fill("ci-nightly")
    form.locator('select[name="role"]').select_option("viewer")
    form.locator('input[name="expires_days"]').fill("30")
    form.get_by_role("button", name="Create token").click()

    box = page.locator(".secret-box")
    expect(box).to_contain_text("will not be shown again")
    secret = page.locator("#new-token").inner_text()
    assert secret.startswith("vd_")
    mine = page.locator('#tokens-mine tr[data-token="ci-nightly"]')
    everyone = page.locator('#tokens-all tr[data-token="ci-nightly"]')
    expect(mine).to_contain_text("viewer")
    expect(mine.locator("code")).to_have_text(secret[:9] + "…")
    expect(everyone).to_contain_text(ADMIN)
    expect(page.locator('#token-form input[name="name"]')).to_have_value("")
    screenshot(page, "tokens.png")

    me = httpx.get(f"{admin.url}/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert (me.status_code, me.json()["role"], me.json()["token_name"]) == (
        200,
        "viewer",
        "ci-nightly",
    )

    page.reload()
    expect(page.locator(".secret-box")).to_have_count(0)
    assert secret not in page.content()

    mine.get_by_role("button", name="Revoke").click()
    expect(mine.locator(".badge")).to_have_text("revoked")
    expect(mine.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(everyone.locator(".badge")).to_have_text("revoked")  # the same token, out of band
    assert dialogs == [
        "confirm: Revoke the token ci-nightly? Whatever uses it loses access at once."
    ]
    me = httpx.get(f"{admin.url}/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 401


def test_an_admin_manages_users_in_place_but_cannot_demote_the_last_admin(
    admin: Server, admin_page: Page, dialogs: list[str]
) -> None:
    page = admin_page
    page.goto(f"{admin.url}/users")
    form = page.locator("#user-form")
    form.locator('input[name="name"]').fill("olga")
    form.locator('input[name="password"]').fill("olga's long password")
    form.locator('select[name="role"]').select_option("operator")
    form.get_by_role("button", name="Create user").click()

    expect(page.locator("#user-create .note")).to_have_text("Created operator olga.")
    olga = page.locator('#user-list tr[data-user="olga"]')
    expect(olga.get_by_label("Role of olga")).to_have_value("operator")

    form.locator('input[name="name"]').fill("olga")
    form.locator('input[name="password"]').fill("another long password")
    form.get_by_role("button", name="Create user").click()
    expect(page.locator('.field-error[data-field="name"]')).to_contain_text("already exists")

    olga.get_by_label("Role of olga").select_option("viewer")
    expect(olga.get_by_label("Role of olga")).to_have_attribute("data-current", "viewer")
    olga.get_by_role("button", name="Disable").click()
    expect(olga.locator(".badge")).to_have_text("disabled")
    expect(olga.get_by_role("button", name="Enable")).to_be_visible()
    users = {u["name"]: u for u in admin.api("GET", "/users").json()}
    assert (users["olga"]["role"], users["olga"]["disabled"]) == ("viewer", True)

    me = page.locator(f'#user-list tr[data-user="{ADMIN}"]')
    expect(me).to_contain_text("(you)")
    expect(me.get_by_role("button")).to_have_count(0)  # no disabling or deleting oneself
    me.get_by_label(f"Role of {ADMIN}").select_option("viewer")
    toast = page.locator("#toasts .toast-error")
    expect(toast).to_have_text("role: the last active admin cannot be demoted or disabled")
    expect(me.get_by_label(f"Role of {ADMIN}")).to_have_value("admin")
    screenshot(page, "users.png")

    olga.get_by_role("button", name="Delete").click()
    expect(olga).to_have_count(0)
    assert dialogs == [
        "confirm: Disable olga? Their sessions and tokens stop working until enabled.",
        "confirm: Delete olga with their sessions and tokens?",
    ]
    users = {u["name"]: u for u in admin.api("GET", "/users").json()}
    assert "olga" not in users and users[ADMIN]["role"] == "admin"


def test_the_audit_log_shows_who_did_what_newest_first_with_filters_and_pages(
    admin: Server, alpha: int, admin_page: Page
) -> None:
    page = admin_page
    refused = httpx.post(f"{admin.url}/api/v1/hosts/{alpha}/refresh")  # nobody logged in
    assert refused.status_code == 401

    page.goto(f"{admin.url}/audit")
    rows = page.locator("#audit-table tbody tr[data-action]")
    newest = rows.first
    expect(newest).to_have_attribute("data-action", "host.refresh")
    expect(newest.locator(".badge-denied")).to_have_text("denied")
    expect(newest).to_contain_text("anonymous")
    expect(newest).to_contain_text("401")
    expect(newest).to_contain_text("log in first")
    # How the admin's session began: through /setup, or /login when run alone.
    began = page.locator('tr[data-action="user.setup"], tr[data-action="login"]')
    expect(began.filter(has_text=f"({ADMIN})").locator(".badge")).to_have_text("ok")
    screenshot(page, "audit.png")

    page.get_by_role("searchbox", name="Action").fill("host.")
    expect(page).to_have_url(re.compile(r"[?&]action=host\."))
    expect(rows.first).to_have_attribute("data-action", re.compile(r"^host\."))
    actions = rows.evaluate_all("rows => rows.map(r => r.dataset.action)")
    assert actions and all(a.startswith("host.") for a in actions)

    page.get_by_role("combobox", name="Result").select_option("ok")
    expect(rows.locator(".badge-denied")).to_have_count(0)
    expect(rows.locator(".badge-ok")).not_to_have_count(0)
    page.get_by_role("searchbox", name="User").fill("nobody-at-all")
    expect(page.locator("#audit-table")).to_contain_text("No entries match.")

    for _ in range(100):  # one more page of refusals
        httpx.post(f"{admin.url}/api/v1/hosts/{alpha}/refresh")
    page.goto(f"{admin.url}/audit?action=host.refresh&result=denied")
    expect(rows).to_have_count(100)
    pager = page.locator("#audit-table .pager")
    expect(pager).to_contain_text("page 1 of 2")
    pager.get_by_role("link", name="older").click()
    expect(pager).to_contain_text("page 2 of 2")
    expect(rows).not_to_have_count(0)
    expect(page.get_by_role("searchbox", name="Action")).to_have_value("host.refresh")
