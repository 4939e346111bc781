"""The backups overview (page and API): each guest's last successful backup and its age, the
guests with none or whose last one failed, each guest's next scheduled run, 100 a page from the
same few queries; the history's kind, parent and size on disk; and the figures /metrics exports
per guest."""

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import BackupSchedule, ScheduleRun
from app.models.base import utcnow
from app.services.backups.overview import overview
from app.services.backups.schedules import ScheduleIn, create_schedule, jitter
from tests.backups import DB_1, WEB_1, add_backup
from tests.conftest import add_host, node_uri
from tests.htmx import htmx_to
from tests.markup import parse
from tests.nodes import add_domain, new_node


def overview_rows(page: str) -> dict[str, dict]:
    """The guests the overview lists: name -> its cells and what needs attention."""
    rows = {}
    for row in parse(page).find_all("tr", data_guest=True):
        cells = [cell.text.strip() for cell in row.find_all("td")]
        rows[cells[0]] = {"cells": cells, "attention": row.get("data-attention")}
    return rows


@pytest.fixture
def watched(make_client, sessions: sessionmaker[Session]) -> tuple[TestClient, dict]:
    """host alpha: web-1 backed up, then failed; db-1 backed up; the others never."""
    viewer = make_client(role="viewer")
    host = add_host(make_client(), "alpha", node_uri("node-alpha.xml"))
    add_backup(sessions, host, age=timedelta(days=2))
    add_backup(
        sessions, host, status="failed", error="writing disk-vda.qcow2: No space left on device"
    )
    add_backup(sessions, host, guest_uuid=DB_1, guest_name="db-1", age=timedelta(hours=3))
    add_backup(sessions, host, guest_uuid=DB_1, guest_name="db-1", status="running")
    return viewer, host


def test_the_overview_shows_each_guests_last_success_its_age_and_who_needs_a_look(
    watched,
) -> None:
    viewer, _host = watched

    page = viewer.get("/backups/overview")
    rows = overview_rows(page.text)
    none = overview_rows(viewer.get("/backups/overview", params={"show": "none"}).text)
    failed = viewer.get(
        "/backups/overview", params={"show": "failed"}, headers=htmx_to("backup-overview")
    )
    bad = viewer.get("/backups/overview", params={"show": "sideways"})

    assert page.status_code == 200
    assert '<a href="/backups/overview">Backup overview</a>' in page.text  # in the navigation
    assert rows["web-1"]["attention"] == "failed"
    assert rows["web-1"]["cells"][3] == "2 d ago"
    assert rows["web-1"]["cells"][5] == "writing disk-vda.qcow2: No space left on device"
    assert rows["db-1"]["attention"] is None and rows["db-1"]["cells"][3] == "1 d ago"
    assert rows["db-1"]["cells"][4] == "succeeded"  # the running one has not ended
    assert rows["web-2"]["attention"] == "none"
    assert rows["web-2"]["cells"][2:5] == ["none", "never", "—"]
    assert list(none) == sorted(set(rows) - {"web-1", "db-1"})
    assert failed.status_code == 200 and "<html" not in failed.text
    assert list(overview_rows(failed.text)) == ["web-1"]
    assert f"{len(rows) - 2} with no successful backup" in page.text
    assert "1 whose last backup failed" in page.text
    assert bad.status_code == 422
    assert (
        parse(bad.text)
        .find(class_="field-error", data_field="show")
        .text.startswith("show: one of")
    )


def test_the_api_gives_the_same_overview_and_refuses_an_unknown_filter(watched) -> None:
    viewer, host = watched

    answer = viewer.get("/api/v1/backups/overview", params={"show": "failed"}).json()
    refused = viewer.get("/api/v1/backups/overview", params={"show": "all of them"})

    assert answer["total"] == 1 and answer["totals"]["last_failed"] == 1
    (web_1,) = answer["items"]
    assert (web_1["uuid"], web_1["host_name"], web_1["last_status"]) == (
        WEB_1,
        host["name"],
        "failed",
    )
    assert web_1["last_failed"] is True and web_1["last_success_id"] is not None
    assert refused.status_code == 422 and refused.json()["field"] == "show"


def next_daily(now: datetime, hours_ahead: int) -> tuple[str, datetime]:
    """A daily time (HH:MM, UTC) some hours after now, and its first slot after now."""
    slot = (now + timedelta(hours=hours_ahead)).replace(second=0, microsecond=0)
    return slot.strftime("%H:%M"), slot


