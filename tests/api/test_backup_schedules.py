"""Backup schedules through the API and the pages, on test-driver hosts and both databases:
admins keep them (audited), refusals name the field, the retention preview lists exactly what
would go, a slot is claimed by one instance only, and runs over a host's limit wait."""

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import transaction
from app.models import Backup, ScheduleRun
from app.services.backups.scheduler import claim_slots, run_schedules
from tests.conftest import add_host, make_user, node_uri

WEB_1 = "a1000000-0000-4000-8000-000000000001"
ALPHA_GUESTS = {"web-1", "web-2", "db-1"}


@pytest.fixture
def alpha(client: TestClient) -> dict:
    return add_host(client, "alpha", node_uri("node-alpha.xml"))


def body(**changes) -> dict:
    """A valid schedule: alpha's guests daily at 02:30 UTC, keeping the last 7."""
    return {"name": "nightly", "scope": "all", "frequency": "daily", "time": "02:30",
            "keep_last": 7, **changes}  # fmt: skip


def test_admins_keep_schedules_others_read_them_and_each_change_is_audited(
    client: TestClient, alpha: dict, database_url: str
) -> None:
    token = make_user(database_url, "schedule-operator", "operator")
    operator = TestClient(client.app, headers={"Authorization": f"Bearer {token}"})
    made = client.post("/api/v1/backup-schedules", json=body(scope="host", host_id=alpha["id"]))
    assert made.status_code == 201, made.text
    saved = made.json()
    changed = client.put(
        f"/api/v1/backup-schedules/{saved['id']}",
        json=body(name="weekly", frequency="weekly", weekday=6, time="23:15:30",
                  scope="guest", guest_uuid=WEB_1, jitter_minutes=20, max_parallel=2,
                  keep_last=0, keep_weekly=4, keep_monthly=6),
    )  # fmt: skip
    listed = operator.get("/api/v1/backup-schedules")
    by_operator = operator.post("/api/v1/backup-schedules", json=body(name="mine"))
    removed = client.delete(f"/api/v1/backup-schedules/{saved['id']}")

    assert (saved["scope"], saved["host_id"], saved["time"], saved["runs"]) == (
        "host", alpha["id"], "02:30", [],
    )  # fmt: skip
    assert saved["next_run"].endswith("02:30:00Z")
    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in ("name", "scope", "guest_uuid", "host_id", "weekday",
                                           "time", "jitter_minutes", "max_parallel",
                                           "keep_weekly")} == {
        "name": "weekly", "scope": "guest", "guest_uuid": WEB_1, "host_id": None, "weekday": 6,
        "time": "23:15:30", "jitter_minutes": 20, "max_parallel": 2, "keep_weekly": 4,
    }  # fmt: skip
    assert datetime.fromisoformat(changed.json()["next_run"]).weekday() == 6
    assert [s["name"] for s in listed.json()] == ["weekly"]
    assert by_operator.status_code == 403
    assert removed.status_code == 204
    assert client.get(f"/api/v1/backup-schedules/{saved['id']}").status_code == 404
    audit = client.get("/api/v1/audit", params={"action": "backup_schedule.", "result": "ok"})
    assert [(e["action"], e["target"]) for e in reversed(audit.json()["items"])] == [
        ("backup_schedule.create", f"backup_schedule:{saved['id']} (nightly)"),
        ("backup_schedule.update", f"backup_schedule:{saved['id']} (weekly)"),
        ("backup_schedule.delete", f"backup_schedule:{saved['id']} (weekly)"),
    ]


