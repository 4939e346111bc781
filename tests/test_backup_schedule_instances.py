"""Backup schedules run by real `virtdeck serve` processes backing up a guest of the real
libvirtd: with two instances on one PostgreSQL database a slot runs once, and a slot that passed
while the server was stopped runs once after it starts again; a run left `starting` by an instance
that died between taking it and recording its backup is taken over: started once if its backup
never began, else linked to that backup (the dead instance's runs are written into the database
as it would have left them). Schedules are a few seconds ahead and the workers look every half
second."""

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_session_factory, transaction
from app.models import ScheduleRun
from app.services.backups.scheduler import STARTING_LEASE
from tests.databases import throwaway_postgresql
from tests.libvirtd import IMAGES, SYSTEM_URI, ThrowawayGuest, throwaway_guest
from tests.polling import until
from tests.serve import Server, running_server
from tests.storage import throwaway_pool

TICK = "0.5"
pytestmark = pytest.mark.libvirtd


@contextmanager
def guest_in_pool(tmp_path: Path) -> Iterator[ThrowawayGuest]:
    """A shut-off guest whose 16 MiB disk is a volume of a pool of its own."""
    with throwaway_pool() as pool, throwaway_guest(tmp_path, directory=IMAGES / pool) as guest:
        yield guest


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An instance with no default host, backups under tmp_path and a quick scheduler."""
    return {"VIRTDECK_DEFAULT_HOST_URI": "", "VIRTDECK_SCHEDULE_TICK": TICK,
            "VIRTDECK_BACKUP_DIR": str(tmp_path / "backups"), **extra}  # fmt: skip


def schedule_soon(server: Server, guest_uuid: str, seconds: float) -> tuple[int, datetime]:
    """A daily schedule of the guest due `seconds` from now; its id and slot."""
    slot = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
    made = server.api("POST", "/backup-schedules", json={
        "name": "soon", "scope": "guest", "guest_uuid": guest_uuid, "frequency": "daily",
        "time": slot.strftime("%H:%M:%S"), "keep_last": 3,
    })  # fmt: skip
    assert made.status_code == 201, made.text
    return made.json()["id"], slot


def runs(server: Server, schedule_id: int) -> list[tuple[str, str]]:
    """The schedule's runs as the API lists them: (slot, status)."""
    shown = server.api("GET", f"/backup-schedules/{schedule_id}")
    assert shown.status_code == 200, shown.text
    return [(r["slot"], r["status"]) for r in shown.json()["runs"]]


def backups(server: Server, guest_uuid: str) -> list[tuple[str, str]]:
    """The guest's backups: (status, who started it)."""
    listed = server.api("GET", "/backups", params={"guest_uuid": guest_uuid}).json()["items"]
    return [(b["status"], b["started_by"]) for b in listed]