def add_schedule(sessions: sessionmaker[Session], **asked) -> int:
    """A daily schedule keeping 3 backups, saved by the service (as the API does, without the
    audit record that would outlive the test); its id."""
    with transaction(sessions) as session:
        made = create_schedule(
            session, ScheduleIn(frequency="daily", keep_last=3, **asked), created_by="tests"
        )
        return made.id


def test_the_overview_shows_each_covered_guests_next_scheduled_run(
    watched, make_client, sessions: sessionmaker[Session]
) -> None:
    viewer, _alpha = watched
    beta = add_host(make_client(), "beta", node_uri("node-beta.xml"))
    now = datetime.now(UTC)
    web_1_time, web_1_slot = next_daily(now, 3)
    beta_time, beta_slot = next_daily(now, 5)
    add_schedule(sessions, name="web-1 nightly", scope="guest", guest_uuid=WEB_1, time=web_1_time)
    add_schedule(sessions, name="beta", scope="host", host_id=beta["id"], time=beta_time)
    # an earlier slot for every guest, but switched off: it covers nobody
    add_schedule(sessions, name="off", scope="all", time=web_1_time, enabled=False)

    rows = overview_rows(viewer.get("/backups/overview").text)
    api = {item["name"]: item for item in viewer.get("/api/v1/backups/overview").json()["items"]}

    assert rows["web-1"]["cells"][6] == f"{web_1_slot:%Y-%m-%d %H:%M:%S} web-1 nightly"
    assert rows["build-1"]["cells"][6] == f"{beta_slot:%Y-%m-%d %H:%M:%S} beta"
    assert rows["web-9"]["cells"][6] == rows["build-1"]["cells"][6]
    assert rows["web-2"]["cells"][6] == "not scheduled"
    assert rows["db-1"]["cells"][6] == "not scheduled"
    assert datetime.fromisoformat(api["web-1"]["next_run_at"]) == web_1_slot
    assert api["web-1"]["next_run_schedule"] == "web-1 nightly"
    assert datetime.fromisoformat(api["build-1"]["next_run_at"]) == beta_slot
    assert (api["web-2"]["next_run_at"], api["web-2"]["next_run_schedule"]) == (None, None)


def test_a_guests_next_run_is_its_own_slot_plus_its_jitter_and_a_waiting_run_comes_first(
    make_client, sessions: sessionmaker[Session]
) -> None:
    admin = make_client()
    alpha = add_host(admin, "alpha", node_uri("node-alpha.xml"))
    now = datetime.now(UTC)
    time_of_day, slot = next_daily(now, 2)
    schedule_id = add_schedule(
        sessions, name="spread", scope="all", time=time_of_day, jitter_minutes=90
    )
    with sessions() as session:
        schedule = session.get(BackupSchedule, schedule_id)
        offsets = {uuid: jitter(schedule, uuid) for uuid in (WEB_1, DB_1)}
    with transaction(sessions) as session:  # an earlier slot's run still waits for its host
        session.add(ScheduleRun(
            schedule_id=schedule_id, slot=now - timedelta(hours=1),
            due_at=now - timedelta(minutes=20), guest_uuid=DB_1, guest_name="db-1",
            host_id=alpha["id"], status="pending", claimed_by="elsewhere",
        ))  # fmt: skip

    api = {i["uuid"]: i for i in admin.get("/api/v1/backups/overview").json()["items"]}

    assert offsets[WEB_1] != offsets[DB_1]  # (else the test shows nothing)
    assert datetime.fromisoformat(api[WEB_1]["next_run_at"]) == slot + offsets[WEB_1]
    assert datetime.fromisoformat(api[DB_1]["next_run_at"]) == now - timedelta(minutes=20)