BAD = [
    ({"time": "25:00"}, "time"),
    ({"time": "2:30 pm"}, "time"),
    ({"scope": "guest", "guest_uuid": "b0000000-0000-4000-8000-000000000009"}, "guest_uuid"),
    ({"scope": "host", "host_id": 987654}, "host_id"),
    ({"scope": "host"}, "host_id"),
    ({"scope": "tag"}, "scope"),
    ({"frequency": "hourly"}, "frequency"),
    ({"frequency": "weekly"}, "weekday"),
    ({"frequency": "weekly", "weekday": 7}, "weekday"),
    ({"keep_daily": -1}, "keep_daily"),
    ({"keep_last": 0}, "keep_last"),
    ({"jitter_minutes": -5}, "jitter_minutes"),
    ({"max_parallel": 0}, "max_parallel"),
    ({"name": " "}, "name"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_a_bad_schedule_is_refused_naming_the_field(
    client: TestClient, alpha: dict, change: dict, field: str
) -> None:
    refused = client.post("/api/v1/backup-schedules", json=body(**change))

    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == field
    assert refused.json()["detail"].startswith(f"{field}: ")
    assert client.get("/api/v1/backup-schedules").json() == []


def test_a_taken_name_is_a_conflict(client: TestClient, alpha: dict) -> None:
    assert client.post("/api/v1/backup-schedules", json=body()).status_code == 201

    again = client.post("/api/v1/backup-schedules", json=body(time="03:00"))

    assert again.status_code == 409 and again.json()["field"] == "name"


def add_backups(
    sessions, uuid: str, *times: str, status: str = "succeeded", host_id: int = 1
) -> list[int]:
    """Backup records of the guest on alpha started at these UTC times; their ids."""
    with transaction(sessions) as session:
        rows = [
            Backup(host_id=host_id, host_name="alpha", guest_uuid=uuid, guest_name="web-1",
                   started_at=datetime.fromisoformat(t).replace(tzinfo=UTC), status=status,
                   path=f"alpha/{uuid}/{n}", files=[])
            for n, t in enumerate(times)
        ]  # fmt: skip
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def test_the_preview_lists_exactly_the_backups_the_policy_would_remove(
    client: TestClient, alpha: dict, sessions
) -> None:
    ids = add_backups(sessions, WEB_1, "2026-02-15 02:00", "2026-02-28 02:00", "2026-03-05 02:00",
                      "2026-03-09 01:00", "2026-03-09 13:00", "2026-03-10 13:00")  # fmt: skip
    policy = {"keep_last": 1, "keep_daily": 2, "keep_monthly": 1}

    shown = client.get("/api/v1/backup-schedules/preview",
                       params={"scope": "guest", "guest_uuid": WEB_1, **policy})  # fmt: skip
    page = client.get("/backup-schedules/preview",
                      params={"scope": "host", "host_id": alpha["id"], **policy})  # fmt: skip
    refused = client.get("/api/v1/backup-schedules/preview", params={"keep_weekly": -2})

    assert shown.status_code == 200, shown.text
    (guest,) = shown.json()["guests"]
    assert shown.json()["removed_count"] == 2
    # Kept: 10 March (last), 9 March 13:00 and 5 March (daily), 28 February (monthly: March is
    # covered); removed: 9 March 01:00 (its day is covered), 15 February (February is covered).
    assert [(b["backup_id"], b["reason"]) for b in guest["kept"]] == [
        (ids[5], "last"), (ids[4], "daily"), (ids[2], "daily"), (ids[1], "monthly"),
    ]  # fmt: skip
    assert [b["backup_id"] for b in guest["removed"]] == [ids[3], ids[0]]
    assert "Would remove 2 backups" in page.text
    assert page.text.count('class="removed"') == 2
    assert refused.status_code == 422 and refused.json()["field"] == "keep_weekly"


def test_the_page_lists_schedules_and_a_refused_form_shows_the_reason_by_its_field(
    client: TestClient, alpha: dict
) -> None:
    client.post("/api/v1/backup-schedules", json=body(scope="host", host_id=alpha["id"]))
    form = {"name": "bad", "scope": "all", "frequency": "daily", "time": "26:00",
            "max_parallel": "1", "keep_last": "3", "enabled": "true"}  # fmt: skip

    page = client.get("/backup-schedules")
    refused = client.post("/backup-schedules", data=form, headers={"HX-Request": "true"})
    saved = client.post("/backup-schedules", data={**form, "time": "04:00"},
                        headers={"HX-Request": "true"})  # fmt: skip

    assert "nightly" in page.text and "host <a" in page.text and "daily at 02:30" in page.text
    assert refused.status_code == 422
    assert 'data-field="time"' in refused.text
    assert saved.status_code == 204 and saved.headers["HX-Redirect"].startswith(
        "/backup-schedules/"
    )
    shown = client.get(saved.headers["HX-Redirect"])
    assert "Schedule bad" in shown.text and "daily at 04:00" in shown.text


def runs(sessions) -> list[tuple[str, str, str | None]]:
    """Every run: guest name, status, error."""
    with sessions() as session:
        return sorted(
            (r.guest_name, r.status, r.error) for r in session.scalars(select(ScheduleRun))
        )


def test_a_slot_is_claimed_once_and_runs_over_the_hosts_limit_wait(
    client: TestClient, alpha: dict, sessions
) -> None:
    asked = body(scope="host", host_id=alpha["id"], max_parallel=1)
    made = client.post("/api/v1/backup-schedules", json=asked).json()
    slot = datetime.fromisoformat(made["next_run"])
    (busy,) = add_backups(sessions, WEB_1, "2026-03-01 02:00", status="running",
                          host_id=alpha["id"])  # fmt: skip
    link, me = client.app.state.sync, client.app.state.instance  # it holds alpha's lease
    before = claim_slots(sessions, instance=me, now=slot - timedelta(seconds=1))

    won = [claim_slots(sessions, instance=name, now=slot + timedelta(seconds=1))
           for name in (me, "another")]  # fmt: skip
    waiting = run_schedules(sessions, link, link, client.app.state.settings, instance=me,
                            now=slot + timedelta(seconds=2))  # fmt: skip
    pending = runs(sessions)
    with transaction(sessions) as session:
        session.get(Backup, busy).status = "failed"
    run_schedules(sessions, link, link, client.app.state.settings, instance="another",
                  now=slot + timedelta(seconds=3))  # fmt: skip
    elsewhere = runs(sessions)
    run_schedules(sessions, link, link, client.app.state.settings, instance=me,
                  now=slot + timedelta(seconds=3))  # fmt: skip

    assert (before, won, waiting) == (0, [1, 0], 0)
    assert pending == sorted((name, "pending", None) for name in ALPHA_GUESTS)
    assert elsewhere == pending  # an instance not holding alpha's lease leaves its runs alone
    # Started one at a time: alpha's disks are outside any pool, so each start is refused.
    finished = runs(sessions)
    assert {name for name, _, _ in finished} == ALPHA_GUESTS
    assert {status for _, status, _ in finished} == {"failed"}
    assert all("not a volume of an active storage pool" in error for _, _, error in finished)
    shown = client.get(f"/api/v1/backup-schedules/{made['id']}").json()
    assert len(shown["runs"]) == 3 and shown["last_slot"] == made["next_run"]