def stored_runs(url: str) -> int:
    """How many scheduled runs the database holds."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return session.scalar(select(func.count()).select_from(ScheduleRun)) or 0
    finally:
        engine.dispose()


def shown(slot: datetime) -> str:
    """A slot as the API shows it."""
    return slot.isoformat().replace("+00:00", "Z")


def test_a_schedule_with_two_instances_on_one_postgresql_runs_once(tmp_path: Path) -> None:
    with guest_in_pool(tmp_path) as guest, throwaway_postgresql() as url:
        env = env_for(tmp_path, VIRTDECK_DATABASE_URL=url)
        with (
            running_server(tmp_path / "a", env) as a,
            running_server(tmp_path / "b", env, admin=None) as started_b,
        ):
            b = dataclasses.replace(started_b, token=a.token)
            a.add_host("local", SYSTEM_URI)
            schedule_id, slot = schedule_soon(a, guest.uuid, 3)
            until(lambda: [s for s, _ in backups(b, guest.uuid)] == ["succeeded"], timeout=15,
                  what="the scheduled backup")  # fmt: skip
            time.sleep(4 * float(TICK))  # a few more looks by both instances

            assert runs(a, schedule_id) == [(shown(slot), "started")]
            assert runs(b, schedule_id) == runs(a, schedule_id)
            assert backups(a, guest.uuid) == [("succeeded", "schedule soon")]


def test_a_slot_missed_while_the_server_was_stopped_runs_once_after_it_starts(
    tmp_path: Path,
) -> None:
    with guest_in_pool(tmp_path) as guest:
        env = env_for(tmp_path)
        with running_server(tmp_path / "web", env) as first:
            first.add_host("local", SYSTEM_URI)
            schedule_id, slot = schedule_soon(first, guest.uuid, 6)
        assert datetime.now(UTC) < slot, "the server took too long to stop"
        until(lambda: datetime.now(UTC) > slot + timedelta(seconds=1), timeout=10)
        before = stored_runs(f"sqlite:///{tmp_path / 'web' / 'v.db'}")

        with running_server(tmp_path / "web", env, admin=None) as started:
            again = dataclasses.replace(started, token=first.token)
            until(lambda: [s for s, _ in backups(again, guest.uuid)] == ["succeeded"],
                  timeout=15, what="the missed slot's backup")  # fmt: skip
            time.sleep(4 * float(TICK))

            assert before == 0  # nothing ran while it was stopped
            assert runs(again, schedule_id) == [(shown(slot), "started")]
            assert backups(again, guest.uuid) == [("succeeded", "schedule soon")]


@contextmanager
def database(server_dir: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on the server's SQLite database."""
    engine = make_engine(f"sqlite:///{server_dir / 'v.db'}")
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def left_starting(
    sessions: sessionmaker[Session], run_id: int | None = None, **values: object
) -> int:
    """Leave a run `starting` as a dead instance would: taken longer ago than the lease."""
    taken_at = datetime.now(UTC) - STARTING_LEASE - timedelta(minutes=1)
    with transaction(sessions) as session:
        run = session.get(ScheduleRun, run_id) if run_id else ScheduleRun(**values)
        run.status, run.started_at, run.backup_id, run.claimed_by = (
            "starting",
            taken_at,
            None,
            "dead",
        )
        session.add(run)
        session.flush()
        return run.id


def stored_run(sessions: sessionmaker[Session], run_id: int) -> tuple[str, int | None, str]:
    """The run's status, backup and the instance that holds it."""
    with sessions() as session:
        run = session.scalars(select(ScheduleRun).where(ScheduleRun.id == run_id)).one()
        return run.status, run.backup_id, run.claimed_by


def test_a_run_its_dead_instance_left_starting_is_started_once_and_only_once(
    tmp_path: Path,
) -> None:
    with (
        guest_in_pool(tmp_path) as guest,
        running_server(tmp_path / "web", env_for(tmp_path)) as server,
        database(tmp_path / "web") as sessions,
    ):
        host_id = server.add_host("local", SYSTEM_URI)
        # its time passed an hour ago: its first slot is tomorrow, today's it never claims itself
        schedule_id, slot = schedule_soon(server, guest.uuid, -3600)
        run_id = left_starting(
            sessions, schedule_id=schedule_id, slot=slot, due_at=slot,
            guest_uuid=guest.uuid, guest_name=guest.name, host_id=host_id,
        )  # fmt: skip

        until(lambda: [s for s, _ in backups(server, guest.uuid)] == ["succeeded"],
              timeout=30, what="the taken-over run's backup")  # fmt: skip
        until(lambda: stored_run(sessions, run_id)[0] == "started", timeout=10)
        status, backup_id, holder = stored_run(sessions, run_id)
        (listed,) = server.api("GET", "/backups", params={"guest_uuid": guest.uuid}).json()["items"]

        # The instance died after its backup began, before recording it with the run.
        left_starting(sessions, run_id)
        until(lambda: stored_run(sessions, run_id)[0] == "started", timeout=10)
        relinked = stored_run(sessions, run_id)
        time.sleep(4 * float(TICK))  # a few more looks by the scheduler

        assert (status, backup_id) == ("started", listed["id"])
        assert holder != "dead"  # the server took it over
        assert listed["started_by"] == "schedule soon"
        assert relinked == ("started", backup_id, holder)
        assert backups(server, guest.uuid) == [("succeeded", "schedule soon")]
