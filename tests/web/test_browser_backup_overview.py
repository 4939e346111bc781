"""The backups overview in headless Chromium: it passes axe-core, fits a phone and a desktop
without spilling sideways, and its filter narrows the table in place."""

from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from app.db import make_engine, make_session_factory, transaction
from app.models import Backup
from app.models.base import utcnow
from tests.browser import accessibility_violations, admin_tabs, chromium, host_server, logged_in_tab
from tests.serve import ADMIN_PASSWORD, Server

pytestmark = pytest.mark.browser
WEB_1 = "a1000000-0000-4000-8000-000000000001"  # on alpha
ERROR = "writing disk-vda.qcow2: " + "No space left on device " * 8

# `virtdeck serve` with an admin and the host "alpha", synced.
server = host_server("alpha", "node-alpha.xml")


@pytest.fixture(scope="module", autouse=True)
def failed_backup(server: Server) -> None:
    """web-1's last backup failed, with a long error."""
    engine = make_engine(server.env["VIRTDECK_DATABASE_URL"])
    started = utcnow() - timedelta(hours=2)
    with transaction(make_session_factory(engine)) as session:
        session.add(Backup(
            host_id=1, host_name="alpha", guest_uuid=WEB_1, guest_name="web-1", started_at=started,
            finished_at=started + timedelta(seconds=5), status="failed", guest_state="running",
            path=f"alpha/{WEB_1}/x", files=[], error=ERROR,
        ))  # fmt: skip
    engine.dispose()


def open_overview(tab: Page, server: Server) -> None:
    """The overview page, its table shown."""
    tab.goto(f"{server.url}/backups/overview")
    expect(tab.locator(f"#backup-overview tr[data-guest='{WEB_1}']")).to_be_visible()


def test_the_overview_passes_axe_fits_a_phone_and_a_desktop_and_filters_in_place(
    server: Server,
) -> None:
    widths = {}
    with chromium() as browser:
        checked = logged_in_tab(browser, server, "admin", ADMIN_PASSWORD, bypass_csp=True)
        open_overview(checked, server)
        found = accessibility_violations(checked)
        for width in (390, 1440):
            with admin_tabs(browser, server, 1, width=width) as (tab,):
                open_overview(tab, server)
                widths[width] = tab.evaluate("document.documentElement.scrollWidth")
                if width == 1440:
                    tab.get_by_label("Show").select_option("failed")
                    expect(tab.locator("#backup-overview tr[data-guest]")).to_have_count(1)
                    expect(tab).to_have_url(f"{server.url}/backups/overview?show=failed")

    assert found == []
    assert widths[390] <= 390 and widths[1440] <= 1440
