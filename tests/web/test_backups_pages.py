"""Backup pages: the guest page's panel, /backups, one backup's page and its restore form.

The test driver cannot take backups, so the history is written into the database here; what is
asked of libvirt (the checks before a backup or restore) still runs against the test driver.
"""

import hashlib
import json
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Backup, Guest, Job
from app.models.base import utcnow
from tests.backups import DB_1, GIB, WEB_1, add_backup
from tests.conftest import add_host, node_uri
from tests.htmx import HTMX, htmx_to, toast
from tests.markup import parse

BUILD_1 = "b2000000-0000-4000-8000-000000000001"  # on beta


@pytest.fixture(autouse=True)
def no_backups(sessions: sessionmaker[Session]) -> None:
    """Start from an empty backup history (other tests' rows would show in the lists)."""
    with transaction(sessions) as session:
        session.execute(delete(Backup))


@pytest.fixture
def alpha(make_client) -> tuple[TestClient, dict]:
    """An admin's client and host alpha, synced."""
    admin = make_client()
    return admin, add_host(admin, "alpha", node_uri("node-alpha.xml"))


def add_job(sessions: sessionmaker[Session], **fields) -> int:
    """A job record; its id."""
    with transaction(sessions) as session:
        job = Job(**{"kind": "backup", "status": "running", "progress": 0.0, **fields})
        session.add(job)
        session.flush()
        return job.id


def panel(client: TestClient, uuid: str = WEB_1):
    """The guest page's Backups panel, as the page loads it."""
    return client.get(f"/guests/{uuid}/backups", headers=htmx_to("guest-backups"))


def shown_rows(page: str) -> list[int]:
    """The backups a table lists, top to bottom."""
    return [int(row.get("data-backup")) for row in parse(page).find_all("tr", data_backup=True)]


def row_actions(page: str, backup_id: int) -> list[str]:
    """The buttons and links of one backup's row."""
    row = parse(page).find("tr", data_backup=str(backup_id))
    return [action.get("data-action") for action in row.find_all(data_action=True)]


