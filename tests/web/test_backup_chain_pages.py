"""Chains of incremental backups in the pages: the history says Full or Incremental (and why a
full one is full), links the parent by its time and shows the changed bytes; Delete is offered
only for a backup nothing builds on (its page names those that do); an incremental whose full
backup is corrupt says it cannot be restored, and offers no restore."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.backup_chains import FULL_REASON, flip_byte, stored_chain
from tests.backups import WEB_1
from tests.conftest import add_host, node_uri
from tests.htmx import htmx_to, toast
from tests.markup import Element, parse


@pytest.fixture
def chain(make_client, sessions: sessionmaker[Session]) -> tuple[TestClient, Path, list[int]]:
    """An admin's client, the backup directory, and web-1's full backup (full for a reason) with
    two incrementals, oldest first."""
    admin = make_client()
    host = add_host(admin, "alpha", node_uri("node-alpha.xml"))
    root = Path(admin.app.state.settings.backup_dir)
    return admin, root, stored_chain(sessions, root, host, full_reason=FULL_REASON)


def cells(page: str, backup_id: int) -> dict[str, Element]:
    """One row of a backups table: its cells by column heading."""
    table = parse(page).find("table", class_="backups")
    headings = [th.text for th in table.find("thead").find_all("th")]
    row = table.find("tr", data_backup=str(backup_id))
    return dict(zip(headings, row.find_all("td"), strict=True))


def actions(page: str, backup_id: int) -> list[str]:
    """The buttons and links of one backup's row in the guest's panel."""
    row = parse(page).find("tr", data_backup=str(backup_id))
    return [action.get("data-action") for action in row.find_all(data_action=True)]


def test_the_history_shows_kind_parent_by_its_time_changed_bytes_and_why_a_full_is_full(
    chain,
) -> None:
    admin, _root, (full, first, second) = chain

    page = admin.get("/backups").text
    rows = {i: {k: cell.text for k, cell in cells(page, i).items()} for i in (full, first, second)}
    reason = cells(page, full)["Kind"].find(data_full_reason=True)
    parent_link = cells(page, second)["Parent"].find("a")

    assert rows[full]["Kind"].startswith("Full") and reason.text == f"Full: {FULL_REASON}"
    assert rows[full]["Parent"] == "—" and rows[full]["Changed"] == "—"
    assert rows[first]["Kind"] == "Incremental" and rows[first]["Changed"] == "4 KiB"
    assert rows[first]["Parent"] == rows[full]["Started (UTC)"]
    assert parent_link.get("href") == f"/backups/{first}"
    assert parent_link.text == rows[first]["Started (UTC)"]
    assert rows[first]["On disk"] not in ("", "—")


def test_delete_is_offered_only_for_a_backup_nothing_builds_on_and_refused_for_others(
    chain,
) -> None:
    admin, _root, (full, first, second) = chain

    panel = admin.get(f"/guests/{WEB_1}/backups", headers=htmx_to("guest-backups")).text
    full_page = parse(admin.get(f"/backups/{full}").text)
    newest_page = parse(admin.get(f"/backups/{second}").text)
    # As a page loaded before the incrementals were taken would ask.
    stale = admin.post(f"/backups/{full}/delete", headers=htmx_to("backup-details"))

    assert actions(panel, full) == ["verify", "restore"]
    assert actions(panel, first) == ["verify", "restore"]
    assert actions(panel, second) == ["verify", "restore", "delete"]
    assert not full_page.has(data_action="delete")
    assert full_page.definition("Needed by").text == f"backup {first}, backup {second}"
    assert "delete those first, newest first" in full_page.find(data_delete_refused=True).text
    assert newest_page.has(data_action="delete")
    assert not newest_page.has(data_delete_refused=True)
    assert stale.status_code == 409 and stale.headers["HX-Retarget"] == "#toasts"
    assert parse(stale.text).find(role="alert").text == (
        f"backup {full} cannot be deleted: backups {first} and {second} build on it; "
        "delete those first, newest first"
    )


def test_an_incremental_of_a_corrupt_full_backup_says_it_cannot_be_restored(chain) -> None:
    admin, root, (full, first, _second) = chain
    flip_byte(root, admin.get(f"/api/v1/backups/{full}").json()["path"], "disk-vda.qcow2")
    admin.post(f"/api/v1/backups/{full}/verify")

    verified = admin.post(f"/backups/{first}/verify", headers=htmx_to("backup-details"))
    page = parse(admin.get(f"/backups/{first}").text)
    panel = admin.get(f"/guests/{WEB_1}/backups", headers=htmx_to("guest-backups")).text
    history = admin.get("/backups").text

    assert toast(verified) == (
        f"backup {first} of web-1 is intact, but it cannot be restored: backup {full} is corrupt"
    )
    assert page.find("p", data_unrestorable=True).text == (
        f"This backup cannot be restored: backup {full} is corrupt."
    )
    assert not page.has(id="restore-new-form")
    assert actions(panel, first) == ["verify"]
    status = cells(history, first)["Status"]
    assert status.text.startswith("succeeded")
    assert status.find(data_unrestorable=True).text == (
        f"Cannot be restored: backup {full} is corrupt"
    )
