"""Backup schedules in headless Chromium: the form shows what its retention policy would remove
as the keep counts change, before anything is saved, passes axe-core, and saves the schedule."""

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from app.db import make_engine, make_session_factory, transaction
from app.models import Backup
from app.models.base import utcnow
from tests.browser import accessibility_violations, chromium, host_server, logged_in_tab
from tests.serve import ADMIN_PASSWORD, Server

pytestmark = pytest.mark.browser
WEB_1 = "a1000000-0000-4000-8000-000000000001"  # on alpha

# `virtdeck serve` with an admin and the host "alpha", synced.
server = host_server("alpha", "node-alpha.xml")


@pytest.fixture(scope="module", autouse=True)
def five_backups(server: Server) -> None:
    """web-1 has five succeeded backups, a day apart."""
    engine = make_engine(server.env["VIRTDECK_DATABASE_URL"])
    with transaction(make_session_factory(engine)) as session:
        for day in range(5):
            session.add(Backup(
                host_id=1, host_name="alpha", guest_uuid=WEB_1, guest_name="web-1",
                started_at=utcnow() - timedelta(days=day), status="succeeded",
                path=f"alpha/{WEB_1}/{day}", files=[],
            ))  # fmt: skip
    engine.dispose()


def test_the_form_previews_what_the_policy_removes_before_it_is_saved(server: Server) -> None:
    with chromium() as browser:
        tab = logged_in_tab(browser, server, "admin", ADMIN_PASSWORD, bypass_csp=True)
        tab.goto(f"{server.url}/backup-schedules")
        preview = tab.locator("#retention-preview h3")
        expect(preview).to_have_text("Would remove nothing")  # keep last 7 of 5
        tab.get_by_label("Keep last").fill("2")
        tab.get_by_label("Keep last").dispatch_event("change")
        expect(preview).to_have_text("Would remove 3 backups")
        expect(tab.locator("#retention-preview tr.removed")).to_have_count(3)
        found = accessibility_violations(tab)
        assert not tab.evaluate("fetch('/api/v1/backup-schedules').then(r => r.json())")

        tab.get_by_label("Name", exact=True).fill("nightly")
        tab.get_by_role("button", name="Create schedule").click()
        expect(tab.locator("h1")).to_have_text("Schedule nightly")
        expect(tab.locator("#next-run")).not_to_have_text("off")

    assert found == []