def test_a_page_holds_100_guests_and_costs_the_same_few_queries_however_many(
    make_client, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    node = new_node(64 * 1024 * 1024)
    for number in range(150):
        add_domain(node, f"vm-{number:03}", f"d0000000-0000-4000-8000-{number:012}", running=False)
    ET.ElementTree(node).write(tmp_path / "many.xml", encoding="unicode")
    client = make_client(test_driver_dir=str(tmp_path))
    host = add_host(client, "many", f"test://{tmp_path / 'many.xml'}")
    for number in range(0, 150, 3):
        add_backup(
            sessions,
            host,
            guest_uuid=f"d0000000-0000-4000-8000-{number:012}",
            guest_name=f"vm-{number:03}",
        )
    statements = []
    with sessions() as session:
        session.execute(select(1))  # connected before counting
        event.listen(
            session.get_bind(), "before_cursor_execute", lambda *a: statements.append(a[2])
        )
        first, total, totals = overview(session, limit=100)
        second, _, _ = overview(session, limit=100, offset=100)

    pages = [
        overview_rows(client.get("/backups/overview", params={"page": p}).text) for p in (1, 2)
    ]

    assert total == 150 and (totals.no_backup, totals.last_failed) == (100, 0)
    assert len(first) == 100 and len(second) == 50
    # the totals, one page's rows, its waiting scheduled runs and the enabled schedules, twice
    assert len(statements) == 8
    assert list(pages[0])[:2] == ["vm-000", "vm-001"] and len(pages[0]) == 100
    assert list(pages[1])[-1] == "vm-149" and len(pages[1]) == 50


def test_the_history_lists_the_kind_the_parent_and_the_size_on_disk(
    make_client, sessions: sessionmaker[Session]
) -> None:
    client = make_client()
    host = add_host(client, "alpha", node_uri("node-alpha.xml"))
    root = Path(client.app.state.settings.backup_dir)
    path = f"alpha/{WEB_1}/t"
    (root / path).mkdir(parents=True)
    (root / path / "disk-vda.qcow2").write_bytes(b"x" * 100_000)
    (root / path / "manifest.json").write_bytes(b"{}")
    entry = {
        "name": "disk-vda.qcow2",
        "kind": "disk",
        "target": "vda",
        "format": "qcow2",
        "size": 100_000,
        "sha256": "0" * 64,
    }
    kept = add_backup(sessions, host, path=path, files=[entry])
    gone = add_backup(sessions, host, status="failed", error="boom")

    page = parse(client.get("/backups").text)
    head = [th.text for th in page.find("thead").find_all("th")]
    row = page.find("tr", data_backup=str(kept))
    cells = {name: cell for name, cell in zip(head, row.find_all("td"), strict=True)}
    failed = dict(zip(head, page.find("tr", data_backup=str(gone)).find_all("td"), strict=True))
    used = sum(
        (root / path / name).stat().st_blocks * 512 for name in ("disk-vda.qcow2", "manifest.json")
    )

    assert cells["Kind"].text == "Full" and cells["Parent"].text == "—"
    assert int(cells["On disk"].get("data-on-disk")) == used
    assert failed["On disk"].text == "—" and failed["Kind"].text == "Full"
    api = client.get(f"/api/v1/backups/{kept}").json()
    assert (api["kind"], api["parent_id"]) == ("full", None)


def test_metrics_export_each_guests_last_success_and_failures(watched, make_client) -> None:
    _viewer, _host = watched
    client = make_client()

    lines = client.get("/metrics").text.splitlines()
    backups = {
        b["guest_name"] + "/" + b["status"]: b
        for b in client.get("/api/v1/backups").json()["items"]
    }
    web_1_ok = backups["web-1/succeeded"]

    last = [
        line for line in lines if line.startswith("virtdeck_backup_last_success_timestamp_seconds{")
    ]
    assert "# TYPE virtdeck_backup_last_success_timestamp_seconds gauge" in lines
    assert (
        f'virtdeck_backup_last_success_timestamp_seconds{{guest="web-1",uuid="{WEB_1}"}}'
        in "\n".join(last)
    )
    stamp = float(next(line for line in last if WEB_1 in line).split()[-1])
    assert stamp == pytest.approx(
        datetime.fromisoformat(web_1_ok["finished_at"]).timestamp(), abs=0.01
    )
    assert len(last) == 2  # web-1 and db-1; the guests with none are left out
    assert f'virtdeck_backup_failures{{guest="web-1",status="failed",uuid="{WEB_1}"}} 1' in lines
    assert f'virtdeck_backup_failures{{guest="db-1",status="failed",uuid="{DB_1}"}} 0' in lines
    assert f'virtdeck_backup_failures{{guest="web-1",status="corrupt",uuid="{WEB_1}"}} 0' in lines
    assert 'virtdeck_guests_backup_attention{reason="last_failed"} 1' in lines
    assert any(
        line.startswith('virtdeck_guests_backup_attention{reason="none"} ') for line in lines
    )
    assert utcnow().timestamp() - stamp > 86400