def test_the_guest_page_loads_a_panel_listing_its_backups_newest_first(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host = alpha
    old = add_backup(sessions, host, age=timedelta(hours=2), verified_at=utcnow())
    failed = add_backup(
        sessions, host, status="failed", age=timedelta(hours=1), seconds=3, size_bytes=0,
        error="writing disk-vda.qcow2: No space left on device",
    )  # fmt: skip
    newest = add_backup(sessions, host, seconds=4000, size_bytes=512 * 1024 * 1024)
    add_backup(sessions, host, guest_uuid=DB_1, guest_name="db-1")

    page = admin.get(f"/guests/{WEB_1}?section=backups").text
    answer = panel(admin)

    assert f'hx-get="/guests/{WEB_1}/backups" hx-trigger="load"' in page
    assert answer.status_code == 200 and "<html" not in answer.text
    assert shown_rows(answer.text) == [newest, failed, old]
    cells = [cell.text for cell in parse(answer.text).find_all("td")]
    assert cells[1:8] == ["succeeded", "Full", "ops", "shutoff", "1 h 6 min", "512 MiB", "—"]
    assert "writing disk-vda.qcow2: No space left on device" in cells
    assert "3.0 s" in cells and "1.5 GiB" in cells and "1 min 15 s" in cells
    assert f'href="/backups/{newest}"' in answer.text


def test_the_panel_offers_each_role_only_what_it_may_do(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    _admin, host = alpha
    good = add_backup(sessions, host)
    bad = add_backup(sessions, host, status="failed", error="boom")

    seen = {role: panel(make_client(role=role)).text for role in ("viewer", "operator", "admin")}

    assert "Back up now" not in seen["viewer"]
    assert row_actions(seen["viewer"], good) == []
    assert "Back up now" in seen["operator"] and "Back up now" in seen["admin"]
    assert row_actions(seen["operator"], good) == ["verify", "restore"]
    assert row_actions(seen["operator"], bad) == []
    assert row_actions(seen["admin"], good) == ["verify", "restore", "delete"]
    assert row_actions(seen["admin"], bad) == ["delete"]
    assert 'hx-confirm="Delete the backup of web-1 from' in seen["admin"]
    assert f'href="/backups/{good}#backup-restore"' in seen["operator"]


def test_back_up_now_shows_why_the_guest_cannot_be_backed_up(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    operator = make_client(role="operator")

    unpooled = operator.post(f"/guests/{WEB_1}/backups", headers=HTMX)
    with transaction(sessions) as session:
        session.execute(
            update(Guest)
            .where(Guest.uuid == WEB_1)
            .values(busy_action="snapshot", busy_since=utcnow())
        )
    busy = operator.post(f"/guests/{WEB_1}/backups", headers=HTMX)

    assert unpooled.status_code == 409
    assert '<section class="panel" id="guest-backups"' in unpooled.text
    assert "is not a volume of an active storage pool on this host" in unpooled.text
    assert busy.status_code == 409
    reason = "Cannot back up web-1: web-1 is busy: snapshot in progress"
    assert f'data-error="backup">{reason}<' in busy.text
    assert "Back up now" in busy.text and "No backups of web-1 yet." in busy.text
    with sessions() as session:
        assert session.query(Backup).count() == 0


def test_a_running_backup_shows_a_bar_that_polls_until_the_job_ends_then_the_panel(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    _admin, host = alpha
    operator = make_client(role="operator")
    message = "copying vda: 512 MiB of 1 GiB, 480 MiB/s, 2 s left"
    job = add_job(sessions, guest_uuid=WEB_1, progress=0.42, message=message)
    backup = add_backup(sessions, host, status="running", job_id=job, size_bytes=0)
    poll = f"/guests/{WEB_1}/backups/jobs/{job}"

    running = panel(operator).text
    with transaction(sessions) as session:
        session.get(Job, job).progress = 0.9
    later = operator.get(poll, headers=htmx_to(f"job-{job}"))
    with transaction(sessions) as session:
        session.get(Job, job).status, session.get(Job, job).progress = "succeeded", 1.0
        session.get(Job, job).message = "done"
        row = session.get(Backup, backup)
        row.status, row.finished_at, row.size_bytes = "succeeded", utcnow(), GIB
    ended = operator.get(poll, headers=htmx_to(f"job-{job}"))

    assert 'data-progress="42"' in running and "42 %" in running and message in running
    assert f'hx-get="{poll}"' in running
    assert f'hx-post="/jobs/{job}/cancel"' in running and "Back up now" not in running
    assert later.text.lstrip().startswith(f'<div id="job-{job}"')
    assert 'data-progress="90"' in later.text and f'hx-get="{poll}"' in later.text
    assert ended.headers["HX-Retarget"] == "#guest-backups"
    assert ended.headers["HX-Reswap"] == "outerHTML"
    assert toast(ended) == "backup of web-1 succeeded"
    assert 'data-progress="100"' in ended.text and "Back up now" in ended.text
    assert poll not in ended.text and "/cancel" not in ended.text
    assert row_actions(ended.text, backup) == ["verify", "restore"]
    assert "1 GiB" in ended.text


def test_cancel_asks_the_job_to_stop_and_is_refused_once_it_has_ended(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    _admin, host = alpha
    viewer, operator = make_client(role="viewer"), make_client(role="operator")
    job = add_job(sessions, guest_uuid=WEB_1, progress=0.3, message="copying vda")
    add_backup(sessions, host, status="running", job_id=job)

    refused = viewer.post(f"/jobs/{job}/cancel", headers=HTMX)
    asked = operator.post(f"/jobs/{job}/cancel", headers=HTMX)
    after = panel(operator).text
    with transaction(sessions) as session:
        session.get(Job, job).status = "cancelled"
    late = operator.post(f"/jobs/{job}/cancel", headers=HTMX)

    assert refused.status_code == 403
    assert asked.status_code == 204 and toast(asked) == "cancelling the backup"
    assert "cancelling" in after
    with sessions() as session:
        assert session.get(Job, job).cancel_requested is True
    assert late.status_code == 409 and f"job {job} has already cancelled" in late.text


def test_verify_says_whether_the_files_are_intact_and_marks_a_changed_one_corrupt(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    _admin, host = alpha
    content = b"<domain>web-1</domain>"
    entry = {"name": "domain.xml", "kind": "domain-xml", "target": None, "format": None,
             "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}  # fmt: skip
    backup = add_backup(sessions, host, files=[entry])
    operator, viewer = make_client(role="operator"), make_client(role="viewer")
    with sessions() as session:
        relative = session.get(Backup, backup).path
    directory = Path(operator.app.state.settings.backup_dir) / relative
    directory.mkdir(parents=True)
    (directory / "domain.xml").write_bytes(content)
    from_panel = htmx_to("guest-backups")

    refused = viewer.post(f"/backups/{backup}/verify", headers=from_panel)
    intact = operator.post(f"/backups/{backup}/verify", headers=from_panel)
    (directory / "domain.xml").write_bytes(content.upper())
    changed = operator.post(f"/backups/{backup}/verify", headers=htmx_to("backup-details"))

    assert refused.status_code == 403
    assert intact.status_code == 200 and 'id="guest-backups"' in intact.text
    assert toast(intact) == f"backup {backup} of web-1 is intact"
    row = parse(intact.text).find("tr", data_backup=str(backup))
    assert any(re.match(r"\d{4}-\d\d-\d\d ", cell.text) for cell in row.find_all("td"))  # verified
    assert changed.text.lstrip().startswith('<section class="panel" id="backup-details"')
    assert toast(changed) == f"backup {backup} of web-1 is corrupt: checksum mismatch: domain.xml"
    assert 'data-error="backup">checksum mismatch: domain.xml<' in changed.text
    assert "badge-corrupt" in changed.text


def test_delete_is_for_admins_and_removes_the_files(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    admin, host = alpha
    kept = add_backup(sessions, host, age=timedelta(hours=1))
    gone = add_backup(sessions, host)
    other = add_backup(sessions, host)
    running = add_backup(sessions, host, status="running")
    with sessions() as session:
        directory = Path(admin.app.state.settings.backup_dir) / session.get(Backup, gone).path
    directory.mkdir(parents=True)
    (directory / "domain.xml").write_text("<domain/>")
    operator = make_client(role="operator")
    from_panel = htmx_to("guest-backups")

    refused = operator.post(f"/backups/{gone}/delete", headers=from_panel)
    deleted = admin.post(f"/backups/{gone}/delete", headers=from_panel)
    from_page = admin.post(f"/backups/{other}/delete", headers=htmx_to("backup-details"))
    busy = admin.post(f"/backups/{running}/delete", headers=from_panel)

    assert refused.status_code == 403
    assert deleted.status_code == 200 and toast(deleted) == f"backup {gone} of web-1 deleted"
    assert shown_rows(deleted.text) == [running, other, kept]
    assert not directory.exists()
    assert from_page.status_code == 204
    assert json.loads(from_page.headers["HX-Location"])["path"] == "/backups"
    assert busy.status_code == 409 and "is running; cancel it first" in busy.text
    assert shown_rows(panel(admin).text) == [running, kept]


def test_the_backups_page_filters_by_host_guest_and_status_a_page_at_a_time(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host = alpha
    beta = add_host(admin, "beta", node_uri("node-beta.xml"))
    for minutes in range(103):
        add_backup(sessions, host, age=timedelta(minutes=minutes))
    failed = add_backup(sessions, host, guest_uuid=DB_1, guest_name="db-1", status="failed",
                        error="boom", age=timedelta(days=3))  # fmt: skip
    on_beta = add_backup(sessions, beta, guest_uuid=BUILD_1, guest_name="build-1")

    first = admin.get("/backups")
    second = admin.get("/backups", params={"page": 2})
    by_host = admin.get("/backups", params={"host": beta["id"]})
    by_status = admin.get("/backups", params={"status": "failed"}, headers=htmx_to("backup-table"))
    by_guest = admin.get("/backups", params={"guest": DB_1.upper()})
    by_name = admin.get("/backups", params={"guest": "ld-"})

    assert '<a href="/backups">Backups</a>' in first.text
    assert len(shown_rows(first.text)) == 100 and shown_rows(first.text)[0] == on_beta
    assert "105 backups · page 1 of 2" in parse(first.text).text
    assert 'href="?host=&amp;guest=&amp;status=&amp;page=2">older</a>' in first.text
    assert len(shown_rows(second.text)) == 5 and shown_rows(second.text)[-1] == failed
    assert shown_rows(by_host.text) == [on_beta]
    assert f'<option value="{beta["id"]}" selected>beta</option>' in by_host.text
    assert "<html" not in by_status.text and shown_rows(by_status.text) == [failed]
    assert shown_rows(by_guest.text) == [failed]
    assert by_name.status_code == 200 and shown_rows(by_name.text) == [on_beta]


def test_the_backup_page_shows_details_and_files_and_restore_forms_by_role(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    _admin, host = alpha
    files = [
        {"name": "domain.xml", "kind": "domain-xml", "target": None, "format": None,
         "size": 2100, "sha256": "ab" * 32},
        {"name": "disk-vda.qcow2", "kind": "disk", "target": "vda", "format": "qcow2",
         "size": 3 * GIB // 2, "sha256": "cd" * 32},
    ]  # fmt: skip
    good = add_backup(sessions, host, files=files, verified_at=utcnow())
    bad = add_backup(sessions, host, status="failed", error="the host went away")

    pages = {role: make_client(role=role).get(f"/backups/{good}").text
             for role in ("viewer", "operator", "admin")}  # fmt: skip
    failed = make_client(role="admin").get(f"/backups/{bad}").text

    viewed = parse(pages["viewer"])
    assert viewed.find("h1").text == "Backup of web-1"
    facts = {term: viewed.definition(term).text for term in ("Host", "Duration", "Size")}
    assert facts == {"Host": "alpha", "Duration": "1 min 15 s", "Size": "1.5 GiB"}
    file_rows = viewed.find_all("tr", data_file=True)
    assert [row.get("data-file") for row in file_rows] == ["domain.xml", "disk-vda.qcow2"]
    cells = [[cell.text for cell in row.find_all("td")] for row in file_rows]
    assert "2.1 KiB" in cells[0] and f"sha256 {'ab' * 32}" in cells[0]
    assert all(w in cells[1] for w in ("disk", "vda", "qcow2", "1.5 GiB", f"sha256 {'cd' * 32}"))
    assert "Operators and admins can restore" in pages["viewer"]
    assert 'id="restore-new-form"' not in pages["viewer"] and "Verify" not in pages["viewer"]
    assert 'id="restore-new-form"' in pages["operator"]
    assert 'value="web-1-restored"' in pages["operator"]
    assert 'id="restore-in-place-form"' not in pages["operator"]
    assert 'data-action="delete"' not in pages["operator"]
    assert (
        'id="restore-in-place-form"' in pages["admin"] and 'data-action="delete"' in pages["admin"]
    )
    assert "must be <strong>shut off</strong>" in pages["admin"]
    assert "hx-confirm=\"Replace web-1's definition and disks" in pages["admin"]
    assert 'data-error="backup">the host went away<' in failed
    assert "Only a succeeded backup can be restored; this one is failed." in failed
    assert 'id="restore-new-form"' not in failed


def test_a_restore_form_refused_shows_the_reason_next_to_its_field(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    admin, host = alpha
    # A backup with its manifest's digest recorded, as this version takes them.
    backup = add_backup(sessions, host, files=[], manifest_sha256="00" * 32)
    operator = make_client(role="operator")
    url = f"/backups/{backup}/restore"
    new = {"mode": "new", "host_id": str(host["id"]), "pool": ""}

    bad_name = operator.post(url, data={**new, "name": "-rf"}, headers=HTMX)
    taken = operator.post(url, data={**new, "name": "web-2"}, headers=HTMX)
    no_pool = operator.post(url, data={**new, "name": "web-1-copy", "pool": "nope"}, headers=HTMX)
    no_host = operator.post(url, data={**new, "name": "web-1-copy", "host_id": "x"}, headers=HTMX)
    not_admin = operator.post(url, data={"mode": "in_place"}, headers=HTMX)
    running = admin.post(url, data={"mode": "in_place"}, headers=HTMX)
    # The refused form loads its pools again: the pool typed stays chosen, and marked.
    pools_url = parse(no_pool.text).find(id="restore-pool").get("hx-get")
    pools = parse(operator.get(pools_url, headers=HTMX).text).find("select")

    assert bad_name.status_code == 422
    reason = parse(bad_name.text).find(class_="field-error", data_field="name").text
    assert reason.startswith("1-64 letters") and "not starting with" in reason
    assert 'value="-rf"' in bad_name.text and 'aria-invalid="true"' in bad_name.text
    assert taken.status_code == 409
    assert 'data-field="name">alpha already has a guest named web-2<' in taken.text
    assert (
        no_pool.status_code == 422
        and 'data-field="pool">alpha has no active pool nope<' in no_pool.text
    )
    assert 'value="nope"' in no_pool.text
    assert pools.find("option", selected=True).get("value") == "nope"
    assert pools.get("aria-invalid") == "true"
    assert no_host.status_code == 422 and 'data-field="host_id">choose a host' in no_host.text
    assert not_admin.status_code == 403
    assert running.status_code == 409
    assert (
        'data-error="restore">web-1 is running; shut it off to restore it in place<' in running.text
    )


def test_the_restore_form_offers_the_chosen_hosts_active_pools(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    admin, host = alpha
    storage = add_host(admin, "storage", node_uri("node-storage.xml"))
    backup = add_backup(sessions, host, files=[], manifest_sha256="00" * 32)
    # One app throughout: each app's connection to a test-driver host has its own pools.
    url = f"/backups/{backup}/restore/pools"

    def offered(response) -> list[str]:
        assert response.status_code == 200, response.text
        return [o.get("value") for o in parse(response.text).find("select").find_all("option")]

    # The page loads the choice for the backup's host when it opens, and again on a change.
    form = parse(admin.get(f"/backups/{backup}").text).find(id="restore-pool")
    on_alpha = admin.get(url, params={"host_id": host["id"]}, headers=HTMX)
    on_storage = admin.get(url, params={"host_id": storage["id"], "pool": "images"})
    admin.post(f"/api/v1/hosts/{storage['id']}/pools/images/stop").raise_for_status()
    stopped = admin.get(url, params={"host_id": storage["id"]})
    refused = admin.post(
        f"/api/v1/backups/{backup}/restore",
        json={"mode": "new", "name": "web-1-copy", "host_id": storage["id"], "pool": "images"},
    )
    viewer = make_client(role="viewer").get(url, params={"host_id": storage["id"]})

    assert form.get("hx-get") == f"/backups/{backup}/restore/pools?host_id={host['id']}&pool="
    assert offered(on_alpha) == [""] and "no active directory pool" in on_alpha.text
    assert offered(on_storage) == ["", "images"]
    assert parse(on_storage.text).find("option", selected=True).get("value") == "images"
    assert parse(on_storage.text).find("option", value="images").text.endswith(" GiB free)")
    assert offered(stopped) == [""]  # a stopped pool is not offered
    assert refused.status_code == 422 and refused.json()["field"] == "pool"
    assert viewer.status_code == 403


def test_a_restore_shows_its_progress_then_how_it_ended(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    _admin, host = alpha
    missing = {"name": "disk-vda.qcow2", "kind": "disk", "target": "vda", "format": "qcow2",
               "size": 1024, "sha256": "00" * 32}  # fmt: skip
    backup = add_backup(sessions, host, files=[missing])
    operator = make_client(role="operator")

    started = operator.post(
        f"/backups/{backup}/restore",
        data={"mode": "new", "name": "web-1-copy", "host_id": str(host["id"])},
        headers=htmx_to("backup-restore"),
    )
    job = int(parse(started.text).find(data_job=True).get("data-job"))
    poll = f"/backups/{backup}/jobs/{job}"
    deadline = time.monotonic() + 10
    while True:
        answer = operator.get(poll, headers=htmx_to(f"job-{job}"))
        if "HX-Retarget" in answer.headers or time.monotonic() > deadline:
            break
        assert answer.text.lstrip().startswith(f'<div id="job-{job}"')
        time.sleep(0.1)
    reloaded = operator.get(poll)

    assert started.status_code == 202 and toast(started) == "restore of web-1 started"
    assert started.headers["HX-Push-Url"] == poll
    assert f'hx-get="{poll}"' in started.text
    assert 'id="restore-new-form"' not in started.text
    assert answer.headers["HX-Retarget"] == "#backup-restore"
    message = (
        "the backup is corrupt (domain.xml (missing), disk-vda.qcow2 (missing)); "
        "nothing was restored"
    )
    assert toast(answer) == f"restore of web-1 failed: {message}"
    assert 'data-status="failed"' in answer.text and escape(message) in answer.text
    assert f'hx-get="{poll}"' not in answer.text
    assert "Only a succeeded backup can be restored; this one is corrupt." in answer.text
    assert "<html" in reloaded.text and escape(message) in reloaded.text


def test_names_and_errors_with_markup_are_shown_as_text(
    alpha, make_client, sessions: sessionmaker[Session]
) -> None:
    _admin, host = alpha
    name = "<script>alert(1)</script>"
    error = '"><img src=x onerror=alert(2)>'
    files = [{"name": "<b>f</b>", "kind": "disk", "target": "<i>", "format": "qcow2",
              "size": 1, "sha256": "<u>"}]  # fmt: skip
    backup = add_backup(sessions, host, guest_name=name, status="succeeded", error=error,
                        files=files, started_by="<em>ops</em>")  # fmt: skip
    operator = make_client(role="operator")

    pages = [
        operator.get("/backups").text,
        operator.get(f"/backups/{backup}").text,
        panel(operator).text,
    ]

    for page in pages:
        for raw in (name, error, "<b>f</b>", "<em>ops</em>"):
            assert raw not in page
    assert escape(name) in pages[0] and escape(error) in pages[0]
    assert f'value="{escape(name)}-restored"' in pages[1]
    assert escape("<b>f</b>") in pages[1] and escape("<em>ops</em>") in pages[1]
    assert escape(error) in pages[2] and escape("<em>ops</em>") in pages[2]


def test_a_long_error_shows_its_start_and_the_rest_behind_show_more(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host = alpha
    error = "internal error: qemu unexpectedly closed the monitor: " + " ".join(["MSR 0x10a"] * 40)
    add_backup(sessions, host, status="failed", error=error)
    add_backup(sessions, host, status="failed", error="disk full", age=timedelta(hours=1))

    for page in (admin.get("/backups").text, panel(admin).text):
        cell = parse(page).find("details", class_="more")
        assert cell.find("summary").text.startswith(error[:120] + "… show more")
        assert cell.find("span", class_="more-rest").text == error
        assert len(parse(page).find_all("details", class_="more")) == 1  # not the short one
        assert "disk full" in page


def test_a_host_id_too_large_for_the_database_is_refused_naming_the_field(
    alpha, sessions: sessionmaker[Session]
) -> None:
    admin, host = alpha
    backup = add_backup(sessions, host, files=[])
    too_large = "99999999999999999999"

    listed = admin.get("/backups", params={"host": too_large})
    restored = admin.post(
        f"/backups/{backup}/restore",
        data={"mode": "new", "host_id": too_large, "name": "web-1-copy", "pool": ""},
        headers=HTMX,
    )

    assert listed.status_code == 422 and "host: choose a host from the list" in listed.text
    assert restored.status_code == 422
    assert 'data-field="host_id">choose a host from the list<' in restored.text
