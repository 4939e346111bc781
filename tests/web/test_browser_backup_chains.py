"""A chain of incremental backups in headless Chromium: the history and a backup's page pass
axe-core and fit a phone and a desktop without spilling sideways, with the kind, the parent by its
time, why a full backup is full and why an incremental cannot be restored shown."""

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
REASON = "checkpoint virtdeck-12 was missing on the host, so this backup copied every block"

# `virtdeck serve` with an admin and the host "alpha", synced.
server = host_server("alpha", "node-alpha.xml")


@pytest.fixture(scope="module")
def chain(server: Server) -> list[int]:
    """web-1's full backup (corrupt, full for a reason) and two incrementals; ids, oldest first."""
    engine = make_engine(server.env["VIRTDECK_DATABASE_URL"])
    ids: list[int] = []
    with transaction(make_session_factory(engine)) as session:
        for n, status in enumerate(("corrupt", "succeeded", "succeeded")):
            started = utcnow() - timedelta(hours=3 - n)
            backup = Backup(
                host_id=1, host_name="alpha", guest_uuid=WEB_1, guest_name="web-1",
                started_at=started, finished_at=started + timedelta(seconds=40), status=status,
                guest_state="running", path=f"alpha/{WEB_1}/{n}", files=[],
                size_bytes=(3 << 30) if n == 0 else (96 << 20), kind="incremental" if n else "full",
                parent_id=ids[-1] if ids else None, full_reason=None if n else REASON,
                changed_bytes=(96 << 20) if n else None,
                error=None if n else "checksum mismatch: disk-vda.qcow2",
            )  # fmt: skip
            session.add(backup)
            session.flush()
            ids.append(backup.id)
    engine.dispose()
    return ids


def open_page(tab: Page, server: Server, path: str) -> None:
    """A backups page, its chain shown."""
    tab.goto(f"{server.url}{path}")
    expect(tab.locator("[data-kind='incremental']").first).to_be_visible()


@pytest.mark.parametrize("which", ["history", "incremental"])
def test_the_history_and_a_backups_page_pass_axe_and_fit_a_phone_and_a_desktop(
    server: Server, chain: list[int], which: str
) -> None:
    full, first, _second = chain
    path = "/backups" if which == "history" else f"/backups/{first}"
    widths = {}
    with chromium() as browser:
        checked = logged_in_tab(browser, server, "admin", ADMIN_PASSWORD, bypass_csp=True)
        open_page(checked, server, path)
        found = accessibility_violations(checked)
        shown = checked.locator("[data-unrestorable]").first.inner_text()
        for width in (390, 1440):
            with admin_tabs(browser, server, 1, width=width) as (tab,):
                open_page(tab, server, path)
                widths[width] = tab.evaluate("document.documentElement.scrollWidth")

    assert found == []
    assert widths[390] <= 390 and widths[1440] <= 1440
    assert f"backup {full} is corrupt" in shown
